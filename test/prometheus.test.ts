import { assert, describe, it } from "@effect/vitest"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricPair from "effect/MetricPair"
import * as MetricRegistry from "effect/MetricRegistry"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import * as Prometheus from "../src/internal/prometheus.js"

// A registry of the test's own: the global one is shared with the rest of the process.
const registryWith = (fill: (registry: MetricRegistry.MetricRegistry) => void) => {
  const registry = MetricRegistry.make()
  fill(registry)
  return registry.snapshot()
}

describe("Prometheus text format", () => {
  it("escapes backslashes, double quotes and line feeds in label values, and only those", () => {
    const text = Prometheus.format(registryWith((registry) => {
      const key = MetricKey.counter("requests", { incremental: true }).pipe(
        MetricKey.tagged("path", "C:\\tasks\\\"new\"\nnext"),
        MetricKey.tagged("plain", "a'b{c}=d,é")
      )
      registry.getCounter(key).update(3)
    }))
    assert.strictEqual(
      text,
      "# TYPE requests counter\n" +
        "requests{path=\"C:\\\\tasks\\\\\\\"new\\\"\\nnext\",plain=\"a'b{c}=d,é\"} 3\n"
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
    assert.strictEqual(text, "# TYPE queue_depth gauge\nqueue_depth{task_kind=\"crawl\"} 4\n")
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
        MetricKey.frequency("task_status", { preregisteredWords: ["CANCELLED"] }).pipe(MetricKey.tagged("node", "w1"))
      )
      for (const word of ["FINISHED", "ERROR", "FINISHED"]) hook.update(word)
    }))
    assert.strictEqual(
      text,
      "# TYPE task_status counter\n" +
        "task_status{node=\"w1\",key=\"CANCELLED\"} 0\n" +
        "task_status{node=\"w1\",key=\"ERROR\"} 1\n" +
        "task_status{node=\"w1\",key=\"FINISHED\"} 2\n"
    )
  })

  it("a summary is its quantiles (NaN before any value), _sum and _count", () => {
    const key = MetricKey.summary({ name: "probe_ms", maxAge: "1 minute", maxSize: 100, error: 0.01, quantiles: [0.5, 0.99] })
    const empty = Prometheus.format(registryWith((registry) => void registry.getSummary(key)))
    assert.strictEqual(
      empty,
      "# TYPE probe_ms summary\nprobe_ms{quantile=\"0.5\"} NaN\nprobe_ms{quantile=\"0.99\"} NaN\nprobe_ms_sum 0\nprobe_ms_count 0\n"
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
        "# TYPE probe_ms summary",
        "probe_ms{check=\"probe\",quantile=\"0.5\"} 20",
        "probe_ms{check=\"probe\",quantile=\"0.99\"} 30",
        "probe_ms_sum{check=\"probe\"} 60",
        "probe_ms_count{check=\"probe\"} 3",
        ""
      ].join("\n")
    )
  })

  it("a counter that may go down is a gauge; tag sets of one name are one family, sorted; bigints and infinities", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getCounter(MetricKey.counter("outbox_depth")).update(-2)
      registry.getCounter(MetricKey.counter("calls_total", { incremental: true }).pipe(MetricKey.tagged("code", "UNAVAILABLE")))
        .update(5)
      registry.getCounter(MetricKey.counter("calls_total", { incremental: true, description: "Calls" }).pipe(MetricKey.tagged("code", "OK")))
        .update(7)
      registry.getCounter(MetricKey.counter("bytes_total", { bigint: true, incremental: true })).update(2n ** 70n)
      registry.getGauge(MetricKey.gauge("lag")).update(Number.POSITIVE_INFINITY)
    }))
    assert.strictEqual(
      text,
      [
        "# TYPE bytes_total counter",
        "bytes_total 1180591620717411303424",
        "# HELP calls_total Calls",
        "# TYPE calls_total counter",
        "calls_total{code=\"OK\"} 7",
        "calls_total{code=\"UNAVAILABLE\"} 5",
        "# TYPE lag gauge",
        "lag +Inf",
        "# TYPE outbox_depth gauge",
        "outbox_depth -2",
        ""
      ].join("\n")
    )
  })

  it("a name taken by another type, or a repeated series after sanitizing, is left out with a comment", () => {
    const text = Prometheus.format(registryWith((registry) => {
      registry.getCounter(MetricKey.counter("jobs", { incremental: true })).update(1)
      registry.getGauge(MetricKey.gauge("jobs")).update(9)
      registry.getGauge(MetricKey.gauge("a.b")).update(1)
      registry.getGauge(MetricKey.gauge("a-b")).update(2)
    }))
    const lines = text.trimEnd().split("\n")
    assert.strictEqual(lines.filter((line) => line.startsWith("# TYPE jobs")).length, 1)
    assert.strictEqual(lines.filter((line) => line.startsWith("a_b ")).length, 1)
    assert.strictEqual(lines.filter((line) => line.startsWith("# skipped ")).length, 2)
    assert.isFalse(lines.some((line) => line.startsWith("# HELP") || (line.startsWith("# ") && !/^# (TYPE|skipped) /.test(line))))
  })

  it("an empty snapshot is an empty text", () => {
    assert.strictEqual(Prometheus.format([]), "")
  })
})
