/**
 * Fleet: what a user's master sees when its workers come back. The embedded
 * master runs alone in its own process, pinned to one core (`taskset`, where
 * there is one); the workers (one `Connection` each, the library's defaults)
 * run in other processes, pinned to the other core. The master is stopped for
 * 10 s and restarted; each worker then fetches its own task. Measured on the
 * master's side: its CPU time per worker connection (from the calm start, a
 * few workers at a time), the capacity bound that gives (workers x that
 * cost), the connections it accepts per 100 ms after the restart, and its CPU
 * during the recovery; on the workers' side, the recovery of each and the
 * workers' own CPU. The same rounds run with the previous reconnect schedule,
 * and against a master busy with other work (a share of every 10 ms spent
 * spinning), where connect timeouts must not turn into more load.
 */
import * as Chunk from "effect/Chunk"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { ConnectError } from "../src/ConnectionState.js"
import * as Retry from "../src/Retry.js"
import type { Bench, Table, Target } from "./Bench.js"
import { type Child, pinning, start } from "./child.js"
import { previousReconnect } from "./contenders/previousSchedule.js"
import { lines, percentile } from "./plot.js"

type ScheduleName = "default" | "previous"

interface Plan {
  readonly workers: number
  readonly schedule: ScheduleName
  /** The share of the master's time spent on other work. */
  readonly busy: number
}

interface Round extends Plan {
  readonly outageMs: number
  readonly processes: number
  readonly status: "ran" | "did not fit"
  readonly reason?: string | undefined
  /** The master's CPU per worker connection at the calm start, ms. */
  readonly costMs: number
  /** workers x costMs. */
  readonly capacityMs: number
  /** The workers' processes' CPU per worker at the start, ms. */
  readonly workerCostMs: number
  /** The longest delay the schedule has in effect at the restart, with the most jitter. */
  readonly spreadMs: number
  /** Per worker: ms from the restart to its task; Infinity when not within the bound. */
  readonly recovered: ReadonlyArray<number>
  /** Connections the master accepted per 100 ms, from the restart to the last recovery. */
  readonly accepts: ReadonlyArray<number>
  /** The fleet's own dials per 100 ms over the same window. */
  readonly dials: ReadonlyArray<number>
  readonly peak: number
  readonly mean: number
  /** The master's CPU from the restart to the last recovery, ms. */
  readonly masterCpuMs: number
  /** The workers' CPU over the same window, ms (all their processes). */
  readonly workerCpuMs: number
  readonly windowMs: number
}

const refused = new ConnectError({ reason: "Refused", message: "connection refused" })

/** The longest delay a schedule has in effect `outageMs` into an outage of refused attempts (each taking ~1 ms). */
const spreadOf = (schedule: Schedule.Schedule<unknown, unknown>, outageMs: number) =>
  Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: 2_000 }, () => refused)).pipe(
    Effect.map((delays) => {
      let at = 0
      for (const delay of Chunk.toReadonlyArray(delays).map(Duration.toMillis)) {
        if (at + delay + 1 >= outageMs) return delay
        at += delay + 1
      }
      return 0
    }),
    Effect.withRandom(Random.fixed([0.999999]))
  )

const schedules: Record<ScheduleName, Schedule.Schedule<unknown, unknown>> = {
  default: Retry.reconnect,
  previous: previousReconnect
}

const perWorkerProcess = 2_500
const boundMs = 90_000

const bucket = (stamps: ReadonlyArray<number>, from: number, to: number) => {
  const buckets = Array.from({ length: Math.max(1, Math.ceil((to - from) / 100)) }, () => 0)
  for (const at of stamps) {
    if (at < from || at > to) continue
    const i = Math.min(buckets.length - 1, Math.floor((at - from) / 100))
    buckets[i] = buckets[i]! + 1
  }
  return buckets
}

