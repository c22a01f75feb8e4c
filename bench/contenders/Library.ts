/**
 * Contender (a): this library with its defaults, assembled as examples/demo.ts
 * does: TaskHandler over TaskSource over Connection over grpc-js channels, with
 * an in-memory outbox. Only the address and the node key are given; every
 * timing is the library's default. The dialer is wrapped to count channels,
 * which changes nothing else.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { Connection, ConnectionState, GrpcChannel, Outbox, TaskHandler, TaskSource } from "../../src/index.js"
import type { Contender } from "./Contender.js"
import { previousReconnect } from "./previousSchedule.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("bench/MasterLink", TaskSource.services)<MasterLink>() {}

/**
 * `GrpcChannel.layer` with a hook called on every dial: how the benchmarks
 * count a worker's connection attempts. It changes nothing else.
 */
export const countingDialer = (onDial: () => void) =>
  Layer.effect(
    GrpcChannel.Dialer,
    Effect.map(GrpcChannel.Dialer, (inner) => ({
      dial: (options: GrpcChannel.DialOptions) => Effect.zipRight(Effect.sync(onDial), inner.dial(options))
    }))
  ).pipe(Layer.provide(GrpcChannel.layer))

/** This library with its defaults, or with another reconnect schedule (the previous one, for the cost beside it). */
export const makeLibrary = (options: {
  readonly key: string
  readonly name: string
  readonly reconnectSchedule?: Schedule.Schedule<unknown, ConnectionState.ConnectError> | undefined
  readonly master?: Contender["master"]
}): Contender => ({
  key: options.key,
  name: options.name,
  master: options.master,
  start: ({ address, nodeKey, started }) =>
    Effect.gen(function*() {
      let dials = 0

      const worker = TaskHandler.layer({
        connection: MasterLink,
        payload: Schema.Unknown,
        // The moment the handler starts the task is the benchmark's mark.
        run: (task) => Effect.sync(() => started(task.id))
      }).pipe(
        Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey })),
        Layer.provideMerge(MasterLink.layer({
          address,
          ...(options.reconnectSchedule === undefined ? {} : { reconnectSchedule: options.reconnectSchedule })
        })),
        Layer.provide(countingDialer(() => dials++)),
        Layer.provide(Outbox.layerMemory)
      )
      const context = yield* Layer.build(worker)
      const conn = Context.get(context, MasterLink)
      const handler = Context.get(context, TaskHandler.TaskHandler)

      return {
        describe: Effect.map(conn.state, (state) => {
          switch (state._tag) {
            case "Ready":
              return `Ready (generation ${state.generation})`
            case "Reconnecting":
              return `Reconnecting, attempt ${state.attempt}: ${state.lastError.message}`
            case "Connecting":
              return `Connecting, attempt ${state.attempt}`
            case "Rejected":
              return `Rejected: ${state.lastError.message}`
            default:
              return state._tag
          }
        }),
        stats: Effect.map(handler.status, (status) => ({
          channelsDialed: dials,
          fetched: status.fetched,
          fetchFailures: status.fetchFailures,
          heartbeatFailures: status.heartbeatFailures
        }))
      }
    })
})

export const library: Contender = makeLibrary({ key: "library", name: "effect-grpc-resilience" })

/**
 * The library against a master that writes its `Subscribe` keepalive every 4 s, not 2: what a dead link's
 * detection costs when the master's keepalive costs it half as much (9 s of silence, not 5, before the probe).
 */
export const libraryKeepalive4s: Contender = makeLibrary({
  key: "library-keepalive-4s",
  name: "effect-grpc-resilience, master keepalive every 4 s",
  master: { subscribeKeepalive: "4 seconds" }
})

/** The library with the reconnect schedule it had before it read what a failure cost. */
export const libraryPrevious: Contender = makeLibrary({
  key: "library-previous",
  name: "effect-grpc-resilience, previous schedule",
  reconnectSchedule: previousReconnect
})
