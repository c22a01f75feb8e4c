/**
 * What Prometheus' own tooling says of `/metrics`: the text of a real worker,
 * served over HTTP, piped to `promtool check metrics` (Debian's `prometheus`
 * package), which parses it and lints every family's name, type and help.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricKeyType from "effect/MetricKeyType"
import * as MetricRegistry from "effect/MetricRegistry"
import * as Stream from "effect/Stream"
import { spawn, spawnSync } from "node:child_process"
import * as Health from "../src/Health.js"
import * as Prometheus from "../src/internal/health/prometheus.js"
import * as Metrics from "../src/Metrics.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { eventually } from "./fixtures/poll.js"
import { workerWithHealth } from "./fixtures/worker.js"

// Checked up front, so the suite can be skipped with a reason (and, under CI, fail instead).
const unavailable = (() => {
  const version = spawnSync("promtool", ["--version"], { encoding: "utf8" })
  return version.status === 0 ? undefined : `promtool is missing: ${version.error?.message ?? version.stderr}`
})()
const underCi = process.env["CI"] === "true"
if (unavailable !== undefined && !underCi) {
  console.warn(`skipping the promtool tests (install Debian's prometheus): ${unavailable}`)
}
const required = unavailable === undefined
  ? Effect.void
  : Effect.dieMessage(`under CI the promtool tests must run: ${unavailable}`)

// `promtool check metrics` reads the text on stdin; it exits 0 with no output when the text parses and lints clean.
const promtool = (text: string) =>
  Effect.async<{ readonly code: number | null; readonly output: string }, Error>((resume) => {
    const child = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    child.on("error", (error) => resume(Effect.fail(error)))
    child.on("close", (code) => resume(Effect.succeed({ code, output })))
    child.stdin.end(text)
    return Effect.sync(() => child.kill())
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("promtool answered within 10 s") }))

const passes = (text: string) =>
  Effect.gen(function*() {
    const { code, output } = yield* promtool(text)
    assert.strictEqual(output, "", `promtool's complaints about:\n${text}`)
    assert.strictEqual(code, 0)
  })

const scrape = (url: string) =>
  Effect.tryPromise(async () => {
    const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })
    return response.text()
  })

describe.skipIf(unavailable !== undefined && !underCi)("promtool check metrics", () => {
  it.scopedLive(
    "a real worker's /metrics after a task: the library's series and Effect's runtime ones lint clean",
    () =>
      Effect.gen(function*() {
        yield* required
        const master = yield* Master.make()
        const worker = workerWithHealth(master.address, "promtool")
        const context = yield* Layer.build(worker)
        const health = Context.get(context, Health.Health)
        const conn = Context.get(context, MasterLink)
        yield* conn.changes.pipe(
          Stream.filter((state) => state._tag === "Ready"),
          Stream.runHead,
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("Ready within 10 s") })
        )
        // Before anything happened: every series an alert on a rate reads is there, at 0; Effect's are the process's.
        const fresh = (yield* scrape(health.url)).split("\n")
        // A series at 0, its labels in any order.
        const atZero = (name: string, labels: Record<string, string>) =>
          fresh.some((line) =>
            line.startsWith(`${name}{`) && line.endsWith("} 0") &&
            line.slice(name.length + 1, -3).split(",").length === Object.keys(labels).length &&
            Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))
          )
        const address = master.address
        const node = { address, node: "promtool" }
        const expected: ReadonlyArray<readonly [string, Record<string, string>]> = [
          ["grpc_resilience_tasks_total", { ...node, status: "FINISHED" }],
          ["grpc_resilience_tasks_total", { ...node, status: "ERROR" }],
          ["grpc_resilience_tasks_total", { ...node, status: "CANCELLED" }],
          ["grpc_resilience_fetch_failures_total", node],
          ["grpc_resilience_lookup_failures_total", { address, reason: "Timeout" }],
          ["grpc_resilience_lookup_failures_total", { ...node, reason: "Timeout" }],
          ["grpc_resilience_readiness_timeouts_total", { address }],
          ["grpc_resilience_keepalive_refusals_total", { address }]
        ]
        assert.deepStrictEqual(expected.filter(([name, labels]) => !atZero(name, labels)), [])
        const runtime = fresh.filter((line) => line.startsWith("effect_fiber_"))
        assert.isAtLeast(runtime.length, 5)
        assert.deepStrictEqual(runtime.filter((line) => /address=|node=/.test(line)), [])
        assert.isFalse(fresh.some((line) => line.startsWith("effect_fiber_failures")), "interruptions are not failures")
        const id = yield* master.enqueue({ payload: JSON.stringify({ n: 1 }) })
        yield* eventually(master.task(id), (task) => task.status === "FINISHED", "10 seconds", `task ${id} finished`)
        // The FINISHED report is counted when the master's reply is back: a moment after the master has it.
        const text = yield* eventually(
          scrape(health.url),
          (text) =>
            text.split("\n").some((line) =>
              line.startsWith("grpc_resilience_tasks_total{") && line.includes(`node="promtool"`) &&
              line.includes(`status="FINISHED"`) && line.endsWith("} 1")
            ),
          "5 seconds",
          "the finished task counted"
        )
        yield* passes(text)
        // The text promtool passed has the series of every part of the worker, and Effect's.
        for (
          const family of [
            "grpc_resilience_connection_attempts_total counter",
            "grpc_resilience_connection_state gauge",
            "grpc_resilience_registration_seconds histogram",
            "grpc_resilience_tasks_total counter",
            "grpc_resilience_outbox_depth gauge",
            "effect_fiber_started_total counter",
            "effect_fiber_failed_or_interrupted_total counter",
            "effect_fiber_active gauge",
            "effect_fiber_lifetime_seconds histogram"
          ]
        ) assert.include(text, `# TYPE ${family}\n`)
      }),
    30_000
  )

  it.live(
    "every metric the library declares, each with a value, lints clean with its description as HELP",
    () =>
      Effect.gen(function*() {
        yield* required
        const declared = Object.values(Metrics).filter((value): value is Metric.Metric<any, any, any> =>
          typeof value === "function" && Metric.MetricTypeId in value
        )
        assert.isAtLeast(declared.length, 16, "the metrics of src/Metrics.ts")
        // The library's metrics live in the global registry; the snapshot is filtered down to them below.
        const snapshot = yield* Effect.forEach(declared, (metric) => {
          const tagged = Metric.tagged(metric, "address", "127.0.0.1:9666")
          const keyType = metric.keyType
          if (MetricKeyType.isHistogramKey(keyType)) return Metric.update(tagged, 0.25)
          if (MetricKeyType.isCounterKey(keyType)) {
            // Served as counters (docs/operations.md's table says so) only because they are incremental.
            assert.isTrue(keyType.incremental, "the library's counters only go up")
            return Metric.increment(tagged)
          }
          return Metric.set(tagged, 1)
        }).pipe(Effect.zipRight(Metric.snapshot))
        const ours = snapshot.filter((pair) => pair.metricKey.name.startsWith("grpc_resilience_"))
        assert.strictEqual(new Set(ours.map((pair) => pair.metricKey.name)).size, declared.length)
        const text = Prometheus.format(ours)
        for (const pair of ours) {
          const description = pair.metricKey.description
          assert.isTrue(description._tag === "Some" && text.includes(` ${description.value}\n`), pair.metricKey.name)
        }
        yield* passes(text)
      }),
    15_000
  )

  it.live("the formatter's renaming rules lint clean on names that need them", () =>
    Effect.gen(function*() {
      yield* required
      const registry = MetricRegistry.make()
      registry.getCounter(MetricKey.counter("jobs.done", { incremental: true })).update(3)
      registry.getCounter(MetricKey.counter("queue_depth_total", { description: "Queued" })).update(-1)
      registry.getFrequency(MetricKey.frequency("task_status").pipe(MetricKey.tagged("node", "w1"))).update("OK")
      registry.getHistogram(
        MetricKey.histogram("effect_fiber_lifetimes", MetricBoundaries.fromIterable([1, 10])).pipe(
          MetricKey.tagged("time_unit", "milliseconds")
        )
      ).update(4)
      registry.getSummary(MetricKey.summary({
        name: "probe_seconds",
        maxAge: "1 minute",
        maxSize: 10,
        error: 0.01,
        quantiles: [0.5]
      })).update([0.2, Date.now()])
      registry.getGauge(MetricKey.gauge("runners", { description: " " })).update(2)
      yield* passes(Prometheus.format(registry.snapshot()))
    }), 15_000)
})
