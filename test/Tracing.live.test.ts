/**
 * Spans, as an OpenTelemetry exporter receives them: a reconnection is one
 * trace, and a call is a child of the caller's span.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
const idOf = (span: ReadableSpan) => span.spanContext().spanId
const traceOf = (span: ReadableSpan) => span.spanContext().traceId

describe("traces (live loopback, OpenTelemetry in-memory exporter)", () => {
  it.live("a reconnection is one trace of its attempts and readiness run; a call is a child of its caller", () => {
    const exporter = new InMemorySpanExporter()
    const run = Effect.gen(function*() {
      const master = yield* Master.make()
      const conn = yield* Connection.make({
        address: master.address,
        services: TaskSource.services,
        reconnectSchedule: Schedule.spaced("200 millis")
      }).pipe(Effect.provide(GrpcChannel.layer))
      const ready = (generation: number) =>
        conn.changes.pipe(
          Stream.filter((state) => state._tag === "Ready" && state.generation === generation),
          Stream.runHead,
          Effect.timeoutFail({
            duration: "10 seconds",
            onTimeout: () => new Error(`generation ${generation} within 10 s`)
          })
        )
      yield* ready(1)
      yield* master.stop
      yield* Effect.sleep("700 millis") // a few failed attempts
      yield* master.restart
      yield* ready(2)
      yield* conn.call("node", "Register", { node_key: "n1", name: "n1", max_runners: 1, generation: 2 })
      yield* conn.call("task", "FetchTask", { node_key: "n1", fetch_id: "" }).pipe(Effect.withSpan("fetch once"))
    }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning))

    return Effect.gen(function*() {
      yield* run
      // Read before the SDK layer closes: its shutdown empties the exporter.
      const spans = exporter.getFinishedSpans()
      const named = (name: string) => spans.filter((span) => span.name === name)

      const [connect] = named("Connection.connect")
      const [reconnect] = named("Connection.reconnect")
      assert.isDefined(connect)
      assert.isDefined(reconnect)
      assert.isUndefined(parentOf(reconnect!), "a reconnection starts a trace of its own")
      assert.notStrictEqual(traceOf(reconnect!), traceOf(connect!))
      assert.strictEqual(reconnect!.attributes["generation"], 2)

      const inReconnect = spans.filter((span) => traceOf(span) === traceOf(reconnect!))
      const attempts = inReconnect.filter((span) => span.name === "Connection.attempt")
      assert.isAtLeast(attempts.length, 2, "the failed attempts and the one that succeeded")
      for (const attempt of attempts) assert.strictEqual(parentOf(attempt), idOf(reconnect!))
      const readiness = inReconnect.filter((span) => span.name === "Readiness.run")
      assert.strictEqual(readiness.length, 1, "one readiness run: the attempt that reached READY")
      assert.include(attempts.map(idOf), parentOf(readiness[0]!))

      const [caller] = named("fetch once")
      const [call] = named("task.FetchTask")
      assert.isDefined(call)
      assert.strictEqual(parentOf(call!), idOf(caller!))
      assert.deepStrictEqual(
        [call!.attributes["rpc.service"], call!.attributes["rpc.method"]],
        ["task", "FetchTask"]
      )
    }).pipe(Effect.provide(NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) }))))
  }, 30_000)
})
