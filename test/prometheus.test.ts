import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricPair from "effect/MetricPair"
import * as MetricRegistry from "effect/MetricRegistry"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import * as Prometheus from "../src/internal/health/prometheus.js"

// A registry of the test's own: the global one is shared with the rest of the process.
const registryWith = (fill: (registry: MetricRegistry.MetricRegistry) => void) => {
  const registry = MetricRegistry.make()
  fill(registry)
  return registry.snapshot()
}

describe("Prometheus text format", () => {
  it("escapes backslashes, double quotes and line feeds in label values, and only those", () => {
    const text = Prometheus.format(registryWith((registry) => {
      const key = MetricKey.counter("requests_total", { incremental: true, description: "Requests" }).pipe(
        MetricKey.tagged("path", "C:\\tasks\\\"new\"\nnext"),
        MetricKey.tagged("plain", "a'b{c}=d,é")
      )
      registry.getCounter(key).update(3)
    }))
    assert.strictEqual(
      text,
      "# HELP requests_total Requests\n" +
        "# TYPE requests_total counter\n" +
        "requests_total{path=\"C:\\\\tasks\\\\\\\"new\\\"\\nnext\",plain=\"a'b{c}=d,é\"} 3\n"
    )
  })

  it("escapes backslashes and line feeds in HELP, not quotes", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getGauge(MetricKey.gauge("runners", { description: "Tasks \"running\"\\now\nper node" })).update(2)
    }))
    assert.strictEqual(text, "# HELP runners Tasks \"running\"\\\\now\\nper node\n# TYPE runners gauge\nrunners 2\n")
  })

  it("sanitizes metric and label names", () => {
    assert.strictEqual(Prometheus.metricName("http.requests-total"), "http_requests_total")
    assert.strictEqual(Prometheus.metricName("1st:pass"), "_1st:pass")
    assert.strictEqual(Prometheus.metricName("ok_name:sub"), "ok_name:sub")
    assert.strictEqual(Prometheus.metricName("ünïcode 🚀"), "_n_code__")
    assert.strictEqual(Prometheus.metricName(""), "_")
    assert.strictEqual(Prometheus.labelName("content-type"), "content_type")
    assert.strictEqual(Prometheus.labelName("a:b"), "a_b")
    assert.strictEqual(Prometheus.labelName("9lives"), "_9lives")
    const text = Prometheus.format(registryWith((registry) => {
      registry.getGauge(MetricKey.gauge("queue.depth").pipe(MetricKey.tagged("task-kind", "crawl"))).update(4)
    }))
    assert.strictEqual(
      text,
      "# HELP queue_depth queue.depth (an Effect metric without a description)\n" +
        "# TYPE queue_depth gauge\nqueue_depth{task_kind=\"crawl\"} 4\n"
    )
  })

  it("a histogram is cumulative buckets up to +Inf, then _sum and _count", () => {
    const text = Prometheus.format(registryWith((registry) => {
      const key = MetricKey.histogram("fetch_seconds", MetricBoundaries.fromIterable([0.1, 1, 10]), "Fetch time").pipe(
        MetricKey.tagged("service", "task")
      )
      const hook = registry.getHistogram(key)
      for (const value of [0.05, 0.1, 0.5, 2, 2, 30]) hook.update(value)
    }))
    assert.strictEqual(
      text,
      [
        "# HELP fetch_seconds Fetch time",
        "# TYPE fetch_seconds histogram",
        "fetch_seconds_bucket{service=\"task\",le=\"0.1\"} 2",
        "fetch_seconds_bucket{service=\"task\",le=\"1\"} 3",
        "fetch_seconds_bucket{service=\"task\",le=\"10\"} 5",
        "fetch_seconds_bucket{service=\"task\",le=\"+Inf\"} 6",
        "fetch_seconds_sum{service=\"task\"} 34.65",
        "fetch_seconds_count{service=\"task\"} 6",
        ""
      ].join("\n")
    )
  })

  it("a frequency is a counter with one series per word, label key", () => {
    const text = Prometheus.format(registryWith((registry) => {
      const hook = registry.getFrequency(
        MetricKey.frequency("task_status", { description: "Statuses", preregisteredWords: ["CANCELLED"] }).pipe(
          MetricKey.tagged("node", "w1")
        )
      )
      for (const word of ["FINISHED", "ERROR", "FINISHED"]) hook.update(word)
    }))
    assert.strictEqual(
      text,
      "# HELP task_status_total Statuses\n" +
        "# TYPE task_status_total counter\n" +
        "task_status_total{node=\"w1\",key=\"CANCELLED\"} 0\n" +
        "task_status_total{node=\"w1\",key=\"ERROR\"} 1\n" +
        "task_status_total{node=\"w1\",key=\"FINISHED\"} 2\n"
    )
  })

  it("a summary is its quantiles (NaN before any value), _sum and _count", () => {
    const key = MetricKey.summary({
      name: "probe_seconds",
      maxAge: "1 minute",
      maxSize: 100,
      error: 0.01,
      quantiles: [0.5, 0.99],
      description: "Probe time"
    })
    const empty = Prometheus.format(registryWith((registry) => void registry.getSummary(key)))
    assert.strictEqual(
      empty,
      "# HELP probe_seconds Probe time\n# TYPE probe_seconds summary\nprobe_seconds{quantile=\"0.5\"} NaN\n" +
        "probe_seconds{quantile=\"0.99\"} NaN\nprobe_seconds_sum 0\nprobe_seconds_count 0\n"
    )
    // Effect estimates the quantiles; the text carries them as they are.
    const state = MetricState.summary({
      error: 0.01,
      quantiles: [[0.5, Option.some(20)], [0.99, Option.some(30)]],
      count: 3,
      min: 10,
      max: 30,
      sum: 60
    })
    assert.strictEqual(
      Prometheus.format([MetricPair.unsafeMake(key.pipe(MetricKey.tagged("check", "probe")), state)]),
      [
        "# HELP probe_seconds Probe time",
        "# TYPE probe_seconds summary",
        "probe_seconds{check=\"probe\",quantile=\"0.5\"} 20",
        "probe_seconds{check=\"probe\",quantile=\"0.99\"} 30",
        "probe_seconds_sum{check=\"probe\"} 60",
        "probe_seconds_count{check=\"probe\"} 3",
        ""
      ].join("\n")
    )
  })

  it("a counter that may go down is a gauge; tag sets of one name are one family, sorted; bigints and infinities", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getCounter(MetricKey.counter("outbox_depth")).update(-2)
      registry.getCounter(
        MetricKey.counter("calls_total", { incremental: true }).pipe(MetricKey.tagged("code", "UNAVAILABLE"))
      )
        .update(5)
      registry.getCounter(
        MetricKey.counter("calls_total", { incremental: true, description: "Calls" }).pipe(
          MetricKey.tagged("code", "OK")
        )
      )
        .update(7)
      registry.getCounter(MetricKey.counter("bytes_total", { bigint: true, incremental: true })).update(2n ** 70n)
      registry.getGauge(MetricKey.gauge("lag")).update(Number.POSITIVE_INFINITY)
    }))
    assert.strictEqual(
      text,
      [
        "# HELP bytes_total bytes_total (an Effect metric without a description)",
        "# TYPE bytes_total counter",
        "bytes_total 1180591620717411303424",
        "# HELP calls_total Calls",
        "# TYPE calls_total counter",
        "calls_total{code=\"OK\"} 7",
        "calls_total{code=\"UNAVAILABLE\"} 5",
        "# HELP lag lag (an Effect metric without a description)",
        "# TYPE lag gauge",
        "lag +Inf",
        "# HELP outbox_depth outbox_depth (an Effect metric without a description)",
        "# TYPE outbox_depth gauge",
        "outbox_depth -2",
        ""
      ].join("\n")
    )
  })

  it("a name taken by another type, or a repeated series after sanitizing, is left out with a comment", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getHistogram(MetricKey.histogram("jobs", MetricBoundaries.fromIterable([1]))).update(1)
      registry.getGauge(MetricKey.gauge("jobs")).update(9)
      registry.getGauge(MetricKey.gauge("a.b")).update(1)
      registry.getGauge(MetricKey.gauge("a-b")).update(2)
    }))
    const lines = text.trimEnd().split("\n")
    assert.strictEqual(lines.filter((line) => line.startsWith("# TYPE jobs")).length, 1)
    assert.strictEqual(lines.filter((line) => line.startsWith("a_b ")).length, 1)
    assert.strictEqual(lines.filter((line) => line.startsWith("# skipped ")).length, 2)
    assert.isFalse(lines.some((line) => line.startsWith("# ") && !/^# (HELP|TYPE|skipped) /.test(line)))
    assert.strictEqual(lines.filter((line) => line.startsWith("# HELP ")).length, 2, "one per family left")
  })

  it("a counter's family name ends in _total, no other type's does", () => {
    assert.strictEqual(Prometheus.familyName("jobs", "counter"), "jobs_total")
    assert.strictEqual(Prometheus.familyName("jobs_total", "counter"), "jobs_total")
    assert.strictEqual(Prometheus.familyName("http.requests-total", "counter"), "http_requests_total")
    assert.strictEqual(Prometheus.familyName("http.requests", "counter"), "http_requests_total")
    assert.strictEqual(Prometheus.familyName("depth_total", "gauge"), "depth")
    assert.strictEqual(Prometheus.familyName("fetch_seconds_total", "histogram"), "fetch_seconds")
    assert.strictEqual(Prometheus.familyName("probe_seconds_total", "summary"), "probe_seconds")
    assert.strictEqual(Prometheus.familyName("depth", "gauge"), "depth")
    // Nothing would be left of the name: it stays.
    assert.strictEqual(Prometheus.familyName("_total", "gauge"), "_total")
  })

  it("counters and frequencies are renamed to end in _total, a counter that may go down loses its _total", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getCounter(MetricKey.counter("fetches", { incremental: true, description: "Fetches" })).update(2)
      registry.getCounter(MetricKey.counter("pending_total", { description: "Pending" })).update(-1)
      registry.getFrequency(MetricKey.frequency("status", { description: "Statuses" })).update("OK")
    }))
    assert.strictEqual(
      text,
      [
        "# HELP fetches_total Fetches",
        "# TYPE fetches_total counter",
        "fetches_total 2",
        "# HELP pending Pending",
        "# TYPE pending gauge",
        "pending -1",
        "# HELP status_total Statuses",
        "# TYPE status_total counter",
        "status_total{key=\"OK\"} 1",
        ""
      ].join("\n")
    )
  })

  it("a counter renamed onto another counter's name shares its family; a gauge renamed onto a histogram's is left out", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getCounter(MetricKey.counter("calls", { incremental: true }).pipe(MetricKey.tagged("code", "OK")))
        .update(1)
      registry.getCounter(MetricKey.counter("calls_total", { incremental: true }).pipe(MetricKey.tagged("code", "NO")))
        .update(2)
      registry.getHistogram(MetricKey.histogram("calls_total", MetricBoundaries.fromIterable([1]))).update(1)
    }))
    const lines = text.trimEnd().split("\n")
    assert.deepStrictEqual(lines.filter((line) => /^(# (HELP|TYPE) )?calls_total[ {]/.test(line)), [
      "# HELP calls_total calls (an Effect metric without a description)",
      "# TYPE calls_total counter",
      "calls_total{code=\"NO\"} 2",
      "calls_total{code=\"OK\"} 1"
    ])
    // The histogram's family, `calls`, is its own: nothing clashes.
    assert.include(lines, "# TYPE calls histogram")
    assert.isFalse(lines.some((line) => line.startsWith("# skipped")))

    // A counter's name always ends in _total and no other's does: only two non-counters can clash.
    const clash = Prometheus.format(registryWith((registry) => {
      registry.getHistogram(MetricKey.histogram("jobs", MetricBoundaries.fromIterable([1]))).update(1)
      registry.getCounter(MetricKey.counter("jobs_total")).update(1)
    }))
    assert.include(clash, "# TYPE jobs histogram\n")
    assert.include(clash, "# skipped \"jobs_total\" (gauge): the name is taken by a histogram\n")
  })

  it("every family has a HELP: the first description among its metrics, else its Effect name", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getGauge(MetricKey.gauge("runners").pipe(MetricKey.tagged("node", "a"))).update(1)
      registry.getGauge(MetricKey.gauge("runners", { description: "Runners" }).pipe(MetricKey.tagged("node", "b")))
        .update(2)
      registry.getGauge(MetricKey.gauge("queue.depth", { description: "  " })).update(3)
    }))
    const help = text.split("\n").filter((line) => line.startsWith("# HELP"))
    assert.deepStrictEqual(help, [
      "# HELP queue_depth queue.depth (an Effect metric without a description)",
      "# HELP runners Runners"
    ])
  })

  it("Effect's fiber lifetimes histogram, in milliseconds, is served in seconds; another histogram keeps its unit", () => {
    const text = Prometheus.format(registryWith((registry) => {
      const lifetimes = MetricKey.histogram("effect_fiber_lifetimes", MetricBoundaries.fromIterable([1, 10, 1000]))
        .pipe(
          MetricKey.tagged("time_unit", "milliseconds"),
          MetricKey.tagged("address", "a")
        )
      const hook = registry.getHistogram(lifetimes)
      for (const ms of [0.5, 5, 5, 2500]) hook.update(ms)
      const other = MetricKey.histogram("wait", MetricBoundaries.fromIterable([10]), "Wait").pipe(
        MetricKey.tagged("time_unit", "milliseconds")
      )
      registry.getHistogram(other).update(20)
    }))
    assert.strictEqual(
      text,
      [
        "# HELP effect_fiber_lifetime_seconds How long fibers ran, from start to end",
        "# TYPE effect_fiber_lifetime_seconds histogram",
        "effect_fiber_lifetime_seconds_bucket{le=\"0.001\"} 1",
        "effect_fiber_lifetime_seconds_bucket{le=\"0.01\"} 3",
        "effect_fiber_lifetime_seconds_bucket{le=\"1\"} 3",
        "effect_fiber_lifetime_seconds_bucket{le=\"+Inf\"} 4",
        "effect_fiber_lifetime_seconds_sum 2.5105",
        "effect_fiber_lifetime_seconds_count 4",
        "# HELP wait Wait",
        "# TYPE wait histogram",
        "wait_bucket{time_unit=\"milliseconds\",le=\"10\"} 0",
        "wait_bucket{time_unit=\"milliseconds\",le=\"+Inf\"} 1",
        "wait_sum{time_unit=\"milliseconds\"} 20",
        "wait_count{time_unit=\"milliseconds\"} 1",
        ""
      ].join("\n")
    )
  })

  it.effect("Effect's own runtime metrics, as this process records them, come out described and renamed", () =>
    Effect.gen(function*() {
      yield* Fiber.await(yield* Effect.fork(Effect.void))
      yield* Fiber.await(yield* Effect.fork(Effect.fail("boom")))
      const text = Prometheus.format(yield* Metric.snapshot)
      const lines = text.split("\n").filter((line) => line.includes("effect_fiber"))
      const types = lines.filter((line) => line.startsWith("# TYPE")).map((line) => line.slice("# TYPE ".length))
      assert.deepStrictEqual(types, [
        "effect_fiber_active gauge",
        "effect_fiber_failed_or_interrupted_total counter",
        "effect_fiber_lifetime_seconds histogram",
        "effect_fiber_started_total counter",
        "effect_fiber_successes_total counter"
      ])
      const help = lines.filter((line) => line.startsWith("# HELP"))
      assert.strictEqual(help.length, 5)
      assert.isFalse(help.some((line) => line.includes("without a description")), help.join("\n"))
      assert.isFalse(lines.some((line) => line.includes("time_unit")))
      assert.isTrue(
        lines.some((line) => /^effect_fiber_lifetime_seconds_bucket\{(?:.*,)?le="0\.0005"\} \d+$/.test(line))
      )
    }))

  it("Effect's runtime series are the process's: summed across the fibers' labels, failures named with interruptions", () => {
    const text = Prometheus.format(registryWith((registry) => {
      for (const [address, started, failed] of [["a", 3, 1], ["b", 4, 2]] as const) {
        registry.getCounter(
          MetricKey.counter("effect_fiber_started", { incremental: true }).pipe(
            MetricKey.tagged("address", address)
          )
        ).update(started)
        registry.getCounter(
          MetricKey.counter("effect_fiber_failures", { incremental: true }).pipe(
            MetricKey.tagged("address", address),
            MetricKey.tagged("node", "n")
          )
        ).update(failed)
        registry.getGauge(MetricKey.gauge("effect_fiber_active").pipe(MetricKey.tagged("address", address))).update(2)
      }
      registry.getCounter(MetricKey.counter("tasks", { incremental: true }).pipe(MetricKey.tagged("address", "a")))
        .update(1)
    }))
    assert.strictEqual(
      text,
      [
        "# HELP effect_fiber_active Fibers of the Effect runtime started and not yet ended",
        "# TYPE effect_fiber_active gauge",
        "effect_fiber_active 4",
        "# HELP effect_fiber_failed_or_interrupted_total Fibers that ended with a failure or an interruption (most interruptions are fibers stopped on purpose)",
        "# TYPE effect_fiber_failed_or_interrupted_total counter",
        "effect_fiber_failed_or_interrupted_total 3",
        "# HELP effect_fiber_started_total Fibers the Effect runtime started",
        "# TYPE effect_fiber_started_total counter",
        "effect_fiber_started_total 7",
        "# HELP tasks_total tasks (an Effect metric without a description)",
        "# TYPE tasks_total counter",
        "tasks_total{address=\"a\"} 1",
        ""
      ].join("\n")
    )
  })

  it("an empty snapshot is an empty text", () => {
    assert.strictEqual(Prometheus.format([]), "")
  })
})
