/**
 * Dispatch and idle cost: how fast a task queued for an idle worker runs, and
 * what an idle worker costs its master. The embedded master runs alone in its
 * own process, pinned to one core, and counts every call it receives; the
 * workers (whole workers: connection, task source, task handler) run in
 * another process on the other core. Contenders, side by side in one run: the
 * waiting fetch (the library's default, the master holds a fetch until a task
 * is queued), the same with the master's `Subscribe` keepalive every 4 s and
 * without it, and a fetch every second (`fetchWait: 0`, as 0.2 fetched).
 *
 * - Dispatch: one idle worker; tasks queued for it one at a time at random
 *   moments; PENDING to RUNNING on the master's clock.
 * - Idle calls: the same worker, idle, every call the master receives, per
 *   minute, by method (heartbeats and health probes included).
 * - Idle fleet: many idle workers; the master's CPU time over a window.
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import type { Bench, Table, Target } from "./Bench.js"
import { pinning, start } from "./child.js"
import { bars, percentile } from "./plot.js"

type Contender =
  | "waiting fetch"
  | "waiting fetch, keepalive every 4 s"
  | "waiting fetch, no stream keepalive"
  | "fetch every 1 s (0.2)"
// Each: the worker's fetchWait, the master's Subscribe keepalive (undefined: its default, 2 s), and the idle fleet's
// size. Whole workers fetching every second cost their own process about 2 ms of CPU a fetch: on one core, 1,000 of
// them made some 460 fetches a second, not 1,000, and the master measured beside them was given half the load of
// 0.2's 1,000 idle workers. That fleet is 250 workers, which keep their pace (its calls a second are in the table);
// every fleet's master CPU is also given for 1,000 workers (what the master costs with no worker, measured before any
// connects, and the fleet's part scaled), which the target compares. The keepalive every 4 s is what the master's
// `subscribeKeepalive` trades: half the writes, and a dead link noticed after 9 s of silence instead of 5.
const contenders: ReadonlyArray<readonly [Contender, string, string | undefined, number]> = [
  ["waiting fetch", "25 seconds", undefined, 1_000],
  ["waiting fetch, keepalive every 4 s", "25 seconds", "4 seconds", 1_000],
  ["waiting fetch, no stream keepalive", "25 seconds", "0 millis", 1_000],
  ["fetch every 1 s (0.2)", "0 millis", "0 millis", 250]
]

interface Mark {
  readonly at: number
  readonly cpuMs: number
  readonly calls: Record<string, number>
}

interface Measured {
  readonly contender: Contender
  /** PENDING to RUNNING, ms, one per task. */
  readonly dispatchMs: ReadonlyArray<number>
  /** Calls a minute at the master from one idle worker, by method. */
  readonly idleCallsPerMinute: Record<string, number>
  readonly fleet: {
    readonly workers: number
    readonly masterCpuMsPerSecond: number
    readonly callsPerSecond: number
    /** The master's CPU (ms per s) for 1,000 workers of this fleet: its cost alone, and the fleet's part scaled. */
    readonly perThousand: number
  }
}

const perMinute = (before: Mark, after: Mark) => {
  const minutes = (after.at - before.at) / 60_000
  const out: Record<string, number> = {}
  for (const [method, n] of Object.entries(after.calls)) out[method] = (n - (before.calls[method] ?? 0)) / minutes
  return out
}
const total = (calls: Record<string, number>) => Object.values(calls).reduce((a, b) => a + b, 0)

const workersCore = pinning.cores > 1 ? 1 : undefined

