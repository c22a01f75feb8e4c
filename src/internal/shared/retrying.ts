/**
 * Retries an effect on a schedule while its failure is one to retry, with a
 * step of the caller's before each retry (its log line, its state change):
 * the shape the connection's attempts and `Retry.transient` share. Nothing
 * runs after the last failure: no retry follows it, and the caller says what
 * happens instead.
 *
 * @internal
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { pipe } from "effect/Function"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"

export const retrying = <E, Out, R2, R3>(options: {
  readonly schedule: Schedule.Schedule<Out, E, R2>
  readonly while: (error: E) => boolean
  /** Before each retry: the failure and the delay until the retry. */
  readonly onRetry: (error: E, delay: Duration.Duration) => Effect.Effect<void, never, R3>
}) =>
<A, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | R2 | R3> =>
  Effect.retry(
    self,
    pipe(
      Schedule.intersect(Schedule.delays(options.schedule), Schedule.identity<E>()),
      Schedule.whileInput(options.while),
      Schedule.onDecision(([delay, error], decision) =>
        ScheduleDecision.isDone(decision) ? Effect.void : options.onRetry(error, delay)
      )
    )
  )
