/**
 * The node's membership with its master: on every connection generation the
 * node registers and listens to the master's requests (again after a failure,
 * while the generation lasts), and it sends heartbeats once it is registered
 * for the current generation.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Connection from "../Connection.js"
import * as Retry from "../Retry.js"
import type * as TaskSource from "../TaskSource.js"
import { errorMessage } from "./format.js"
import { forkLoop } from "./loop.js"

export interface Options {
  readonly connection: Connection.Connection
  readonly source: TaskSource.TaskSource
  readonly heartbeatInterval: Duration.Duration
  /** How many tasks run now: each heartbeat tells the master. */
  readonly running: Effect.Effect<number>
  /** The master asks for a task to be cancelled. */
  readonly cancel: (taskId: string) => Effect.Effect<void>
  /** A heartbeat failed (it is logged here). */
  readonly onHeartbeatFailure: Effect.Effect<void>
}

// Joining again within one generation: soon, then less often.
const rejoin = Retry.backoff({ base: "500 millis", cap: "10 seconds" })

/** Starts the membership's loops in the current scope. */
export const start = (options: Options): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { connection, source } = options
    // The generation the node is registered for: heartbeats wait for it.
    const registered = yield* SubscriptionRef.make<number | undefined>(undefined)

    // Register, then listen to the master, for one generation; a failure ends this join, and it is made again.
    const join = (generation: number) =>
      Stream.fromEffect(
        source.register(generation).pipe(
          Effect.zipRight(SubscriptionRef.set(registered, generation)),
          Effect.zipRight(Effect.logInfo(`node registered for generation ${generation}`))
        )
      ).pipe(
        Stream.flatMap(() => source.subscribe(generation)),
        Stream.catchAll((error) =>
          Stream.execute(Effect.logWarning(`joining generation ${generation} failed: ${errorMessage(error)}`))
        )
      )

    const heartbeat = Effect.gen(function*() {
      const state = yield* connection.state
      if (state._tag !== "Ready" || state.generation !== (yield* SubscriptionRef.get(registered))) return
      yield* source.heartbeat(yield* options.running).pipe(
        Effect.catchAll((error) =>
          Effect.logWarning(`heartbeat failed: ${errorMessage(error)}`).pipe(
            Effect.zipRight(options.onHeartbeatFailure)
          )
        )
      )
    })

    yield* forkLoop(
      "membership",
      connection.eachGeneration(join, rejoin).pipe(Stream.runForEach((request) => options.cancel(request.taskId)))
    )
    yield* forkLoop("heartbeat", Effect.repeat(heartbeat, Schedule.spaced(options.heartbeatInterval)))
  })
