import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as TestClock from "effect/TestClock"
import * as GrpcError from "../src/GrpcError.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxStore from "../src/OutboxStore.js"
import type * as TaskSource from "../src/TaskSource.js"

const report = (taskId: string, status: TaskSource.ReportedStatus): TaskSource.StatusReport => ({
  key: `${taskId}:${status}`,
  taskId,
  status,
  error: ""
})

const owner = { node: "n1", master: "127.0.0.1:9666" }

const unavailable = new GrpcError.GrpcError({
  code: grpc.status.UNAVAILABLE,
  details: "down",
  service: "task",
  method: "ReportStatus"
})
const invalid = new GrpcError.GrpcError({
  code: grpc.status.INVALID_ARGUMENT,
  details: "bad",
  service: "task",
  method: "ReportStatus"
})

// A master that is down until `upAt` (virtual millis), and records what it received and when.
const master = (upAt: number) => {
  const received: Array<{ key: string; at: number }> = []
  const deliver = (r: TaskSource.StatusReport) =>
    Effect.flatMap(
      TestClock.currentTimeMillis,
      (now) => now < upAt ? Effect.fail(unavailable) : Effect.sync(() => void received.push({ key: r.key, at: now }))
    )
  return { received, deliver }
}

// The records of an owner now, read through a fresh open of the store.
const stored = (who: OutboxStore.Owner = owner) =>
  Effect.scoped(Effect.flatMap(Outbox.OutboxStore, (store) => store.open(who))).pipe(
    Effect.map((records) => records.initial.map((r) => r.report.key))
  )

// One memory store shared by the outboxes of a test, as a disk is by a worker's restarts.
const memory = Layer.effect(
  Outbox.OutboxStore,
  Effect.map(Layer.build(Outbox.layerMemory), Context.get(Outbox.OutboxStore))
).pipe(
  Layer.provide(Layer.scope)
)

// A store whose records the test can read while an outbox has them open.
const visible = (options: { readonly updateTakes?: Duration.DurationInput } = {}) => {
  const owners = new Map<string, Map<number, TaskSource.StatusReport>>()
  const of = (who: OutboxStore.Owner) => {
    const id = `${who.node}@${who.master}`
    const records = owners.get(id) ?? new Map<number, TaskSource.StatusReport>()
    owners.set(id, records)
    return records
  }
  const layer = Layer.succeed(
    Outbox.OutboxStore,
    Outbox.OutboxStore.of({
      open: (who) =>
        Effect.sync(() => {
          const records = of(who)
          return {
            location: "visible",
            initial: Array.from(records, ([sequence, report]) => ({ sequence, report })).sort((a, b) =>
              a.sequence - b.sequence
            ),
            setAside: 0,
            append: (added) => Effect.sync(() => added.forEach((r) => records.set(r.sequence, r.report))),
            update: (rewritten) =>
              Effect.zipRight(
                Effect.sleep(options.updateTakes ?? 0),
                Effect.sync(() => void records.set(rewritten.sequence, rewritten.report))
              ),
            remove: (sequences) => Effect.sync(() => sequences.forEach((sequence) => records.delete(sequence)))
          }
        })
    })
  )
  const keys = (who: OutboxStore.Owner = owner) =>
    Effect.sync(() => Array.from(of(who)).sort(([a], [b]) => a - b).map(([, r]) => r.key))
  return { layer, keys }
}

