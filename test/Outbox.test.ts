import * as grpc from "@grpc/grpc-js"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as TestClock from "effect/TestClock"
import * as GrpcError from "../src/GrpcError.js"
import * as Outbox from "../src/Outbox.js"
import type * as TaskSource from "../src/TaskSource.js"

const report = (taskId: string, status: TaskSource.ReportedStatus): TaskSource.StatusReport => ({
  key: `${taskId}:${status}`,
  taskId,
  status,
  error: ""
})

const unavailable = new GrpcError.GrpcError({ code: grpc.status.UNAVAILABLE, details: "down", service: "task", method: "ReportStatus" })
const invalid = new GrpcError.GrpcError({ code: grpc.status.INVALID_ARGUMENT, details: "bad", service: "task", method: "ReportStatus" })

// A master that is down until `upAt` (virtual millis), and records what it received and when.
const master = (upAt: number) => {
  const received: Array<{ key: string; at: number }> = []
  const deliver = (r: TaskSource.StatusReport) =>
    Effect.flatMap(TestClock.currentTimeMillis, (now) =>
      now < upAt ? Effect.fail(unavailable) : Effect.sync(() => void received.push({ key: r.key, at: now })))
  return { received, deliver }
}

describe("Outbox (virtual time)", () => {
  it.scoped("reports made during an outage arrive after it, in order, once each", () =>
    Effect.gen(function*() {
      const { received, deliver } = master(20_000)
      const outbox = yield* Outbox.make({ deliver })
      yield* outbox.add(report("t1", "RUNNING"))
      yield* outbox.add(report("t1", "FINISHED"))
      yield* outbox.add(report("t1", "FINISHED")) // the same key twice is queued once
      yield* outbox.add(report("t2", "RUNNING"))
      yield* TestClock.adjust("19 seconds")
      assert.deepStrictEqual(received, [])
      assert.strictEqual((yield* outbox.pending).length, 3)
      yield* TestClock.adjust("15 seconds")
      assert.deepStrictEqual(received.map((r) => r.key), ["t1:RUNNING", "t1:FINISHED", "t2:RUNNING"])
      assert.isTrue(received.every((r) => r.at >= 20_000))
      yield* outbox.flush
      assert.deepStrictEqual((yield* outbox.stats).delivered, 3)
    }).pipe(Effect.provide(KeyValueStore.layerMemory), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a report the master refuses for good is logged, counted and dropped; the next goes on", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const outbox = yield* Outbox.make({
        deliver: (r) => (r.taskId === "bad" ? Effect.fail(invalid) : Effect.sync(() => void received.push(r.key)))
      })
      yield* outbox.add(report("bad", "RUNNING"))
      yield* outbox.add(report("good", "RUNNING"))
      yield* TestClock.adjust(0)
      yield* outbox.flush
      assert.deepStrictEqual(received, ["good:RUNNING"])
      assert.deepStrictEqual(yield* outbox.stats, { delivered: 1, rejected: 1, retries: 0 })
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))

  it.effect("what is not delivered survives in the store, and a new outbox delivers it", () =>
    Effect.gen(function*() {
      const first = master(Number.POSITIVE_INFINITY)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: first.deliver })
          yield* outbox.add(report("t1", "FINISHED"))
          yield* TestClock.adjust("5 seconds")
        })
      )
      const store = yield* KeyValueStore.KeyValueStore
      assert.include(yield* store.get("outbox").pipe(Effect.map((o) => o._tag === "Some" ? o.value : "")), "t1:FINISHED")
      const second = master(0)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: second.deliver })
          yield* TestClock.adjust(0)
          yield* outbox.flush
        })
      )
      assert.deepStrictEqual(second.received.map((r) => r.key), ["t1:FINISHED"])
      assert.strictEqual(yield* store.get("outbox").pipe(Effect.map((o) => o._tag === "Some" ? o.value : "")), "[]")
    }).pipe(Effect.provide(KeyValueStore.layerMemory), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a damaged store is set aside with a log line, not dropped, and the outbox starts empty", () =>
    Effect.gen(function*() {
      const store = yield* KeyValueStore.KeyValueStore
      yield* store.set("outbox", "{not json")
      const outbox = yield* Outbox.make({ deliver: () => Effect.void })
      assert.deepStrictEqual(yield* outbox.pending, [])
      assert.strictEqual(yield* store.get("outbox.damaged-0").pipe(Effect.map((o) => o._tag === "Some" && o.value)), "{not json")
    }).pipe(Effect.provide(KeyValueStore.layerMemory)))
})
