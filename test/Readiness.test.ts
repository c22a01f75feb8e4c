import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as TestClock from "effect/TestClock"
import * as Connection from "../src/Connection.js"
import * as ConnectionState from "../src/ConnectionState.js"
import * as Readiness from "../src/Readiness.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { EchoClient } from "./fixtures/echo.js"

const services = { echo: EchoClient }

const noJitter = Effect.withRandom(Random.fixed([0.5]))

const world = (
  network: SimulatedNetwork.Options = {},
  options: Partial<Connection.Options<typeof services, any>> = {}
) =>
  Connection.layer({ address: "master:9666", services, readiness: { probe: SimulatedNetwork.probe }, ...options }).pipe(
    Layer.provideMerge(SimulatedNetwork.layer(network))
  )

const readyState = (state: ConnectionState.ConnectionState) =>
  state._tag === "Ready" ? { generation: state.generation, since: state.since } : state._tag

// A READY simulated channel to run the checks on directly.
const readyTarget = Effect.gen(function*() {
  const [network, dialer] = yield* SimulatedNetwork.make({ connectLatency: 0 })
  const channel = yield* dialer.dial({ address: "master:9666", credentials: undefined as never, channelOptions: {} })
  yield* channel.connect
  yield* TestClock.adjust(0)
  const target: Readiness.Target = { generation: 1, channel, clients: {}, services: [] }
  return { network, target }
})