const measure = (
  contender: Contender,
  fetchWait: string,
  keepalive: string | undefined,
  fleetSize: number,
  quick: boolean
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    return yield* Effect.gen(function*() {
      // One idle worker: dispatch latency, then its calls while idle.
      const master = yield* start(new URL("./master.ts", import.meta.url), {
        core: 0,
        ...(keepalive === undefined ? {} : { env: { SUBSCRIBE_KEEPALIVE: keepalive } })
      })
      const { port } = yield* master.ask<{ port: number }>({ cmd: "port" })
      // The master alone, before any worker: what it costs with none, the part of a fleet's cost that does not grow.
      yield* Effect.sleep("2 seconds")
      const b0 = yield* master.ask<Mark>({ cmd: "mark" })
      yield* Effect.sleep(quick ? 3_000 : 10_000)
      const b1 = yield* master.ask<Mark>({ cmd: "mark" })
      const alone = (b1.cpuMs - b0.cpuMs) / ((b1.at - b0.at) / 1000)
      const address = `127.0.0.1:${port}`
      const worker = yield* start(new URL("./dispatch/workers.ts", import.meta.url), { core: workersCore })
      yield* worker.ask({ cmd: "start", address, nodes: ["d1"], fetchWait })
      yield* Effect.sleep("2 seconds")
      const tasks = quick ? 8 : 40
      for (let i = 0; i < tasks; i++) {
        // A random moment: not in step with any tick of the worker's.
        yield* Effect.sleep(200 + Math.floor((yield* Random.next) * 1_300))
        yield* master.ask({ cmd: "enqueue", node: "d1" })
      }
      yield* Effect.sleep("1500 millis")
      const { tasks: done } = yield* master.ask<
        { tasks: ReadonlyArray<{ status: string; pending: number; running: number | undefined }> }
      >({ cmd: "tasks" })
      const dispatchMs = done.map((t) => (t.running === undefined ? Number.POSITIVE_INFINITY : t.running - t.pending))
      const idleFor = quick ? 10_000 : 60_000
      const before = yield* master.ask<Mark>({ cmd: "mark" })
      yield* Effect.sleep(idleFor)
      const after = yield* master.ask<Mark>({ cmd: "mark" })
      yield* worker.ask({ cmd: "close" })

      // An idle fleet: the master's CPU while nothing happens.
      const workers = quick ? 50 : fleetSize
      const fleet = yield* start(new URL("./dispatch/workers.ts", import.meta.url), {
        core: workersCore,
        heapMb: 8_192
      })
      yield* fleet.ask({ cmd: "start", address, nodes: Array.from({ length: workers }, (_, n) => `f${n}`), fetchWait })
      // Settled: every worker's first fetch answered and its waiting one held.
      yield* Effect.sleep("5 seconds")
      const f0 = yield* master.ask<Mark>({ cmd: "mark" })
      yield* Effect.sleep(quick ? 5_000 : 30_000)
      const f1 = yield* master.ask<Mark>({ cmd: "mark" })
      yield* fleet.ask({ cmd: "close" })
      yield* master.ask({ cmd: "close" })
      const seconds = (f1.at - f0.at) / 1000
      const masterCpuMsPerSecond = (f1.cpuMs - f0.cpuMs) / seconds
      return {
        contender,
        dispatchMs,
        idleCallsPerMinute: perMinute(before, after),
        fleet: {
          workers,
          masterCpuMsPerSecond,
          callsPerSecond: (total(f1.calls) - total(f0.calls)) / seconds,
          perThousand: alone + (masterCpuMsPerSecond - alone) * 1_000 / workers
        }
      } satisfies Measured
    }).pipe(Effect.provideService(Scope.Scope, scope), Effect.ensuring(Scope.close(scope, Exit.void)))
  })

