/**
 * A process of the dispatch benchmark's workers: each a whole worker as a user
 * writes it (its own `Connection`, `TaskSource` and `TaskHandler`, the memory
 * outbox), running no-op tasks. `fetchWait` chooses the contender: the
 * library's waiting fetch, or 0 (a fetch every `fetchInterval`, as 0.2 did).
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Connection from "../../src/Connection.js"
import * as GrpcChannel from "../../src/GrpcChannel.js"
import * as Outbox from "../../src/Outbox.js"
import * as TaskHandler from "../../src/TaskHandler.js"
import * as TaskSource from "../../src/TaskSource.js"
import { cpuMs, now, serve } from "../child.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("bench/MasterLink", TaskSource.services)<MasterLink>() {}

const scopes: Array<Scope.CloseableScope> = []

const quiet = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

// One worker, started and ready: its connection ready and the node registered.
const startOne = (address: string, node: string, fetchWait: Duration.DurationInput) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const worker = TaskHandler.layer({
      connection: MasterLink,
      payload: Schema.Unknown,
      run: () => Effect.void,
      maxRunners: 1,
      fetchWait
    }).pipe(
      Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey: node, maxRunners: 1 })),
      Layer.provideMerge(MasterLink.layer({ address })),
      Layer.provideMerge(Outbox.layerMemory),
      Layer.provide(GrpcChannel.layer)
    )
    const context = yield* Layer.buildWithScope(worker, scope)
    const conn = yield* Effect.provide(MasterLink, context)
    yield* conn.readiness.await
    scopes.push(scope)
  })

serve(async (request) => {
  switch (request["cmd"]) {
    case "start": {
      const nodes = request["nodes"] as ReadonlyArray<string>
      // A few at a time: the start is not the benchmark.
      await quiet(Effect.forEach(
        nodes,
        (node) => startOne(request["address"] as string, node, request["fetchWait"] as Duration.DurationInput),
        { concurrency: 20, discard: true }
      ))
      return { workers: scopes.length, heapMb: process.memoryUsage().heapUsed / 1024 / 1024 }
    }
    case "mark":
      return { at: now(), cpuMs: cpuMs() }
    case "close":
      await quiet(Effect.forEach(scopes, (scope) => Scope.close(scope, Exit.void), { concurrency: 100, discard: true }))
      scopes.length = 0
      return {}
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