describe("Outbox (virtual time)", () => {
  it.scoped("a delivery that dies is logged and tried again after 10 s; delivery goes on", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      let calls = 0
      const deliver = (r: TaskSource.StatusReport) =>
        Effect.suspend(() =>
          ++calls === 1 ? Effect.die(new Error("a bug in the source")) : Effect.sync(() => void received.push(r.key))
        )
      const outbox = yield* Outbox.make({ deliver, ...owner })
      yield* outbox.add(report("t1", "RUNNING"))
      yield* TestClock.adjust("9 seconds")
      assert.deepStrictEqual(received, [])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(received, ["t1:RUNNING"])
      yield* outbox.add(report("t1", "FINISHED"))
      yield* outbox.flush
      assert.deepStrictEqual(received, ["t1:RUNNING", "t1:FINISHED"])
    }).pipe(Effect.provide(Outbox.layerMemory)))

  it.scoped("reports made during an outage arrive after it, in order, once each", () =>
    Effect.gen(function*() {
      const { received, deliver } = master(20_000)
      const outbox = yield* Outbox.make({ deliver, ...owner })
      yield* outbox.add(report("t1", "RUNNING"))
      yield* outbox.add(report("t1", "FINISHED"))
      yield* outbox.add(report("t1", "FINISHED")) // the same key twice is queued once
      yield* outbox.add(report("t2", "RUNNING"))
      yield* TestClock.adjust("19 seconds")
      assert.deepStrictEqual(received, [])
      assert.strictEqual(yield* outbox.size, 3)
      yield* TestClock.adjust("15 seconds")
      assert.deepStrictEqual(received.map((r) => r.key), ["t1:RUNNING", "t1:FINISHED", "t2:RUNNING"])
      assert.isTrue(received.every((r) => r.at >= 20_000))
      yield* outbox.flush
      assert.deepStrictEqual((yield* outbox.stats).delivered, 3)
    }).pipe(Effect.provide(Outbox.layerMemory), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a report the master refuses for good is logged, counted and dropped; the next goes on", () => {
    const store = visible()
    return Effect.gen(function*() {
      const received: Array<string> = []
      const outbox = yield* Outbox.make({
        ...owner,
        deliver: (r) => (r.taskId === "bad" ? Effect.fail(invalid) : Effect.sync(() => void received.push(r.key)))
      })
      yield* outbox.add(report("bad", "FINISHED"))
      yield* outbox.add(report("good", "FINISHED"))
      yield* TestClock.adjust(0)
      yield* outbox.flush
      assert.deepStrictEqual(received, ["good:FINISHED"])
      assert.deepStrictEqual(yield* outbox.stats, { delivered: 1, rejected: 1, retries: 0, setAside: 0 })
      assert.deepStrictEqual(yield* store.keys(), [])
    }).pipe(Effect.provide(store.layer))
  })

  it.effect("what is not delivered survives in the store, and a new outbox delivers it in the order of add", () =>
    Effect.gen(function*() {
      const first = master(Number.POSITIVE_INFINITY)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: first.deliver, ...owner })
          for (const id of ["t3", "t1", "t2"]) yield* outbox.add(report(id, "FINISHED"))
          yield* TestClock.adjust("5 seconds")
        })
      )
      assert.deepStrictEqual(yield* stored(), ["t3:FINISHED", "t1:FINISHED", "t2:FINISHED"])
      const second = master(0)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: second.deliver, ...owner })
          yield* TestClock.adjust(0)
          yield* outbox.flush
        })
      )
      assert.deepStrictEqual(second.received.map((r) => r.key), ["t3:FINISHED", "t1:FINISHED", "t2:FINISHED"])
      assert.deepStrictEqual(yield* stored(), [])
    }).pipe(Effect.provide(memory), Effect.withRandom(Random.fixed([0.5]))))

  it.effect("a task's RUNNING record stays until its final report; one never ended is unfinished after a restart", () => {
    const store = visible()
    return Effect.gen(function*() {
      const up = master(0)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: up.deliver, ...owner })
          yield* outbox.add(report("done", "RUNNING"))
          yield* outbox.add(report("cut", "RUNNING"))
          yield* TestClock.adjust(0)
          yield* outbox.flush
          // Delivered, and kept: they mark the tasks as started.
          assert.deepStrictEqual(yield* store.keys(), ["done:RUNNING", "cut:RUNNING"])
          assert.isTrue(yield* outbox.tracks("cut"))
          yield* outbox.add(report("done", "FINISHED"))
          yield* TestClock.adjust(0)
          yield* outbox.flush
          assert.deepStrictEqual(yield* store.keys(), ["cut:RUNNING"])
          assert.isFalse(yield* outbox.tracks("done"))
          assert.deepStrictEqual(outbox.unfinished, [])
        })
      )
      // The worker stopped while "cut" ran: the next outbox names it, and its final report ends it, once.
      const again = master(0)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: again.deliver, ...owner })
          assert.deepStrictEqual(outbox.unfinished, ["cut"])
          assert.isTrue(yield* outbox.tracks("cut"))
          yield* outbox.add(report("cut", "ERROR"))
          yield* TestClock.adjust(0)
          yield* outbox.flush
        })
      )
      assert.deepStrictEqual(again.received.map((r) => r.key), ["cut:RUNNING", "cut:ERROR"])
      assert.deepStrictEqual(yield* store.keys(), [])
      const third = yield* Effect.scoped(
        Effect.map(Outbox.make({ deliver: up.deliver, ...owner }), (o) => o.unfinished)
      )
      assert.deepStrictEqual(third, [])
    }).pipe(Effect.provide(store.layer))
  })

  it.effect("process groups recorded behind the task's final report are refused: its RUNNING record never comes back", () => {
    // A rewrite takes 3 s: one let through after the final report would outlast the RUNNING record's removal.
    const store = visible({ updateTakes: "3 seconds" })
    return Effect.gen(function*() {
      const outbox = yield* Outbox.make({ deliver: master(1_000).deliver, ...owner })
      yield* outbox.add(report("t1", "RUNNING"))
      // Queued one behind the other, as a task's final report and a fiber it left behind would, before the RUNNING
      // report is delivered (the master is down until 1 s): the RUNNING record goes once it is.
      const final = yield* Effect.fork(outbox.add(report("t1", "FINISHED")))
      const late = yield* Effect.fork(Effect.flip(outbox.recordProcesses("t1", [{ pgid: 4300, start: "2" }])))
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(final)
      assert.strictEqual((yield* Fiber.join(late)).reason, "Closed")
      yield* outbox.flush
      assert.deepStrictEqual(yield* store.keys(), [])
    }).pipe(Effect.provide(store.layer), Effect.scoped, Effect.withRandom(Random.fixed([0.5])))
  })

  it.scoped("a store without `update` (written for 0.2.0) fails a record of process groups as Unwritable", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.make({ deliver: master(0).deliver, ...owner })
      yield* outbox.add(report("t1", "RUNNING"))
      const error = yield* Effect.flip(outbox.recordProcesses("t1", [{ pgid: 4242 }]))
      assert.strictEqual(error.reason, "Unwritable")
      assert.include(error.message, "process groups are not recorded")
    }).pipe(Effect.provide(Layer.succeed(
      Outbox.OutboxStore,
      Outbox.OutboxStore.of({
        open: () =>
          Effect.succeed({
            location: "old",
            initial: [],
            setAside: 0,
            append: () => Effect.void,
            remove: () => Effect.void
          })
      })
    ))))

  it.effect("two owners in one store never touch each other's reports; one owner cannot be opened twice", () =>
    Effect.gen(function*() {
      const other = { node: "n2", master: owner.master }
      const down = master(Number.POSITIVE_INFINITY)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const a = yield* Outbox.make({ deliver: down.deliver, ...owner })
          const b = yield* Outbox.make({ deliver: down.deliver, ...other })
          yield* a.add(report("t1", "FINISHED"))
          yield* b.add(report("t1", "FINISHED"))
          yield* b.add(report("t2", "FINISHED"))
          assert.deepStrictEqual(yield* a.pending, [report("t1", "FINISHED")])
          const twice = yield* Effect.exit(Outbox.make({ deliver: down.deliver, ...owner }))
          assert.isTrue(Exit.isFailure(twice) && JSON.stringify(twice.cause).includes("Locked"))
        })
      )
      assert.deepStrictEqual(yield* stored(owner), ["t1:FINISHED"])
      assert.deepStrictEqual(yield* stored(other), ["t1:FINISHED", "t2:FINISHED"])
    }).pipe(Effect.provide(memory)))

  it.scoped("an add the store cannot write fails with OutboxError and queues nothing; the next add is stored", () =>
    Effect.gen(function*() {
      let full = true
      const failing = Layer.succeed(
        Outbox.OutboxStore,
        Outbox.OutboxStore.of({
          open: () =>
            Effect.succeed({
              location: "/disk",
              initial: [],
              setAside: 0,
              append: (records) =>
                full
                  ? Effect.fail(
                    new Outbox.OutboxError({
                      reason: "Unwritable",
                      path: `/disk/${records[0]!.sequence}`,
                      operation: "cannot write",
                      cause: new Error("ENOSPC")
                    })
                  )
                  : Effect.void,
              remove: () => Effect.void
            })
        })
      )
      const outbox = yield* Outbox.make({ deliver: master(Number.POSITIVE_INFINITY).deliver, ...owner }).pipe(
        Effect.provide(failing)
      )
      const error = yield* Effect.flip(outbox.add(report("t1", "FINISHED")))
      assert.strictEqual(error.reason, "Unwritable")
      assert.strictEqual(error.message, "outbox /disk/1: cannot write: ENOSPC")
      assert.strictEqual(yield* outbox.size, 0)
      full = false
      yield* outbox.add(report("t1", "FINISHED"))
      assert.deepStrictEqual(yield* outbox.pending, [report("t1", "FINISHED")])
    }))

  it.scoped("adds made together are written together; adds made while a write runs share the next, in the order they came", () =>
    Effect.gen(function*() {
      const batches: Array<ReadonlyArray<number>> = []
      const gate = yield* Deferred.make<void>()
      const counting = Layer.succeed(
        Outbox.OutboxStore,
        Outbox.OutboxStore.of({
          open: () =>
            Effect.succeed({
              location: "counting",
              initial: [],
              setAside: 0,
              // The second write waits at the gate.
              append: (records) =>
                Effect.zipRight(
                  Effect.sync(() => void batches.push(records.map((r) => r.sequence))),
                  batches.length === 1 ? Deferred.await(gate) : Effect.void
                ),
              remove: () => Effect.void
            })
        })
      )
      const outbox = yield* Outbox.make({ deliver: master(Number.POSITIVE_INFINITY).deliver, ...owner }).pipe(
        Effect.provide(counting)
      )
      const addAll = (ids: ReadonlyArray<string>) =>
        Effect.forEach(ids, (id) => outbox.add(report(id, "FINISHED")), { concurrency: "unbounded", discard: true })
      // Made together: one write.
      yield* addAll(["a", "b", "c", "d"])
      assert.deepStrictEqual(batches, [[1, 2, 3, 4]])
      // One add, then three while its write waits: they share the next write, after it.
      const first = yield* Effect.fork(addAll(["e"]))
      while (batches.length < 2) yield* Effect.yieldNow()
      const rest = yield* Effect.fork(addAll(["f", "g", "h"]))
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow()
      assert.deepStrictEqual(batches, [[1, 2, 3, 4], [5]])
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* Fiber.join(rest)
      assert.deepStrictEqual(batches, [[1, 2, 3, 4], [5], [6, 7, 8]])
      assert.deepStrictEqual(
        (yield* outbox.pending).map((r) => r.taskId),
        ["a", "b", "c", "d", "e", "f", "g", "h"]
      )
    }))

  it.effect("an add after the outbox closed fails with Closed, never hangs", () =>
    Effect.gen(function*() {
      const outbox = yield* Effect.scoped(Outbox.make({ deliver: master(0).deliver, ...owner }))
      const error = yield* Effect.flip(outbox.add(report("late", "FINISHED")))
      assert.strictEqual(error.reason, "Closed")
    }).pipe(Effect.provide(Outbox.layerMemory)))

  it.effect(
    "a batch: each report's result is its own (taken, refused for good and dropped, NODE_NOT_REGISTERED kept and " +
      "delivered again); a task's reports never share a batch, and reach the master in order",
    () =>
      Effect.gen(function*() {
        // Stored while the master is out of reach: the next outbox finds them all queued.
        yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({ deliver: () => Effect.never, ...owner })
          for (const r of [report("a", "RUNNING"), report("a", "FINISHED"), report("bad", "FINISHED")]) {
            yield* outbox.add(r)
          }
          yield* outbox.add(report("lost", "FINISHED"))
          yield* outbox.add(report("c", "FINISHED"))
        }))
        const notMember = new GrpcError.GrpcError({
          code: grpc.status.FAILED_PRECONDITION,
          details: "node not registered",
          service: "task",
          method: "ReportStatuses",
          errorInfo: { domain: "worker.v1", reason: "NODE_NOT_REGISTERED", metadata: {} }
        })
        const batches: Array<ReadonlyArray<string>> = []
        const received: Array<string> = []
        const alone: Array<string> = []
        const outbox = yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({
            ...owner,
            deliver: (r) => Effect.sync(() => void (alone.push(r.key), received.push(r.key))),
            deliverAll: (reports) =>
              Effect.sync(() => {
                batches.push(reports.map((r) => r.key))
                return reports.map((r): TaskSource.ReportResult => {
                  if (r.taskId === "bad") return Either.left(invalid)
                  if (r.taskId === "lost") return Either.left(notMember)
                  received.push(r.key)
                  return Either.void
                })
              })
          })
          yield* TestClock.adjust(0)
          yield* outbox.flush
          return outbox
        }))
        // a:FINISHED waits for the next batch, where it is alone: a report alone goes on its own.
        assert.deepStrictEqual(batches, [["a:RUNNING", "bad:FINISHED", "lost:FINISHED", "c:FINISHED"]])
        assert.deepStrictEqual(alone, ["lost:FINISHED", "a:FINISHED"])
        assert.deepStrictEqual(received, ["a:RUNNING", "c:FINISHED", "lost:FINISHED", "a:FINISHED"])
        assert.deepStrictEqual(yield* outbox.stats, { delivered: 4, rejected: 1, retries: 1, setAside: 0 })
        assert.deepStrictEqual(yield* stored(), [])
      }).pipe(Effect.provide(memory))
  )

  it.effect("a batch call that fails is tried again whole; one refused for good as a whole goes one report a call", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const outbox = yield* Outbox.make({ deliver: () => Effect.never, ...owner })
        yield* outbox.add(report("a", "FINISHED"))
        yield* outbox.add(report("b", "FINISHED"))
      }))
      let calls = 0
      const received: Array<string> = []
      const outbox = yield* Outbox.make({
        ...owner,
        deliver: (r) => Effect.sync(() => void received.push(r.key)),
        // Down once, then a refusal of the call itself, which says nothing of each report.
        deliverAll: () => Effect.suspend(() => Effect.fail(calls++ === 0 ? unavailable : invalid))
      })
      yield* TestClock.adjust(0)
      yield* TestClock.adjust("1 minute")
      yield* outbox.flush
      assert.strictEqual(calls, 2)
      assert.deepStrictEqual(received, ["a:FINISHED", "b:FINISHED"])
      assert.deepStrictEqual(yield* outbox.stats, { delivered: 2, rejected: 0, retries: 1, setAside: 0 })
    }).pipe(Effect.scoped, Effect.provide(memory)))
})