const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(0)} ms` : "never")

export const dispatch: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const results: Array<Measured> = []
    for (const [contender, fetchWait, keepalive, fleetSize] of contenders) {
      yield* Console.log(`  dispatch: ${contender}`)
      results.push(yield* measure(contender, fetchWait, keepalive, fleetSize, quick))
    }
    const waiting = results.find((m) => m.contender === "waiting fetch")!
    const ticking = results.find((m) => m.contender === "fetch every 1 s (0.2)")!
    const p = (m: Measured, q: number) => percentile(m.dispatchMs, q)
    const dispatchTable: Table = {
      title: "A task queued for an idle worker: PENDING to RUNNING (the master's clock)",
      columns: ["contender", "tasks", "p50", "p99", "max"],
      rows: results.map((m) => [m.contender, m.dispatchMs.length, ms(p(m, 50)), ms(p(m, 99)), ms(p(m, 100))])
    }
    const methods = Array.from(new Set(results.flatMap((m) => Object.keys(m.idleCallsPerMinute)))).sort()
    const idleTable: Table = {
      title: "One idle worker: calls a minute at the master",
      columns: ["contender", "all", ...methods],
      rows: results.map((m) => [
        m.contender,
        total(m.idleCallsPerMinute).toFixed(1),
        ...methods.map((method) => (m.idleCallsPerMinute[method] ?? 0).toFixed(1))
      ])
    }
    const fleetTable: Table = {
      title: "An idle fleet: the master's process",
      columns: [
        "contender",
        "workers",
        "calls per s",
        "master CPU (ms per s)",
        "master CPU per 1,000 workers (ms per s)",
        "against a fetch every 1 s"
      ],
      rows: results.map((m) => [
        m.contender,
        m.fleet.workers,
        m.fleet.callsPerSecond.toFixed(1),
        m.fleet.masterCpuMsPerSecond.toFixed(1),
        m.fleet.perThousand.toFixed(1),
        `${(m.fleet.perThousand / ticking.fleet.perThousand * 100).toFixed(1)} %`
      ])
    }
    const idleCalls = total(waiting.idleCallsPerMinute)
    const cpuRatio = waiting.fleet.perThousand / ticking.fleet.perThousand
    const targets: ReadonlyArray<Target> = [
      { name: "dispatch p50", target: "<= 20 ms", measured: ms(p(waiting, 50)), met: p(waiting, 50) <= 20 },
      { name: "dispatch p99", target: "<= 100 ms", measured: ms(p(waiting, 99)), met: p(waiting, 99) <= 100 },
      {
        name: "idle worker's calls at the master",
        target: "<= 6 a minute",
        measured: `${idleCalls.toFixed(1)} a minute`,
        met: idleCalls <= 6
      },
      {
        name: `master CPU, ${waiting.fleet.workers} idle workers`,
        target: "<= 1/10 of fetching every second",
        measured: `${(cpuRatio * 100).toFixed(1)} % (${waiting.fleet.perThousand.toFixed(1)} against ${
          ticking.fleet.perThousand.toFixed(1)
        } ms/s per 1,000 workers)`,
        met: cpuRatio <= 0.1
      }
    ]
    return {
      name: "dispatch",
      title: "Dispatch and idle cost",
      method: `The embedded master alone in its own process (pinned to a core), whole workers in another. ${
        quick ? 8 : 40
      } tasks queued for one idle worker at random moments (0.2 to 1.5 s apart); then its calls over ${
        quick ? 10 : 60
      } s idle, counted by the master's HTTP/2 server as each call arrives; then an idle fleet (${waiting.fleet.workers} workers; ${ticking.fleet.workers} fetching every second, as many as one core keeps at that pace) and the master's CPU over ${
        quick ? 5 : 30
      } s, also per 1,000 workers. Contenders: the waiting fetch (default, 25 s wait, the master's Subscribe keepalive every 2 s: a dead link noticed after 5 s of silence), the same with the keepalive every 4 s (noticed after 9 s) and without it (noticed by a call's deadline), and a fetch every second (fetchWait 0, no keepalive, as 0.2).`,
      tables: [dispatchTable, idleTable, fleetTable],
      targets,
      svg: bars({
        title: "Dispatch latency, p50 and p99",
        unit: "ms",
        groups: results.map((m) => ({
          label: m.contender,
          bars: [
            { series: "p50", value: p(m, 50) },
            { series: "p99", value: p(m, 99) }
          ]
        }))
      }),
      data: results
    }
  })