describe("Readiness (virtual time)", () => {
  it.scoped("all checks pass at once: ready in the first round, no stabilization sleep", () =>
    Effect.gen(function*() {
      const { network, target } = yield* readyTarget
      const report = yield* Readiness.run(target, {
        ...Readiness.defaults,
        probe: SimulatedNetwork.probe
      }).pipe(Effect.provideService(SimulatedNetwork.SimulatedNetwork, network))
      assert.strictEqual(report.rounds, 1)
      assert.isTrue(Duration.equals(report.elapsed, Duration.zero))
      assert.strictEqual(Readiness.failingCheck(report), undefined)
      assert.strictEqual(yield* TestClock.currentTimeMillis, 0)
    }))

  it.scoped("the probe fails for 3 s then answers: ready at the first 500 ms round after", () =>
    Effect.gen(function*() {
      const { network, target } = yield* readyTarget
      yield* SubscriptionRef.set(network.master, "not-serving")
      const rounds: Array<Readiness.ReadinessReport> = []
      const fiber = yield* Readiness.run(target, {
        ...Readiness.defaults,
        probe: SimulatedNetwork.probe,
        onRound: (report) => Effect.sync(() => rounds.push(report))
      }).pipe(Effect.provideService(SimulatedNetwork.SimulatedNetwork, network), Effect.fork)
      yield* TestClock.adjust("3200 millis")
      yield* SubscriptionRef.set(network.master, "serving")
      yield* TestClock.adjust("299 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      assert.strictEqual(report.rounds, 8)
      assert.strictEqual(Duration.toMillis(report.elapsed), 3500)
      assert.deepStrictEqual(rounds.map((r) => Duration.toMillis(r.elapsed)), [
        0,
        500,
        1000,
        1500,
        2000,
        2500,
        3000,
        3500
      ])
      assert.deepStrictEqual(
        rounds[0]!.checks.probe,
        Readiness.CheckResult.Failed({ message: "health status NOT_SERVING" })
      )
    }))

  it.scoped("the probe never answers: ReadinessTimeout at exactly 30 s, naming the probe", () =>
    Effect.gen(function*() {
      const { network, target } = yield* readyTarget
      yield* SubscriptionRef.set(network.master, "silent")
      const fiber = yield* Readiness.run(target, { ...Readiness.defaults, probe: SimulatedNetwork.probe }).pipe(
        Effect.provideService(SimulatedNetwork.SimulatedNetwork, network),
        Effect.flip,
        Effect.fork
      )
      yield* TestClock.adjust("29999 millis")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 millis")
      const failure = yield* Fiber.join(fiber)
      assert.strictEqual(failure._tag, "ReadinessTimeout")
      const timeout = failure as Readiness.ReadinessTimeout
      assert.strictEqual(Readiness.failingCheck(timeout.report), "probe")
      assert.strictEqual(Duration.toMillis(timeout.report.elapsed), 30_000)
      // Each round waits out the 2 s probe timeout, then the next starts at once: 14 done, the 15th cut short.
      assert.strictEqual(timeout.report.rounds, 14)
      assert.include(timeout.message, "probe: no answer within 2s")
    }))

  it.scoped("the channel and registration checks fail with their own errors", () =>
    Effect.gen(function*() {
      const { target } = yield* readyTarget
      const missing = yield* Effect.flip(Readiness.registered({ ...target, services: ["task"] }))
      assert.deepStrictEqual(missing.missing, ["task"])
      const [, dialer] = yield* SimulatedNetwork.make()
      const idle = yield* dialer.dial({ address: "master:9666", credentials: undefined as never, channelOptions: {} })
      const notReady = yield* Effect.flip(Readiness.channelReady({ ...target, channel: idle }))
      assert.strictEqual(notReady.state, "IDLE")
    }))

  it.effect("the connection stays Connecting through readiness, then is Ready with the report", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* SubscriptionRef.set(network.master, "not-serving")
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Connecting")
      const status = yield* conn.readiness.status
      assert.isFalse(status.ready)
      assert.strictEqual(Readiness.failingCheck(status.report), "probe")
      yield* SubscriptionRef.set(network.master, "serving")
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(readyState(yield* conn.state), { generation: 1, since: 2050 })
      const ready = yield* conn.readiness.status
      assert.isTrue(ready.ready)
      assert.strictEqual(ready.report.rounds, 5)
    }).pipe(Effect.provide(world())))

  it.effect("a readiness timeout is a failed attempt: logged, then the next attempt after the backoff", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* SubscriptionRef.set(network.master, "silent")
      yield* TestClock.adjust("30050 millis")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Reconnecting")
      const error = (state as Extract<typeof state, { _tag: "Reconnecting" }>).lastError
      assert.strictEqual(error.reason, "NotReady")
      assert.include(error.message, "probe")
      assert.strictEqual(yield* network.dials, 1)
      // The next attempt dials a new channel after the 500 ms backoff.
      yield* TestClock.adjust("500 millis")
      assert.strictEqual(yield* network.dials, 2)
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("a lookup made during the readiness window waits with the 90 s deadline and succeeds", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* TestClock.adjust("1 second")
      yield* network.cut
      yield* SubscriptionRef.set(network.master, "not-serving")
      yield* TestClock.adjust("1 second")
      yield* network.restore
      yield* TestClock.adjust("1 second")
      // The new channel is READY; readiness holds the state at Reconnecting.
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      const lookup = yield* Effect.fork(Effect.zip(conn.client("echo"), TestClock.currentTimeMillis))
      yield* TestClock.adjust("40 seconds")
      yield* SubscriptionRef.set(network.master, "serving")
      yield* TestClock.adjust("30 seconds")
      const [client, at] = yield* Fiber.join(lookup)
      assert.instanceOf(client, EchoClient)
      assert.isAbove(at - 3000, 15_000)
      assert.isBelow(at - 3000, 90_000)
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("the periodic probe turns a silent master into a reconnection", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* TestClock.adjust("1 second")
      yield* SubscriptionRef.set(network.master, "silent")
      // The channel stays READY; the probe at 30.05 s gets no answer within 2 s.
      yield* TestClock.adjust("31049 millis")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      yield* TestClock.adjust("1 millis")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Reconnecting")
      assert.strictEqual((state as Extract<typeof state, { _tag: "Reconnecting" }>).lastError.reason, "ProbeFailed")
      const status = yield* conn.readiness.status
      assert.isFalse(status.ready)
      assert.strictEqual(Readiness.failingCheck(status.report), "probe")
      yield* SubscriptionRef.set(network.master, "serving")
      yield* TestClock.adjust("35 seconds")
      assert.deepStrictEqual((yield* conn.state)._tag, "Ready")
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("Readiness.await returns the report once ready, and fails after the bound with the failing check", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      yield* SubscriptionRef.set(network.master, "not-serving")
      const waiting = yield* Effect.fork(Effect.flip(Readiness.await))
      yield* TestClock.adjust("30 seconds")
      const timeout = yield* Fiber.join(waiting)
      assert.strictEqual(Readiness.failingCheck(timeout.report), "probe")
      yield* SubscriptionRef.set(network.master, "serving")
      const ready = yield* Effect.fork(Readiness.await)
      yield* TestClock.adjust("5 seconds")
      const report = yield* Fiber.join(ready)
      assert.strictEqual(Readiness.failingCheck(report), undefined)
      // Once ready it answers at once.
      const again = yield* Readiness.await
      assert.deepStrictEqual(again, report)
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("the readiness stream shows every round and the loss", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const readiness = yield* Readiness.Readiness
      const seen = yield* readiness.changes.pipe(Stream.take(4), Stream.runCollect, Effect.fork)
      yield* TestClock.adjust("1 second")
      yield* network.cut
      yield* TestClock.adjust(0)
      const statuses = Array.from(yield* Fiber.join(seen))
      assert.deepStrictEqual(statuses.map((s) => s.ready), [false, false, true, false])
      assert.strictEqual(Readiness.failingCheck(statuses[3]!.report), "channel")
    }).pipe(Effect.provide(world()), noJitter))
})

describe("Rejected credentials (virtual time)", () => {
  it.effect("a master that starts refusing the worker's credentials while it is Ready: Rejected at the next check, no redial", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      yield* SubscriptionRef.set(network.master, "rejecting")
      yield* conn.check
      yield* TestClock.adjust("10 millis")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Rejected")
      assert.strictEqual((state as Extract<typeof state, { _tag: "Rejected" }>).lastError.reason, "Rejected")
      assert.strictEqual(yield* network.dials, 1)
      // The readiness report blames the probe that was refused, not the channel.
      assert.strictEqual(Readiness.failingCheck((yield* conn.readiness.status).report), "probe")
    }).pipe(Effect.provide(world()), noJitter))

  it.effect("a master that refuses the worker's credentials: Rejected, lookups fail at once, a slow retry, then Ready", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* SubscriptionRef.set(network.master, "rejecting")
      yield* TestClock.adjust("1 second")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Rejected")
      const rejected = state as Extract<typeof state, { _tag: "Rejected" }>
      // Exponential from 30 s: the first retry 30 s after the refusal (jitter pinned to 1.0).
      assert.strictEqual(rejected.retryAt - rejected.since, 30_000)
      assert.strictEqual(rejected.lastError.reason, "Rejected")
      const lookup = yield* Effect.flip(conn.client("echo"))
      assert.strictEqual(lookup.reason, "Rejected")
      assert.isTrue(Duration.equals(lookup.waited, Duration.zero))
      // No hammering: one dial for the refused attempt, none until the retry.
      assert.strictEqual(yield* network.dials, 1)
      yield* TestClock.adjust("25 seconds")
      assert.strictEqual(yield* network.dials, 1)
      yield* SubscriptionRef.set(network.master, "serving")
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
    }).pipe(Effect.provide(world()), noJitter))
})
