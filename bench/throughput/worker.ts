/**
 * The throughput benchmark's worker: one task handler in its own process,
 * running no-op tasks until the master's queue is done, with the library's
 * defaults or configured as 0.2 worked (see `asBefore`). It logs as a user's
 * worker does, at Info, to a stdout the benchmark discards.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Connection from "../../src/Connection.js"
import * as GrpcChannel from "../../src/GrpcChannel.js"
import * as NodeOutbox from "../../src/node/NodeOutbox.js"
import * as Outbox from "../../src/Outbox.js"
import * as SqliteOutbox from "../../src/sqlite/SqliteOutbox.js"
import * as TaskHandler from "../../src/TaskHandler.js"
import * as TaskSource from "../../src/TaskSource.js"
import { cpuMs, now, serve } from "../child.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("bench/MasterLink", TaskSource.services)<MasterLink>() {}

// 0.2's worker on today's code: one task a fetch, a fetch that does not wait, and one report a call (a source
// without `reportAll`, as a user's own source may be).
const asBefore = (source: TaskSource.TaskSource): TaskSource.TaskSource => ({
  ...source,
  fetch: (request) => source.fetch({ ...request, max: 1 }),
  reportAll: undefined
})

const runOnce = (request: Record<string, unknown>) =>
  Effect.gen(function*() {
    const count = request["count"] as number
    const runners = request["runners"] as number
    const before = request["contender"] === "0.2"
    const directory = mkdtempSync(join(tmpdir(), "bench-throughput-"))
    const scope = yield* Scope.make()
    yield* Scope.addFinalizer(scope, Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
    const source = Layer.effect(
      TaskSource.TaskSource,
      Effect.map(TaskSource.make({ connection: MasterLink, nodeKey: "throughput", maxRunners: runners }), (s) =>
        before ? asBefore(s) : s)
    )
    const startedAt = now()
    const cpuAt = cpuMs()
    // The first task's start: what came before it is the worker's start (loading, connecting, registering).
    let first: { readonly at: number; readonly cpuMs: number } | undefined
    const context = yield* Layer.buildWithScope(
      TaskHandler.layer({
        connection: MasterLink,
        payload: Schema.Unknown,
        run: () =>
          Effect.sync(() => {
            first ??= { at: now(), cpuMs: cpuMs() }
          }),
        maxRunners: runners,
        ...(before ? { fetchWait: 0 } : {})
      }).pipe(
        Layer.provideMerge(source),
        Layer.provideMerge(MasterLink.layer({ address: request["address"] as string })),
        Layer.provide(GrpcChannel.layer),
        Layer.provide(
          request["outbox"] === "memory"
            ? Outbox.layerMemory
            : request["outbox"] === "sqlite"
            ? SqliteOutbox.layer({ filename: join(directory, "outbox.sqlite") })
            : NodeOutbox.layerFileSystem(directory)
        )
      ),
      scope
    )
    const handler = Context.get(context, TaskHandler.TaskHandler)
    // Every task ended, its final report added (a runner is freed after it), and every report delivered. Polled:
    // a subscriber to every change would add its own cost to each task's.
    yield* handler.status.pipe(
      Effect.repeat({
        schedule: Schedule.spaced("10 millis"),
        until: (s) =>
          s.finished >= count && s.running === 0
      })
    )
    yield* handler.outbox.flush
    const ms = now() - startedAt
    const cpu = cpuMs() - cpuAt
    yield* Scope.close(scope, Exit.void)
    return { ms, cpuMs: cpu, startMs: first!.at - startedAt, startCpuMs: first!.cpuMs - cpuAt }
  })

serve(async (request) => {
  switch (request["cmd"]) {
    case "run":
      return await Effect.runPromise(runOnce(request))
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
