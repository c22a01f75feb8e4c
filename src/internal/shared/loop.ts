import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { errorMessage } from "./format.js"

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

/**
 * A call into the app's own code (a task source of its own) that dies has failed: the defect is logged whole at
 * Error, its stack with it, and the call fails with `failure("<what> died: ...")`, so the loop that made it goes on.
 */
export const failOnDefect =
  <F>(what: string, failure: (message: string) => F) =>
  <A, E, R>(call: Effect.Effect<A, E, R>): Effect.Effect<A, E | F, R> =>
    Effect.catchAllDefect(call, (defect) =>
      Effect.zipRight(
        Effect.logError(`${what} died`, Cause.die(defect)),
        Effect.fail(failure(`${what} died: ${errorMessage(defect)}`))
      ))
