/**
 * The reconnection schedule this library had before it read what a failure
 * cost (0.1): the same delay after every failure, exponential from 500 ms,
 * x2, capped at 2 s during the first minute of an outage, then on from 4 s to
 * 30 s, jittered by 0.8 to 1.2. The benchmarks run it beside the default, so
 * "no more than today" is measured in the same run.
 */
import * as Duration from "effect/Duration"
import { pipe } from "effect/Function"
import * as Schedule from "effect/Schedule"

const capped = (cap: Duration.DurationInput) => <Out, In, R>(self: Schedule.Schedule<Out, In, R>) =>
  Schedule.modifyDelay(self, (_, delay) => Duration.min(delay, cap))

export const previousReconnect: Schedule.Schedule<Duration.Duration, unknown> = pipe(
  Schedule.exponential("500 millis", 2),
  capped("2 seconds"),
  Schedule.upTo("1 minute"),
  Schedule.andThen(pipe(Schedule.exponential("4 seconds", 2), capped("30 seconds"))),
  Schedule.jitteredWith({ min: 0.8, max: 1.2 }),
  Schedule.modifyDelay((_, delay) => Duration.millis(Math.round(Duration.toMillis(delay))))
)
