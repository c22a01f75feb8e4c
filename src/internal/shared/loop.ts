import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"

/** A background loop in the current scope: its failure is logged, never lost, and its log lines name it. */
export const forkLoop = <E, R>(
  name: string,
  effect: Effect.Effect<unknown, E, R>
): Effect.Effect<Fiber.RuntimeFiber<void>, never, R | Scope.Scope> =>
  effect.pipe(
    Effect.catchAllCause((cause) => Effect.logError(`${name} loop failed`, cause)),
    Effect.asVoid,
    Effect.annotateLogs({ fiber: name }),
    Effect.forkScoped,
    Effect.interruptible
  )