describe("OutboxStore.holdOwner", () => {
  it.effect("two holds of one owner at once, the scheduler switching fibers often: one holds it, one is Locked", () =>
    Effect.gen(function*() {
      const open = new Set<string>()
      const owner: OutboxStore.Owner = { node: "n1", master: "10.0.0.1:9666" }
      const hold = Effect.exit(OutboxStore.holdOwner(open, owner, "memory:n1"))
      const both = yield* Effect.all([hold, hold], { concurrency: 2 }).pipe(Effect.withMaxOpsBeforeYield(16))
      assert.strictEqual(both.filter(Exit.isSuccess).length, 1)
      const refused = both.find(Exit.isFailure)
      assert.isTrue(
        refused !== undefined && Exit.isFailure(refused) && String(refused.cause).includes("open already"),
        String(refused)
      )
      assert.strictEqual(open.size, 1, "the one that holds it keeps it held")
    }).pipe(Effect.scoped))

  it.effect("the owner is free again when the scope that held it closes", () =>
    Effect.gen(function*() {
      const open = new Set<string>()
      const owner: OutboxStore.Owner = { node: "n1", master: "10.0.0.1:9666" }
      yield* Effect.scoped(OutboxStore.holdOwner(open, owner, "memory:n1"))
      assert.strictEqual(open.size, 0)
      yield* Effect.scoped(OutboxStore.holdOwner(open, owner, "memory:n1"))
    }))
})
