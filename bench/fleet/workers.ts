/**
 * A process of the fleet benchmark's workers: one `Connection` per worker
 * (the library's defaults, or the previous reconnect schedule), each on its
 * own channel to the master. Every dial is stamped. Armed, each worker waits
 * for a new generation after the master's restart and fetches its own task
 * once; the moment it has it is its recovery.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Connection from "../../src/Connection.js"
import * as TaskSource from "../../src/TaskSource.js"
import { cpuMs, now, serve } from "../child.js"
import { countingDialer } from "../contenders/Library.js"
import { previousReconnect } from "../contenders/previousSchedule.js"

class FleetWorker extends Connection.Tag("bench/FleetWorker", TaskSource.services)<FleetWorker>() {}

const dials: Array<number> = []
const dialer = countingDialer(() => void dials.push(now()))
const workers: Array<
  {
    readonly node: string
    readonly scope: Scope.CloseableScope
    readonly conn: Connection.Connection<typeof TaskSource.services>
  }
> = []
let fetching: ReadonlyArray<Fiber.RuntimeFiber<number, unknown>> = []

const quiet = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

// One worker: its connection Ready, its readiness passed, and one fetch made, as after a recovery.
const startOne = (address: string, node: string, previous: boolean) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      FleetWorker.layer({ address, ...(previous ? { reconnectSchedule: previousReconnect } : {}) }).pipe(
        Layer.provide(dialer)
      ),
      scope
    )
    const conn = yield* Effect.provide(FleetWorker, context)
    yield* conn.readiness.await
    // Registered once: the master fetches only for nodes it knows, and its restart here keeps its memory.
    yield* conn.call("node", "Register", { node_key: node, name: node, max_runners: 1, generation: 1 }, {
      idempotent: true
    })
    yield* conn.call("task", "FetchTask", { node_key: node, fetch_id: `${node}-warm` }, { idempotent: true })
    workers.push({ node, scope, conn })
  })

serve(async (request) => {
  switch (request["cmd"]) {
    case "start": {
      const nodes = request["nodes"] as ReadonlyArray<string>
      const previous = request["schedule"] === "previous"
      // A few at a time: the start is not the benchmark, and a herd at start would be measured as the cost.
      await quiet(Effect.forEach(nodes, (node) => startOne(request["address"] as string, node, previous), {
        concurrency: request["concurrency"] as number,
        discard: true
      }))
      return { workers: workers.length, heapMb: process.memoryUsage().heapUsed / 1024 / 1024 }
    }
    case "arm": {
      fetching = await quiet(Effect.forEach(workers, ({ conn, node }) =>
        conn.changes.pipe(
          Stream.filter((state) => state._tag === "Ready" && state.generation >= 2),
          Stream.runHead,
          Effect.zipRight(
            conn.call("task", "FetchTask", { node_key: node, fetch_id: `${node}-after` }, { idempotent: true }).pipe(
              Effect.repeat({ until: (reply) => reply.task !== null })
            )
          ),
          Effect.map(() => now()),
          Effect.forkDaemon
        )))
      return {}
    }
    case "collect": {
      const bound = request["boundMs"] as number
      await quiet(Fiber.joinAll(fetching).pipe(Effect.ignore, Effect.timeoutOption(bound)))
      const recovered = await quiet(
        Effect.forEach(fetching, (fiber) =>
          Effect.map(
            Fiber.poll(fiber),
            (exit) => (Option.isSome(exit) && Exit.isSuccess(exit.value) ? exit.value.value : null)
          ))
      )
      const from = request["from"] as number
      return { recovered, dials: dials.filter((at) => at >= from), cpuMs: cpuMs() }
    }
    case "mark":
      return { at: now(), cpuMs: cpuMs() }
    case "close": {
      await quiet(Effect.forEach(fetching, Fiber.interrupt, { discard: true }))
      await quiet(
        Effect.forEach(workers, ({ scope }) => Scope.close(scope, Exit.void), { concurrency: 100, discard: true })
      )
      return {}
    }
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
