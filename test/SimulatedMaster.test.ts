import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Connection from "../src/Connection.js"
import type * as ConnectionState from "../src/ConnectionState.js"
import { GrpcError } from "../src/GrpcError.js"
import * as TaskSource from "../src/TaskSource.js"
import * as MasterState from "../src/testing/internal/masterState.js"
import * as SimulatedMaster from "../src/testing/SimulatedMaster.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { MasterLink } from "./fixtures/masterLink.js"

// One fetch that does not wait, for one task: the first task it brought, if any.
const fetchOne = (source: TaskSource.TaskSource) =>
  Effect.map(
    source.fetch({ wait: Duration.zero, max: 1, running: 0 }),
    (fetched) => Option.fromNullable(fetched.tasks[0])
  )

// Connected at 50 ms (the simulated connect latency); the probe passes in the first readiness round.
const world = (master: SimulatedMaster.Options = {}, network: SimulatedNetwork.Options = {}) =>
  SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "n1" }).pipe(
    Layer.provideMerge(
      MasterLink.layer({
        address: "master:9666",
        readiness: { probe: SimulatedNetwork.probe }
      })
    ),
    Layer.provideMerge(SimulatedNetwork.layer(network)),
    Layer.provideMerge(SimulatedMaster.layer(master))
  )

// Backoff jitter factor exactly 1: after a cut (host unreachable), reconnection attempts 250 ms apart.
const noJitter = Effect.withRandom(Random.fixed([0.5]))

const services = Effect.all({
  source: TaskSource.TaskSource,
  master: SimulatedMaster.SimulatedMaster,
  network: SimulatedNetwork.SimulatedNetwork,
  conn: MasterLink
})

const untilState = (conn: Connection.Connection, tag: ConnectionState.ConnectionState["_tag"]) =>
  conn.changes.pipe(Stream.filter((state) => state._tag === tag), Stream.runHead)

const isPending = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isNone)

// Collects a subscription's requests as they arrive.
const collect = <A, E>(stream: Stream.Stream<A, E>) =>
  Effect.gen(function*() {
    const received: Array<A> = []
    const fiber = yield* Effect.fork(Stream.runForEach(stream, (a) => Effect.sync(() => received.push(a))))
    return { received, fiber }
  })

// The ErrorInfo a master refuses a node it does not count as a member with.
const notRegistered = { domain: "worker.v1", reason: "NODE_NOT_REGISTERED", metadata: {} }

// A GrpcError as the status name and details a worker sees.
const grpcFailure = (error: unknown) =>
  error instanceof GrpcError ? { code: grpc.status[error.code], details: error.details } : error

