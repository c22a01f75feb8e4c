/**
 * How to see the library's spans in OpenTelemetry: the `@effect/opentelemetry`
 * NodeSdk layer with an exporter, provided under the worker's layers. Here an
 * in-memory exporter and a master restarted mid-run; the reconnection prints as
 * one trace: `Connection.reconnect`, its `Connection.attempt`s and its
 * `Readiness.run`. Swap the exporter for an OTLP one to send them to a collector.
 *
 *   npx tsx examples/tracing.ts
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Stream from "effect/Stream"
import { Connection, GrpcChannel, TaskSource } from "../src/index.js"
import { Master } from "../src/testing/index.js"

const exporter = new InMemorySpanExporter()
const Tracing = NodeSdk.layer(() => ({
  resource: { serviceName: "example-worker" },
  spanProcessor: new SimpleSpanProcessor(exporter)
}))

const program = Effect.gen(function*() {
  const master = yield* Master.make()
  const conn = yield* Connection.make({ address: master.address, services: TaskSource.services }).pipe(
    Effect.provide(GrpcChannel.layer)
  )
  const ready = (generation: number) =>
    conn.changes.pipe(Stream.filter((s) => s._tag === "Ready" && s.generation === generation), Stream.runHead)
  yield* ready(1)
  yield* master.stop
  yield* Effect.sleep("1 second")
  yield* master.restart
  yield* ready(2)
  // A call is traced too, as a child of the caller's span; the master fetches for registered nodes only.
  yield* conn.call("node", "Register", { node_key: "n1", name: "n1", max_runners: 1, generation: 2 })
  yield* conn.call("task", "FetchTask", { node_key: "n1", fetch_id: "" }).pipe(Effect.withSpan("fetch once"))
})

// Read before the layer closes: shutting the SDK down empties an in-memory exporter.
const print = Effect.sync(() => {
  const spans = exporter.getFinishedSpans()
  const traces = new Map<string, typeof spans>()
  for (const span of spans) {
    traces.set(span.spanContext().traceId, [...(traces.get(span.spanContext().traceId) ?? []), span])
  }
  for (const [traceId, members] of traces) {
    console.log(`trace ${traceId.slice(0, 8)}`)
    for (const span of members.sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])) {
      const ms = span.duration[0] * 1000 + span.duration[1] / 1e6
      console.log(`  ${span.name.padEnd(22)} ${ms.toFixed(1).padStart(8)} ms  ${JSON.stringify(span.attributes)}`)
    }
  }
})

Effect.runPromise(
  program.pipe(
    Effect.scoped,
    Effect.zipRight(print),
    Effect.provide(Layer.merge(Tracing, Logger.minimumLogLevel(LogLevel.Warning)))
  )
).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
