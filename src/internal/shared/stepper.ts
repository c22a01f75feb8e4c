/**
 * A schedule stepped by hand: the next delay is known before it is waited
 * (to publish a `retryAt`, or to arm a timer), unlike `Schedule.driver`,
 * whose `next` sleeps first.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import type * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"

export interface Stepper<In> {
  /** The next delay in milliseconds, or none when the schedule is done. */
  readonly next: (input: In) => Effect.Effect<Option.Option<number>>
  /** Back to the schedule's start. */
  readonly reset: Effect.Effect<void>
}

export const make = <In>(schedule: Schedule.Schedule<unknown, In>): Effect.Effect<Stepper<In>> =>
  Effect.map(Ref.make<unknown>(schedule.initial), (state) => ({
    next: (input) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const [next, , decision] = yield* schedule.step(now, input, yield* Ref.get(state))
        yield* Ref.set(state, next)
        return ScheduleDecision.isDone(decision)
          ? Option.none()
          : Option.some(Math.max(0, ScheduleIntervals.start(decision.intervals) - now))
      }),
    reset: Ref.set(state, schedule.initial)
  }))