describe("SimulatedMaster (virtual time)", () => {
  it.effect("fetch hands out the node's own task first, then by priority and creation order, never one task twice", () =>
    Effect.gen(function*() {
      const { master, source } = yield* services
      const a = yield* master.enqueue({ payload: `{"n":"a"}` })
      const b = yield* master.enqueue({ payload: `{"n":"b"}`, priority: 5 })
      const c = yield* master.enqueue({ payload: `{"n":"c"}`, priority: 5 })
      yield* master.enqueue({ payload: `{"n":"d"}`, node: "n2" })
      const e = yield* master.enqueue({ payload: `{"n":"e"}`, priority: -1, node: "n1" })

      // The first calls (a node fetches once registered) wait in the lookup for the connection: answered when it is
      // Ready, at 50 ms.
      const first = yield* Effect.fork(Effect.zipRight(source.register(1), fetchOne(source)))
      yield* TestClock.adjust("49 millis")
      assert.isTrue(yield* isPending(first))
      yield* TestClock.adjust("1 millis")
      const own = yield* Fiber.join(first)
      assert.deepStrictEqual(own, Option.some({ id: e, payload: `{"n":"e"}`, priority: -1, createdAt: 0 }))

      const rest: Array<string | undefined> = []
      for (let i = 0; i < 4; i++) rest.push(Option.getOrUndefined(yield* fetchOne(source))?.id)
      assert.deepStrictEqual(rest, [b, c, a, undefined])

      const info = yield* master.task(b)
      assert.deepStrictEqual([info.status, info.node, info.handedOut], ["ASSIGNED", "n1", 1])
      assert.deepStrictEqual(info.history.map((h) => [h.status, h.at, h.node]), [["PENDING", 0, undefined], [
        "ASSIGNED",
        50,
        "n1"
      ]])
      // Another node's task stays with it.
      assert.deepStrictEqual((yield* master.tasks).map((t) => [t.status, t.handedOut]), [
        ["ASSIGNED", 1],
        ["ASSIGNED", 1],
        ["ASSIGNED", 1],
        ["PENDING", 0],
        ["ASSIGNED", 1]
      ])

      // Many fetches at once: each task handed out exactly once.
      const ids = new Set<string>()
      for (let i = 0; i < 20; i++) ids.add(yield* master.enqueue({ payload: "{}", priority: i % 3 }))
      const got = yield* Effect.all(Array.from({ length: 30 }, () => fetchOne(source)), { concurrency: "unbounded" })
      const handed = got.flatMap((task) => Option.isSome(task) ? [task.value.id] : [])
      assert.strictEqual(handed.length, 20)
      assert.deepStrictEqual(new Set(handed), ids)
    }).pipe(Effect.provide(world())))

  it.effect("a task handed out maxHandOuts times and never confirmed ends ERROR, with the reason; a bad maxHandOuts is refused", () =>
    Effect.gen(function*() {
      const { master, source } = yield* services
      const id = yield* master.enqueue({ payload: "{}" })
      yield* TestClock.adjust("50 millis")
      yield* source.register(1)
      // Fetched, never confirmed (the node could not take the reply): out again after each redeliverAfter.
      for (let n = 1; n <= 3; n++) {
        assert.strictEqual(Option.getOrUndefined(yield* fetchOne(source))?.id, id)
        assert.strictEqual((yield* master.task(id)).handedOut, n)
        yield* TestClock.adjust("1 second")
      }
      assert.isTrue(Option.isNone(yield* fetchOne(source)), "not handed out a fourth time")
      const given = yield* master.task(id)
      assert.strictEqual(given.status, "ERROR")
      assert.strictEqual(
        given.history.at(-1)?.error,
        "handed out 3 times to node n1 and never confirmed: the node cannot take it"
      )

      const refused = yield* Effect.flip(SimulatedMaster.make({ maxHandOuts: 0 }))
      assert.strictEqual(refused.reason, "InvalidOption")
      assert.include(refused.message, "maxHandOuts")
    }).pipe(Effect.provide(world({ redeliverAfter: "1 second", maxHandOuts: 3 }))))

  it.effect("a retried fetch answered again is not one more hand-out: only distinct fetches count toward maxHandOuts", () =>
    Effect.gen(function*() {
      const state = yield* MasterState.make({ redeliverAfter: "1 second", maxHandOuts: 2 })
      yield* state.register({ node: "n1", name: "n1", maxRunners: 1, generation: 1 })
      const id = yield* state.enqueue({ payload: "{}" })
      const fetched = (fetchId: string) => Effect.map(state.fetch({ node: "n1", fetchId }), (tasks) => tasks[0]?.id)
      // One fetch, retried five times (its answers lost): the same task each time, one delivery.
      for (let i = 0; i < 5; i++) {
        assert.strictEqual(yield* fetched("a/1"), id)
        yield* TestClock.adjust("1 second")
      }
      assert.deepStrictEqual((yield* state.task(id)).status, "ASSIGNED")
      // A new fetch after redeliverAfter: the second delivery; the next distinct one finds it given up.
      assert.strictEqual(yield* fetched("a/2"), id)
      yield* TestClock.adjust("1 second")
      assert.isUndefined(yield* fetched("a/3"))
      const given = yield* state.task(id)
      assert.strictEqual(given.status, "ERROR")
      assert.strictEqual(given.handedOut, 6)
      assert.include(given.history.at(-1)?.error ?? "", "handed out 2 times")
    }))

  it.effect("report is idempotent by its key and only moves the status forward; another node's task is refused", () =>
    Effect.gen(function*() {
      const { master, source } = yield* services
      const id = yield* master.enqueue({ payload: "{}" })
      const other = yield* master.enqueue({ payload: "{}", node: "n2" })
      yield* TestClock.adjust("50 millis")
      yield* source.register(1)
      yield* fetchOne(source)
      const send = (status: TaskSource.ReportedStatus, key: string, taskId = id) =>
        source.report({ key, taskId, status, error: status === "ERROR" ? "boom" : "" })

      yield* TestClock.adjust("950 millis")
      yield* send("RUNNING", "k1")
      yield* TestClock.adjust("500 millis")
      yield* send("RUNNING", "k1") // duplicate
      yield* send("FINISHED", "k1") // the key was applied: a duplicate, whatever it says
      yield* TestClock.adjust("500 millis")
      yield* send("FINISHED", "k2")
      yield* TestClock.adjust("500 millis")
      yield* send("RUNNING", "k3") // stale
      yield* send("ERROR", "k4") // stale
      yield* send("FINISHED", "k2") // duplicate

      const info = yield* master.task(id)
      assert.strictEqual(info.status, "FINISHED")
      assert.deepStrictEqual(info.history.map((h) => [h.status, h.at, h.node]), [
        ["PENDING", 0, undefined],
        ["ASSIGNED", 50, "n1"],
        ["RUNNING", 1000, "n1"],
        ["FINISHED", 2000, "n1"]
      ])

      const refused = yield* Effect.flip(send("RUNNING", "k5", other))
      assert.deepStrictEqual(grpcFailure(refused), {
        code: "FAILED_PRECONDITION",
        details: `task ${other} was not handed out to node n1`
      })
      assert.strictEqual((yield* master.task(other)).status, "PENDING")
    }).pipe(Effect.provide(world())))

  it.effect("a fetch made while the link is cut waits in the lookup (Reconnecting) and gets the task at 2250 ms", () =>
    Effect.gen(function*() {
      const { conn, master, network, source } = yield* services
      yield* TestClock.adjust("1 second")
      yield* source.register(1)
      yield* network.cut
      yield* untilState(conn, "Reconnecting")
      const fetch = yield* Effect.fork(fetchOne(source))
      yield* TestClock.adjust("500 millis")
      const id = yield* master.enqueue({ payload: `{"during":"outage"}` })
      yield* TestClock.adjust("500 millis")
      yield* network.restore
      // Attempts every 300 ms from 1000 fail (host unreachable after 50 ms, then 250 ms): the one at 2200 connects at 2250.
      yield* TestClock.adjust("249 millis")
      assert.isTrue(yield* isPending(fetch))
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      yield* TestClock.adjust("1 millis")
      const task = yield* Fiber.join(fetch)
      assert.strictEqual(Option.getOrUndefined(task)?.id, id)
      const state = yield* conn.state
      assert.deepStrictEqual(state._tag === "Ready" && [state.generation, state.since], [2, 2250])
      assert.deepStrictEqual((yield* master.task(id)).history.map((h) => [h.status, h.at]), [
        ["PENDING", 1500],
        ["ASSIGNED", 2250]
      ])
    }).pipe(Effect.provide(world({}, { refusalLatency: "50 millis" })), noJitter))

  it.effect("a fetch during an outage longer than three lookup waits fails with ClientUnavailable at 275 s", () =>
    Effect.gen(function*() {
      const { conn, network, source } = yield* services
      yield* TestClock.adjust("1 second")
      yield* network.cut
      yield* untilState(conn, "Reconnecting")
      const fetch = yield* Effect.fork(Effect.flip(fetchOne(source)))
      // Three lookups of 90 s (reconnecting), 2 s apart.
      yield* TestClock.adjust("273999 millis")
      assert.isTrue(yield* isPending(fetch))
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(fetch)
      assert.strictEqual(error._tag, "ClientUnavailable")
      assert.deepStrictEqual(error._tag === "ClientUnavailable" && [error.reason, error.service], ["Timeout", "task"])
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("register records the node and its generation; subscribe delivers a cancel, and fails UNAVAILABLE on a cut", () =>
    Effect.gen(function*() {
      const { conn, master, network, source } = yield* services
      yield* TestClock.adjust("50 millis")
      const unknown = yield* Effect.flip(Stream.runDrain(source.subscribe(1)))
      assert.deepStrictEqual(grpcFailure(unknown), {
        code: "FAILED_PRECONDITION",
        details: "node n1 is not registered; call Register first"
      })
      assert.deepStrictEqual(unknown instanceof GrpcError && unknown.errorInfo, notRegistered)

      const { incarnation } = yield* source.register(1)
      yield* TestClock.adjust("950 millis")
      assert.deepStrictEqual(yield* source.heartbeat(3), { member: true, incarnation })
      assert.deepStrictEqual(yield* master.nodes, [{
        key: "n1",
        name: "n1",
        online: true,
        generation: 1,
        maxRunners: 20,
        running: 3,
        registeredAt: 50,
        lastHeartbeat: 1000
      }])

      const sub = yield* collect(source.subscribe(1))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* master.subscriptions, 1)
      const id = yield* master.enqueue({ payload: "{}" })
      yield* fetchOne(source)
      assert.strictEqual(yield* master.cancel(id), "Notified")
      yield* TestClock.adjust(0)
      assert.deepStrictEqual(sub.received, [{ _tag: "CancelTask", taskId: id }])
      assert.strictEqual((yield* master.task(id)).status, "CANCELLED")

      yield* TestClock.adjust("1 second")
      yield* network.cut
      const dropped = yield* Effect.flip(Fiber.join(sub.fiber))
      assert.deepStrictEqual(grpcFailure(dropped), { code: "UNAVAILABLE", details: "connection reset" })
      assert.strictEqual(yield* TestClock.currentTimeMillis, 2000)
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      assert.strictEqual(yield* master.subscriptions, 0)
      // Silent for two heartbeat intervals (15 s): offline.
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual((yield* master.nodes).map((n) => n.online), [false])
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("after a reconnection subscribe(2) works, and the end of a generation-1 subscription leaves it", () =>
    Effect.gen(function*() {
      const { conn, master, network, source } = yield* services
      yield* TestClock.adjust("50 millis")
      yield* source.register(1)
      const gen1 = yield* collect(source.subscribe(1))
      yield* TestClock.adjust("950 millis")
      assert.strictEqual(yield* master.subscriptions, 1)

      yield* network.cut
      yield* untilState(conn, "Reconnecting")
      assert.strictEqual(
        (grpcFailure(yield* Effect.flip(Fiber.join(gen1.fiber))) as { code: string }).code,
        "UNAVAILABLE"
      )
      assert.strictEqual(yield* master.subscriptions, 0)
      // A generation-1 subscribe asked for as the link dropped: its lookup waits for the next connection.
      const late = yield* collect(source.subscribe(1))
      yield* TestClock.adjust("1 second")
      yield* network.restore
      yield* TestClock.adjust("650 millis")
      const state = yield* conn.state
      assert.deepStrictEqual(state._tag === "Ready" && state.generation, 2)
      assert.strictEqual(yield* master.subscriptions, 1)

      yield* source.register(2)
      const gen2 = yield* collect(source.subscribe(2))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* master.subscriptions, 2)
      const cancelled = Effect.gen(function*() {
        const id = yield* master.enqueue({ payload: "{}" })
        yield* fetchOne(source)
        assert.strictEqual(yield* master.cancel(id), "Notified")
        yield* TestClock.adjust(0)
        return id
      })
      // Both generations are open: the cancel goes to the newest.
      const first = yield* cancelled
      assert.deepStrictEqual(gen2.received, [{ _tag: "CancelTask", taskId: first }])

      // The generation-1 stream ends after generation 2 subscribed: only its own entry goes.
      yield* Fiber.interrupt(late.fiber)
      assert.strictEqual(yield* master.subscriptions, 1)
      assert.deepStrictEqual((yield* master.nodes).map((n) => [n.key, n.generation]), [["n1", 2]])
      const second = yield* cancelled
      assert.deepStrictEqual(gen2.received.map((r) => r.taskId), [first, second])
      assert.deepStrictEqual(late.received, [])
      assert.deepStrictEqual(gen1.received, [])
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("failure rate 1 fails every call with UNAVAILABLE and changes nothing; rate 0 heals", () =>
    Effect.gen(function*() {
      const { master, source } = yield* services
      const id = yield* master.enqueue({ payload: "{}" })
      yield* TestClock.adjust("50 millis")
      yield* master.setFailureRate(1)
      const failures = yield* Effect.all([
        Effect.flip(source.register(1)),
        Effect.flip(source.heartbeat(0)),
        Effect.flip(fetchOne(source)),
        Effect.flip(source.report({ key: "k", taskId: id, status: "RUNNING", error: "" }))
      ])
      assert.deepStrictEqual(failures.map(grpcFailure), [
        { code: "UNAVAILABLE", details: "Register failed on purpose (failureRate 1)" },
        { code: "UNAVAILABLE", details: "SendHeartbeat failed on purpose (failureRate 1)" },
        { code: "UNAVAILABLE", details: "FetchTask failed on purpose (failureRate 1)" },
        { code: "UNAVAILABLE", details: "ReportStatus failed on purpose (failureRate 1)" }
      ])
      assert.deepStrictEqual(yield* master.nodes, [])
      assert.strictEqual((yield* master.task(id)).handedOut, 0)

      yield* master.setFailureRate(0)
      yield* source.register(1)
      assert.strictEqual(Option.getOrUndefined(yield* fetchOne(source))?.id, id)
      assert.strictEqual((yield* Effect.flip(master.setFailureRate(1.5))).reason, "InvalidOption")
    }).pipe(Effect.provide(world())))
  it.effect("forget ends the node's subscription and refuses its fetch with NODE_NOT_REGISTERED until it registers again", () =>
    Effect.gen(function*() {
      const { master, source } = yield* services
      yield* TestClock.adjust("50 millis")
      const { incarnation } = yield* source.register(1)
      assert.isNotEmpty(incarnation)
      const given = yield* master.enqueue({ payload: `{"n":"given"}` })
      assert.strictEqual(Option.getOrUndefined(yield* fetchOne(source))?.id, given)
      const own = yield* master.enqueue({ payload: `{"n":"own"}`, node: "n1" })
      const sub = yield* collect(source.subscribe(1))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* master.subscriptions, 1)

      assert.isTrue(yield* master.forget("n1"))
      const ended = yield* Effect.flip(Fiber.join(sub.fiber))
      assert.deepStrictEqual(grpcFailure(ended), {
        code: "FAILED_PRECONDITION",
        details: "node n1 is not registered; call Register first"
      })
      assert.deepStrictEqual(ended instanceof GrpcError && [ended.method, ended.errorInfo], [
        "Subscribe",
        notRegistered
      ])
      assert.strictEqual(TaskSource.membershipOf(ended), "NotMember")
      assert.strictEqual(yield* master.subscriptions, 0)
      assert.deepStrictEqual(yield* master.nodes, [])

      const fetched = yield* Effect.flip(fetchOne(source))
      assert.deepStrictEqual(grpcFailure(fetched), grpcFailure(ended))
      assert.deepStrictEqual(fetched instanceof GrpcError && [fetched.method, fetched.errorInfo], [
        "FetchTask",
        notRegistered
      ])
      assert.strictEqual(TaskSource.membershipOf(fetched), "NotMember")
      assert.deepStrictEqual(yield* source.heartbeat(0), { member: false, incarnation })
      assert.isFalse(yield* master.forget("n1"))
      assert.isFalse(yield* master.forget("ghost"))

      // Its tasks stay as they were; registered again, it fetches its own.
      assert.deepStrictEqual((yield* master.tasks).map((t) => [t.id, t.status, t.node]), [
        [given, "ASSIGNED", "n1"],
        [own, "PENDING", "n1"]
      ])
      assert.deepStrictEqual(yield* source.register(1), { incarnation })
      assert.deepStrictEqual(yield* source.heartbeat(0), { member: true, incarnation })
      assert.strictEqual(Option.getOrUndefined(yield* fetchOne(source))?.id, own)
      const again = yield* collect(source.subscribe(1))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* master.cancel(own), "Notified")
      yield* TestClock.adjust(0)
      assert.deepStrictEqual(again.received, [{ _tag: "CancelTask", taskId: own }])
      assert.deepStrictEqual(sub.received, [])

      // The detail is the master's word on membership only: another FAILED_PRECONDITION comes without it.
      const other = yield* master.enqueue({ payload: "{}", node: "n2" })
      const notHandedOut = yield* Effect.flip(source.report({ key: "k", taskId: other, status: "RUNNING", error: "" }))
      assert.deepStrictEqual(notHandedOut instanceof GrpcError && [notHandedOut.code, notHandedOut.errorInfo], [
        grpc.status.FAILED_PRECONDITION,
        undefined
      ])
    }).pipe(Effect.provide(world())))
})