const round = (plan: Plan, outageMs: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const processes = Math.ceil(plan.workers / perWorkerProcess)
    const body = Effect.gen(function*() {
      const master = yield* start(new URL("./master.ts", import.meta.url), {
        core: 0,
        env: { HEARTBEAT_INTERVAL: "1 hour" }
      })
      const { port } = yield* master.ask<{ port: number }>({ cmd: "port" })
      const nodes = Array.from({ length: plan.workers }, (_, n) => `w${n}`)
      const slices = Array.from({ length: processes }, (_, p) => nodes.filter((_, n) => n % processes === p))
      const children: Array<Child> = []
      for (let p = 0; p < processes; p++) {
        children.push(
          yield* start(new URL("./fleet/workers.ts", import.meta.url), {
            core: pinning.cores > 1 ? 1 : undefined,
            heapMb: 8_192
          })
        )
      }
      const marks = () =>
        Effect.all([
          master.ask<{ at: number; cpuMs: number; accepted: number }>({ cmd: "mark" }),
          Effect.forEach(children, (child) => child.ask<{ cpuMs: number }>({ cmd: "mark" }))
        ])
      // The calm start: a few connections at a time, each Ready, probed and one fetch made.
      const [m0, w0] = yield* marks()
      yield* Effect.forEach(children, (child, p) =>
        child.ask({
          cmd: "start",
          address: `127.0.0.1:${port}`,
          nodes: slices[p],
          schedule: plan.schedule,
          concurrency: 20
        }), { concurrency: "unbounded", discard: true })
      const [m1, w1] = yield* marks()
      const costMs = (m1.cpuMs - m0.cpuMs) / plan.workers
      const workerCostMs = w1.reduce((sum, w, i) => sum + w.cpuMs - w0[i]!.cpuMs, 0) / plan.workers
      yield* master.ask({ cmd: "enqueue", nodes })
      yield* Effect.forEach(children, (child) => child.ask({ cmd: "arm" }), { discard: true })
      yield* master.ask({ cmd: "busy", fraction: plan.busy })
      yield* master.ask({ cmd: "stop" })
      yield* Effect.sleep(outageMs)
      const [restart, wRestart] = yield* marks()
      const { at: restartedAt } = yield* master.ask<{ at: number }>({ cmd: "restart" })
      const collected = yield* Effect.forEach(children, (child) =>
        child.ask<{ recovered: ReadonlyArray<number | null>; dials: ReadonlyArray<number>; cpuMs: number }>({
          cmd: "collect",
          boundMs,
          from: restartedAt
        }), { concurrency: "unbounded" })
      const [after] = yield* marks()
      yield* master.ask({ cmd: "busy", fraction: 0 })
      const recoveredAt = collected.flatMap((c) =>
        c.recovered
      )
      const recovered = recoveredAt.map((at) => (at === null ? Number.POSITIVE_INFINITY : at - restartedAt))
      const finite = recovered.filter(Number.isFinite)
      const lastAt = restartedAt + (finite.length > 0 ? Math.max(...finite) : boundMs)
      const { at: acceptedAt } = yield* master.ask<{ at: ReadonlyArray<number> }>({
        cmd: "accepts",
        from: restartedAt,
        to: lastAt
      })
      const accepts = bucket(acceptedAt, restartedAt, lastAt)
      const dials = bucket(
        collected.flatMap((c) =>
          c.dials
        ),
        restartedAt,
        lastAt
      )
      // The master's CPU over the recovery, scaled to the window when the marks ran past it.
      const marked = after.at - restart.at
      const windowMs = lastAt - restartedAt
      const scale = marked > 0 ? Math.min(1, windowMs / marked) : 1
      yield* Effect.forEach(children, (child) => child.ask({ cmd: "close" }), { discard: true })
      yield* master.ask({ cmd: "close" })
      return {
        ...plan,
        outageMs,
        processes,
        status: "ran",
        costMs,
        capacityMs: plan.workers * costMs,
        workerCostMs,
        spreadMs: yield* spreadOf(schedules[plan.schedule], outageMs),
        recovered,
        accepts,
        dials,
        peak: Math.max(0, ...accepts),
        mean: accepts.reduce((a, b) => a + b, 0) / accepts.length,
        masterCpuMs: (after.cpuMs - restart.cpuMs) * scale,
        workerCpuMs: collected.reduce((sum, c, i) => sum + c.cpuMs - wRestart[i]!.cpuMs, 0) * scale,
        windowMs
      } satisfies Round
    })
    return yield* body.pipe(Scope.extend(scope), Effect.ensuring(Scope.close(scope, Exit.void)))
  })

// FLEET_ROUNDS="1000:default:0,1000:previous:0.75" runs only those rounds (workers:schedule:busy): to look at one.
const chosen = (plans: ReadonlyArray<Plan>): ReadonlyArray<Plan> => {
  const only = process.env["FLEET_ROUNDS"]
  if (only === undefined || only === "") return plans
  return only.split(",").map((spec) => {
    const [workers, schedule, busy] = spec.split(":")
    return {
      workers: Number(workers),
      schedule: schedule === "previous" ? "previous" : "default",
      busy: Number(busy ?? 0)
    }
  })
}

/**
 * The picture: at 1,000 workers (or the largest size both schedules ran at), the connections the master accepts
 * per 100 ms after its restart, the default schedule against the previous one: where the herd lands, and how long it
 * lasts. The table has every size.
 */
