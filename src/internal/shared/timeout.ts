/**
 * A timeout that arms its timer only for an effect that has not finished at
 * once.
 *
 * @internal
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"

// The scheduler turns `self` is given to finish without waiting: one, one more for each timeout of this kind inside
// it (each runs its effect on a fiber of its own: a readiness round's probe inside the readiness bound takes two),
// and two to spare for a probe of a user's own that forks.
const turns = 4

/**
 * `Effect.timeoutOption`, but `self` runs first on a fiber of its own for a
 * few scheduler turns, and the timer is armed only if it is still running
 * then, for the whole `duration` (the turns take no virtual time, and
 * microseconds of real time). A check that answers without waiting (a probe
 * on the simulated network, a first readiness round that passes) leaves no
 * deadline behind on the clock: `TestClock` never removes a sleep, so a
 * deadline nobody waits for any more still costs it a step, and its
 * zero-delay timers, when virtual time passes it.
 */
export const timeoutOption = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  duration: Duration.DurationInput
): Effect.Effect<Option.Option<A>, E, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.fork(restore(self)), (fiber) => {
      const poll = (turn: number): Effect.Effect<Option.Option<A>, E> =>
        Effect.flatMap(Effect.zipRight(Effect.yieldNow(), fiber.poll), (done) =>
          Option.isSome(done)
            ? Effect.asSome(Fiber.join(fiber))
            : turn < turns
            ? poll(turn + 1)
            : Effect.timeoutOption(Fiber.join(fiber), duration))
      return restore(poll(1)).pipe(Effect.onExit(() => Fiber.interrupt(fiber)))
    })
  )
