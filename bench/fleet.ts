/**
 * Fleet: many worker connections in one process against one embedded master;
 * the master is stopped for 10 s and restarted. How long until every worker
 * has fetched a task, and how the reconnection attempts spread over time (the
 * thundering herd that jitter must break up).
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
import * as Duration from "effect/Duration"
import * as Connection from "../src/Connection.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Retry from "../src/Retry.js"
import * as Master from "../src/testing/Master.js"
import type { Bench, Table, Target } from "./Bench.js"
import { countingDialer } from "./contenders/Library.js"
import { lines, percentile } from "./plot.js"

interface Round {
  readonly workers: number
  readonly outage: number
  /** Per worker: ms from the restart to its first task. */
  readonly recovered: ReadonlyArray<number>
  /** Dials per 100 ms bucket, from the stop to the last recovery. */
  readonly buckets: ReadonlyArray<number>
  /** The bucket of the restart. */
  readonly restartBucket: number
  /** Over the buckets from the restart on: what the master sees (a stopped master sees no attempt). */
  readonly peak: number
  readonly mean: number
}


class FleetWorker extends Connection.Tag("bench/FleetWorker", TaskSource.services)<FleetWorker>() {}

const round = (workers: number, outageMs: number) =>
  Effect.gen(function*() {
    const master = yield* Master.make()
    const dials: Array<number> = []
    // Every dial stamped: the connection attempts of the whole fleet.
    const dialer = countingDialer(() => void dials.push(performance.now()))
    const scopes: Array<Scope.CloseableScope> = []
    const connections: Array<Connection.Connection<typeof TaskSource.services>> = []
    for (let n = 0; n < workers; n++) {
      const scope = yield* Scope.make()
      scopes.push(scope)
      const context = yield* Layer.buildWithScope(
        FleetWorker.layer({ address: master.address }).pipe(Layer.provide(dialer)),
        scope
      )
      connections.push(yield* Effect.provide(FleetWorker, context))
    }
    yield* Effect.forEach(connections, (conn) => conn.readiness.await, { concurrency: 50, discard: true })
    for (let n = 0; n < workers; n++) yield* master.enqueue({ payload: "{}", node: `w${n}` })

    const stoppedAt = performance.now()
    yield* master.stop
    // Each worker: wait for a new generation, then fetch its own task once.
    const fetching = yield* Effect.forEach(connections, (conn, n) =>
      conn.changes.pipe(
        Stream.filter((state) => state._tag === "Ready" && state.generation >= 2),
        Stream.runHead,
        Effect.zipRight(
          conn.call("task", "FetchTask", { node_key: `w${n}`, fetch_id: `w${n}-f` }, { idempotent: true }).pipe(
            Effect.repeat({ until: (reply) => reply.task !== null })
          )
        ),
        Effect.zipRight(Effect.sync(() => performance.now())),
        Effect.fork
      ))
    yield* Effect.sleep(outageMs)
    const restartedAt = performance.now()
    yield* master.restart
    // Bounded: a worker that does not recover in 90 s is reported as not recovered.
    yield* Fiber.joinAll(fetching).pipe(Effect.ignore, Effect.timeoutOption("90 seconds"))
    const recovered = yield* Effect.forEach(fetching, (fiber) =>
      Effect.map(Fiber.poll(fiber), (exit) =>
        Option.isSome(exit) && Exit.isSuccess(exit.value) ? exit.value.value - restartedAt : Number.POSITIVE_INFINITY))
    yield* Effect.forEach(scopes, (scope) => Scope.close(scope, Exit.void), { concurrency: 50, discard: true })

    const end = Math.max(...recovered.filter(Number.isFinite)) + restartedAt
    const buckets: Array<number> = []
    for (const at of dials) {
      if (at < stoppedAt || at > end) continue
      const bucket = Math.floor((at - stoppedAt) / 100)
      buckets[bucket] = (buckets[bucket] ?? 0) + 1
    }
    const filled = Array.from(buckets, (n) => n ?? 0)
    const restartBucket = Math.floor((restartedAt - stoppedAt) / 100)
    const seen = filled.slice(restartBucket)
    const peak = Math.max(0, ...seen)
    const mean = seen.reduce((a, b) => a + b, 0) / Math.max(1, seen.length)
    return { workers, outage: outageMs, recovered, buckets: filled, restartBucket, peak, mean } satisfies Round
  }).pipe(Effect.scoped)

export const fleet: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const sizes = quick ? [50] : [200, 1_000]
    const outage = quick ? 3_000 : 10_000
    const rounds: Array<Round> = []
    for (const workers of sizes) rounds.push(yield* round(workers, outage))
    // The short cap with its jitter, plus 2 s.
    const capPlus = Duration.toMillis(Retry.reconnectDefaults.shortCap) * Retry.reconnectDefaults.jitter.max + 2_000
    const s = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "not recovered")
    const targets: Array<Target> = rounds.flatMap((r) => [
      {
        name: `${r.workers} workers: all recovered`,
        target: `within the backoff cap + 2 s (${s(capPlus)})`,
        measured: s(Math.max(...r.recovered)),
        met: Math.max(...r.recovered) <= capPlus
      },
      {
        name: `${r.workers} workers: peak attempts per 100 ms`,
        target: "at most 3 x the mean",
        measured: `${r.peak} (mean ${r.mean.toFixed(1)}, ${(r.peak / r.mean).toFixed(1)} x)`,
        met: r.peak <= 3 * r.mean
      }
    ])
    const table: Table = {
      title: `Recovery after a ${outage / 1000} s master stop`,
      columns: ["workers", "p50 to first task", "p95", "max", "attempts (stop to last recovery)", "peak / 100 ms after the restart", "mean / 100 ms after the restart"],
      rows: rounds.map((r) => [
        r.workers,
        s(percentile(r.recovered, 50)),
        s(percentile(r.recovered, 95)),
        s(Math.max(...r.recovered)),
        r.buckets.reduce((a, b) => a + b, 0),
        r.peak,
        r.mean.toFixed(1)
      ])
    }
    return {
      name: "fleet",
      title: "Fleet: many workers, one master stopped and restarted",
      method: `${sizes.join(" and ")} worker connections (this library's Connection, defaults) in one process against one ` +
        `embedded master; the master is stopped for ${outage / 1000} s and restarted on the same port. Each worker then ` +
        "fetches its own task (one FetchTask, idempotent). Connection attempts are the fleet's dials per 100 ms; the " +
        "peak and mean are taken from the restart to the last recovery, the attempts the master sees (a stopped master " +
        "refuses connections in the kernel and sees none).",
      tables: [table],
      targets,
      svg: lines({
        title: "Fleet: connection attempts per 100 ms around a master restart",
        subtitle: `master stopped at 0 s, restarted at ${outage / 1000} s`,
        xUnit: "seconds since the stop",
        yUnit: "attempts per 100 ms",
        series: rounds.map((r) => ({ name: `${r.workers} workers`, points: r.buckets.map((n, i) => [i / 10, n] as const) }))
      }),
      data: rounds
    }
  }).pipe(Logger.withMinimumLogLevel(LogLevel.None))