export const chart = (
  rounds: ReadonlyArray<Pick<Round, "workers" | "schedule" | "busy" | "accepts">>,
  outageMs: number
): string => {
  const calm = rounds.filter((r) => r.busy === 0)
  const both = calm.filter((r) =>
    r.schedule === "default" && calm.some((o) => o.schedule === "previous" && o.workers === r.workers)
  )
  const workers = both.some((r) => r.workers === 1_000)
    ? 1_000
    : Math.max(0, ...(both.length > 0 ? both : calm).map((r) => r.workers))
  const shown = calm.filter((r) => r.workers === workers)
  return lines({
    title: `Fleet of ${workers.toLocaleString("en-US")}: connections the master accepts per 100 ms after its restart`,
    subtitle: `master stopped for ${outageMs / 1000} s; 0 s is the restart; until the last worker has its task`,
    xUnit: "seconds since the restart",
    yUnit: "connections accepted per 100 ms",
    series: shown.map((r) => ({
      name: `${r.schedule} schedule`,
      points: r.accepts.map((n, i) => [i / 10, n] as const)
    }))
  })
}

const s = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "not recovered")
const label = (r: Plan) =>
  `${r.workers} workers, ${r.schedule} schedule${r.busy > 0 ? `, master ${Math.round(r.busy * 100)} % busy` : ""}`

export const fleet: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const outage = quick ? 3_000 : 10_000
    const plans: ReadonlyArray<Plan> = quick
      ? [
        { workers: 100, schedule: "default", busy: 0 },
        { workers: 100, schedule: "default", busy: 0.75 },
        { workers: 100, schedule: "previous", busy: 0.75 }
      ]
      : [
        { workers: 200, schedule: "default", busy: 0 },
        { workers: 1_000, schedule: "default", busy: 0 },
        { workers: 5_000, schedule: "default", busy: 0 },
        { workers: 200, schedule: "previous", busy: 0 },
        { workers: 1_000, schedule: "previous", busy: 0 },
        { workers: 1_000, schedule: "default", busy: 0.75 },
        { workers: 1_000, schedule: "previous", busy: 0.75 },
        { workers: 1_000, schedule: "default", busy: 0.9 },
        { workers: 1_000, schedule: "previous", busy: 0.9 }
      ]
    const rounds: Array<Round> = []
    for (const plan of chosen(plans)) {
      const began = performance.now()
      const result = yield* Effect.either(round(plan, outage))
      if (result._tag === "Left") {
        yield* Console.log(`  fleet ${label(plan)}: did not fit (${String(result.left).slice(0, 200)})`)
        rounds.push({
          ...plan,
          outageMs: outage,
          processes: Math.ceil(plan.workers / perWorkerProcess),
          status: "did not fit",
          reason: String(result.left).slice(0, 300),
          costMs: Number.NaN,
          capacityMs: Number.NaN,
          workerCostMs: Number.NaN,
          spreadMs: Number.NaN,
          recovered: [],
          accepts: [],
          dials: [],
          peak: Number.NaN,
          mean: Number.NaN,
          masterCpuMs: Number.NaN,
          workerCpuMs: Number.NaN,
          windowMs: Number.NaN
        })
        continue
      }
      const r = result.right
      yield* Console.log(
        `  fleet ${label(r)}: ${r.recovered.filter(Number.isFinite).length}/${r.workers} recovered, p50 ${
          s(percentile(r.recovered, 50))
        }, max ${s(Math.max(...r.recovered))}, capacity ${s(r.capacityMs)} (${
          r.costMs.toFixed(2)
        } ms/connection), spread ${s(r.spreadMs)}, peak ${r.peak} / mean ${r.mean.toFixed(1)}, ${
          ((performance.now() - began) / 1000).toFixed(0)
        } s`
      )
      rounds.push(r)
    }
    const ran = rounds.filter((r) => r.status === "ran")
    const unloaded = ran.filter((r) => r.busy === 0 && r.schedule === "default")
    const targets: Array<Target> = unloaded.flatMap((r) => {
      const max = Math.max(...r.recovered)
      const limit = 1.25 * Math.max(r.capacityMs, r.spreadMs)
      return [
        {
          name: `${r.workers} workers: max recovery after a ${outage / 1000} s master stop`,
          target: `at most 1.25 x max(capacity ${s(r.capacityMs)}, spread ${s(r.spreadMs)}) = ${s(limit)}`,
          measured: s(max),
          met: max <= limit
        },
        {
          name: `${r.workers} workers: peak connections the master accepts per 100 ms`,
          target: "at most 3 x the mean",
          measured: `${r.peak} (mean ${r.mean.toFixed(1)}, ${(r.peak / r.mean).toFixed(1)} x)`,
          met: r.peak <= 3 * r.mean
        }
      ]
    })
    for (const r of rounds.filter((r) => r.status !== "ran" && r.busy === 0 && r.schedule === "default")) {
      targets.push({
        name: `${r.workers} workers`,
        target: "runs on this machine",
        measured: "did not fit",
        met: false
      })
    }
    const perWorker = (r: Round) => r.accepts.reduce((a, b) => a + b, 0) / r.workers
    for (const busy of [...new Set(ran.filter((r) => r.busy > 0).map((r) => r.busy))]) {
      const ours = ran.find((r) => r.busy === busy && r.schedule === "default")
      const before = ran.find((r) => r.busy === busy && r.schedule === "previous")
      if (ours === undefined || before === undefined) continue
      targets.push({
        name: `${ours.workers} workers, master ${
          Math.round(busy * 100)
        } % busy: connections it accepts per worker until all recovered`,
        target: "no more than with the previous schedule",
        measured: `${perWorker(ours).toFixed(2)} (previous ${perWorker(before).toFixed(2)})`,
        met: perWorker(ours) <= perWorker(before)
      })
    }

    const table: Table = {
      title: `Recovery after a ${outage / 1000} s master stop, and what the master saw`,
      columns: [
        "workers",
        "schedule",
        "master busy",
        `recovered in ${boundMs / 1000} s`,
        "p50",
        "max",
        "master CPU per connection",
        "capacity bound",
        "schedule spread",
        "accepted per worker",
        "peak / mean per 100 ms",
        "master CPU in recovery",
        "workers' CPU in recovery"
      ],
      rows: rounds.map((r) =>
        r.status !== "ran"
          ? [r.workers, r.schedule, `${Math.round(r.busy * 100)} %`, "did not fit", "", "", "", "", "", "", "", "", ""]
          : [
            r.workers,
            r.schedule,
            `${Math.round(r.busy * 100)} %`,
            `${r.recovered.filter(Number.isFinite).length} of ${r.workers}`,
            s(percentile(r.recovered, 50)),
            s(Math.max(...r.recovered)),
            `${r.costMs.toFixed(2)} ms`,
            s(r.capacityMs),
            s(r.spreadMs),
            perWorker(r).toFixed(2),
            `${r.peak} / ${r.mean.toFixed(1)}`,
            `${(r.masterCpuMs / 1000).toFixed(2)} s (${Math.round((r.masterCpuMs / r.windowMs) * 100)} %)`,
            `${(r.workerCpuMs / 1000).toFixed(2)} s (${Math.round((r.workerCpuMs / r.windowMs) * 100)} %)`
          ]
      )
    }
    const notes: Array<string> = []
    for (const r of ran) {
      const busy = r.workerCpuMs / r.windowMs
      const missing = r.workers - r.recovered.filter(Number.isFinite).length
      if (busy >= 0.6 || missing > 0) {
        notes.push(
          `${label(r)}: the workers' processes spent ${(r.workerCpuMs / 1000).toFixed(1)} s of CPU on the recovery (${
            (r.workerCpuMs / r.workers).toFixed(1)
          } ms per worker, the master ${(r.masterCpuMs / r.workers).toFixed(1)} ms), ${
            Math.round(busy * 100)
          } % of their one core${
            missing > 0 ? `; ${missing} workers had not recovered after ${s(boundMs)}` : ""
          }: on this machine the workers' side, not the master, bounds the recovery.`
        )
      }
    }
    for (const r of rounds.filter((r) => r.status !== "ran")) notes.push(`${label(r)}: did not fit: ${r.reason}`)
    notes.push(
      pinning.available
        ? "The master was pinned to core 0 and the workers' processes to core 1 with taskset."
        : `Not pinned: ${pinning.cores < 2 ? "one core" : "no taskset"} here; master and workers share the cores.`
    )
    return {
      name: "fleet",
      title: "Fleet: a master stopped and restarted, as its own process sees it",
      method:
        `The embedded master in its own process${pinning.available ? " pinned to one core" : ""}, the workers (one ` +
        `Connection each, the library's defaults, or the previous reconnect schedule) in ${
          pinning.available ? "other processes pinned to the other core" : "other processes"
        }, up to ${perWorkerProcess} per process. They start ${20} at a time per process (Ready, probed, one FetchTask): ` +
        "the master's CPU over that calm start, per worker, is its cost per worker connection, and the capacity bound " +
        "is the workers times that cost. The master is then stopped for " +
        `${
          outage / 1000
        } s and restarted on the same port; each worker, at its next generation, fetches its own task. ` +
        "Recovery is the restart to that task. The master counts the connections its own HTTP/2 server accepts; " +
        "peak and mean are per 100 ms from the restart to the last recovery. The schedule's spread is the longest delay " +
        "it has in effect at the restart. A busy master spends that share of every 10 ms spinning on its thread.",
      tables: [table],
      targets,
      svg: chart(ran, outage),
      data: {
        outageMs: outage,
        pinned: pinning.available,
        rounds: rounds.map(({ recovered, ...r }) => ({
          ...r,
          recovered: recovered.map((ms) => (Number.isFinite(ms) ? Math.round(ms) : null))
        }))
      },
      notes
    }
  })
