import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Metric from "effect/Metric"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import * as Connection from "../src/Connection.js"
import * as ConnectionState from "../src/ConnectionState.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as InvalidOption from "../src/InvalidOption.js"
import * as Metrics from "../src/Metrics.js"
import * as Readiness from "../src/Readiness.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { EchoClient } from "./fixtures/echo.js"

const services = { echo: EchoClient }

// A connection over a fresh simulated network, in its own scope so a test can close it.
const setup = (
  network: SimulatedNetwork.Options = {},
  options: Partial<Connection.Options<typeof services, SimulatedNetwork.SimulatedNetwork>> = {}
) =>
  Effect.gen(function*() {
    const [net, dialer] = yield* SimulatedNetwork.make(network)
    const scope = yield* Scope.make()
    const fibers = yield* Supervisor.track
    const conn = yield* Connection.make({
      address: "master:9666",
      services,
      readiness: { probe: SimulatedNetwork.probe },
      ...options
    }).pipe(
      Effect.provideService(GrpcChannel.Dialer, dialer),
      Effect.provideService(SimulatedNetwork.SimulatedNetwork, net),
      Scope.extend(scope),
      Effect.supervised(fibers)
    )
    return { net, conn, scope, fibers }
  })

// Jitter pinned to 1.0: 0.8 * (1 - 0.5) + 1.2 * 0.5.
const noJitter = Effect.withRandom(Random.fixed([0.5]))

const now = TestClock.currentTimeMillis

describe("Connection (virtual time)", () => {
  it.effect("connects at start: Connecting, then Ready with generation 1", () =>
    Effect.gen(function*() {
      const { conn } = yield* setup()
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Connecting({ attempt: 1 }))
      yield* TestClock.adjust("50 millis")
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Ready({ generation: 1, since: 50 }))
      const client = yield* conn.client("echo")
      assert.instanceOf(client, EchoClient)
    }).pipe(noJitter))

  it.effect("a network restored during a backoff is reconnected at the next attempt, with no connectivity event", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup({ refusalLatency: "50 millis" })
      yield* TestClock.adjust("1 second")
      yield* net.cut
      // Attempts every 300 ms from 1.000 (host unreachable after 50 ms, then 250 ms): the 14th starts at 4.900.
      yield* TestClock.adjust("4 seconds")
      const during = yield* conn.state
      assert.strictEqual(during._tag, "Reconnecting")
      assert.strictEqual((during as Extract<typeof during, { _tag: "Reconnecting" }>).attempt, 15)
      yield* net.restore
      // Nothing fires on restore: the attempt after the current backoff (at 5.200) finds the network.
      yield* TestClock.adjust("249 millis")
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Ready({ generation: 2, since: 5250 }))
      assert.strictEqual(yield* net.dials, 16)
      assert.strictEqual(yield* net.openChannels, 1)
    }).pipe(noJitter))

  it.effect("the reconnecting state records when the outage began and why", () =>
    Effect.gen(function*() {
      // The first attempt after the loss fails 50 ms later, not at once: the loss is the last error meanwhile.
      const { conn, net } = yield* setup({ refusalLatency: "50 millis" })
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("0 millis")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Reconnecting")
      const reconnecting = state as Extract<typeof state, { _tag: "Reconnecting" }>
      assert.strictEqual(reconnecting.since, 1000)
      assert.strictEqual(reconnecting.lastError.reason, "Lost")
      assert.include(reconnecting.lastError.message, "IDLE")
    }).pipe(noJitter))

  it.effect("a lookup that starts 1 s before a disconnect lasts through a 40 s outage and succeeds", () =>
    Effect.gen(function*() {
      // A slow handshake keeps the first attempt open for 2 s; the link is cut 1 s into it.
      const { conn, net } = yield* setup({ connectLatency: "2 seconds", refusalLatency: "2 seconds" })
      const lookup = yield* Effect.fork(Effect.zip(conn.client("echo"), now))
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("40 seconds")
      yield* net.restore
      yield* TestClock.adjust("10 seconds")
      const [client, at] = yield* Fiber.join(lookup)
      assert.instanceOf(client, EchoClient)
      // Attempts 2 s handshakes apart, then 250 ms or 3 % of the outage so far: the one at 41.216 s is READY at 43.216 s.
      assert.strictEqual(at, 43_216)
      // The original fixed 15 s wait would have given up 28.2 s earlier.
      assert.isAbove(at, 15_000)
    }).pipe(noJitter))

  it.effect("a lookup with no reconnection fails at exactly 15 s with ClientUnavailable", () =>
    Effect.gen(function*() {
      const { conn } = yield* setup({ link: "blackhole" }, { connectTimeout: "20 seconds" })
      // Counted with the connection's address, though a lookup of a Ready link carries no labels at all.
      const failures = Metrics.lookupFailures.pipe(
        Metric.tagged("reason", "Timeout"),
        Metric.tagged("address", conn.address)
      )
      const before = (yield* Metric.value(failures)).count
      const lookup = yield* Effect.fork(Effect.flip(conn.client("echo")))
      yield* TestClock.adjust("14999 millis")
      assert.isNull(yield* Fiber.poll(lookup).pipe(Effect.map((o) => o._tag === "Some" ? o : null)))
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(lookup)
      assert.strictEqual(error._tag, "ClientUnavailable")
      assert.strictEqual(error.reason, "Timeout")
      assert.strictEqual(error.service, "echo")
      assert.deepStrictEqual(error.state, ConnectionState.ConnectionState.Connecting({ attempt: 1 }))
      assert.isTrue(Duration.equals(error.waited, Duration.seconds(15)))
      assert.strictEqual((yield* Metric.value(failures)).count, before + 1)
    }))

  it.effect("a lookup while reconnecting waits 90 s, then fails naming the state it saw", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("0 millis")
      const lookup = yield* Effect.fork(Effect.flip(conn.client("echo")))
      yield* TestClock.adjust("90 seconds")
      const error = yield* Fiber.join(lookup)
      assert.strictEqual(error.reason, "Timeout")
      assert.strictEqual(error.state._tag, "Reconnecting")
      assert.isTrue(Duration.equals(error.waited, Duration.seconds(90)))
      assert.strictEqual(yield* now, 91_000)
    }).pipe(noJitter))

  it.effect("coalesced checks never tear down a READY channel", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* Effect.all(Array.from({ length: 100 }, () => conn.check), { concurrency: "unbounded" })
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Ready({ generation: 1, since: 50 }))
      assert.strictEqual(yield* net.dials, 1)
    }).pipe(noJitter))

  it.effect("checks during a reconnection start no second one, and are dropped once it succeeds", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("2 seconds")
      yield* Effect.all(Array.from({ length: 10 }, () => conn.check))
      yield* net.restore
      yield* TestClock.adjust("10 seconds")
      const ready = yield* conn.state
      assert.strictEqual(ready._tag, "Ready")
      assert.strictEqual((ready as Extract<typeof ready, { _tag: "Ready" }>).generation, 2)
      const dials = yield* net.dials
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* net.dials, dials)
      assert.strictEqual(yield* net.openChannels, 1)
    }).pipe(noJitter))

  it.effect("a blackholed link is given up when keepalive detects it, and recovered after", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.blackhole
      yield* TestClock.adjust("24999 millis")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      yield* net.restore
      yield* TestClock.adjust("3 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
    }).pipe(noJitter))

  it.effect("closing the scope leaves no fiber or channel, and fails waiting lookups with Closed", () =>
    Effect.gen(function*() {
      const { conn, net, scope, fibers } = yield* setup({ link: "down" })
      yield* TestClock.adjust("5 seconds")
      const lookup = yield* Effect.fork(Effect.flip(conn.client("echo")))
      yield* TestClock.adjust("1 second")
      assert.isNotEmpty(yield* fibers.value)
      yield* Scope.close(scope, Exit.void)
      const error = yield* Fiber.join(lookup)
      assert.strictEqual(error.reason, "Closed")
      assert.strictEqual((yield* conn.state)._tag, "Closed")
      const alive = (yield* Effect.forEach(yield* fibers.value, (fiber) => fiber.status)).filter(
        (status) => status._tag !== "Done"
      )
      assert.deepStrictEqual(alive, [])
      assert.strictEqual(yield* net.openChannels, 0)
      const closed = yield* Effect.flip(conn.client("echo"))
      assert.strictEqual(closed.reason, "Closed")
    }).pipe(noJitter))

  it.effect("a bounded reconnect schedule that gives up closes the connection with the last error", () =>
    Effect.gen(function*() {
      const { Schedule } = yield* Effect.promise(() => import("effect"))
      const { conn } = yield* setup({ link: "down" }, { reconnectSchedule: Schedule.recurs(2) })
      yield* TestClock.adjust("1 second")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Closed")
      assert.strictEqual((state as Extract<typeof state, { _tag: "Closed" }>).lastError?.reason, "HostUnreachable")
    }))

  it.effect("changes: every attempt's state once, and Closed once though closing the scope states it again", () =>
    Effect.gen(function*() {
      const { Schedule } = yield* Effect.promise(() => import("effect"))
      // Refusals 50 ms after each attempt, so the states are watched as they come, not all gone before.
      const { conn, scope } = yield* setup({ link: "down", refusalLatency: "50 millis" }, {
        reconnectSchedule: Schedule.recurs(2)
      })
      const states: Array<ConnectionState.ConnectionState> = []
      const watching = yield* conn.changes.pipe(
        Stream.runForEach((state) => Effect.sync(() => states.push(state))),
        Effect.fork
      )
      yield* TestClock.adjust("1 second")
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(watching)
      assert.deepStrictEqual(
        states.map((state) => "attempt" in state ? `${state._tag} ${state.attempt}` : state._tag),
        ["Connecting 1", "Reconnecting 2", "Reconnecting 3", "Closed"]
      )
    }))

  it.effect("transitions: an outage of many attempts is one element, a new generation another, the close one more", () =>
    Effect.gen(function*() {
      const { conn, net, scope } = yield* setup()
      const changes: Array<string> = []
      const transitions: Array<string> = []
      const name = (state: ConnectionState.ConnectionState) =>
        state._tag === "Ready"
          ? `Ready ${state.generation}`
          : "attempt" in state
          ? `${state._tag} ${state.attempt}`
          : state._tag
      const watch = (stream: Stream.Stream<ConnectionState.ConnectionState>, into: Array<string>) =>
        stream.pipe(Stream.runForEach((state) => Effect.sync(() => into.push(name(state)))), Effect.fork)
      const watchers = [yield* watch(conn.changes, changes), yield* watch(conn.transitions, transitions)]
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("20 seconds")
      yield* net.restore
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 second")
      yield* Effect.forEach(watchers, Fiber.interrupt)
      // Every attempt of the outage is a change; the outage as a whole is one transition, with its first attempt.
      assert.isAbove(changes.filter((c) => c.startsWith("Reconnecting")).length, 20)
      assert.deepStrictEqual(transitions, ["Connecting 1", "Ready 1", "Reconnecting 1", "Ready 2", "Closed"])
    }))

  it.effect("an unknown service key fails the lookup at once, naming the key", () =>
    Effect.gen(function*() {
      const { conn } = yield* setup()
      yield* TestClock.adjust("1 second")
      const error = yield* Effect.flip((conn as Connection.Connection).client("nope"))
      assert.strictEqual(error.reason, "UnknownService")
      assert.strictEqual(error.service, "nope")
    }))
})

// Every log line with its level, from the fibers forked while it is in effect.
const capturing = <A, E, R>(self: (lines: Array<readonly [string, string]>) => Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const lines: Array<readonly [string, string]> = []
    const logger = Logger.make(({ logLevel, message }) =>
      void lines.push([logLevel.label, Array.isArray(message) ? message.join(" ") : String(message)])
    )
    return self(lines).pipe(
      Effect.locally(FiberRef.currentLoggers, HashSet.make(logger)),
      Logger.withMinimumLogLevel(LogLevel.Debug)
    )
  })

const lastErrorOf = (state: ConnectionState.ConnectionState) => {
  assert.strictEqual(state._tag, "Reconnecting")
  return (state as Extract<typeof state, { _tag: "Reconnecting" }>).lastError
}

describe("Connection (virtual time): why an attempt failed, and what it waits", () => {
  const refusals: ReadonlyArray<readonly [SimulatedNetwork.Refusal, string]> = [
    ["Refused", "connection refused: simulated: connect ECONNREFUSED (master:9666)"],
    ["HostUnreachable", "host unreachable: simulated: connect EHOSTUNREACH (master:9666)"],
    ["NameNotResolved", "name not resolved: simulated: Name resolution failed (master:9666)"],
    ["TlsRefused", "TLS handshake refused: simulated: unable to verify the first certificate (master:9666)"]
  ]
  for (const [reason, message] of refusals) {
    it.effect(`a link failing new connections as ${reason}: the attempt's error is ${reason}, 50 ms after it started`, () =>
      Effect.gen(function*() {
        const { conn, net } = yield* setup({ refusalLatency: "50 millis" })
        yield* TestClock.adjust("1 second")
        yield* net.fail(reason)
        yield* TestClock.adjust("49 millis")
        assert.strictEqual(lastErrorOf(yield* conn.state).reason, "Lost")
        yield* TestClock.adjust("1 millis")
        const error = lastErrorOf(yield* conn.state)
        assert.strictEqual(error.reason, reason)
        assert.strictEqual(error.message, message)
      }).pipe(noJitter))
  }

  it.effect("by default a link failing new connections refuses them at once: the next attempt is the schedule's delay away", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.fail("Refused")
      yield* TestClock.adjust("0 millis")
      assert.deepInclude(yield* conn.state, { attempt: 2, since: 1000 })
      assert.strictEqual(lastErrorOf(yield* conn.state).reason, "Refused")
      assert.strictEqual(yield* net.dials, 2)
      // Then one attempt every 250 ms, each refused as it starts.
      yield* TestClock.adjust("1 second")
      assert.deepInclude(yield* conn.state, { attempt: 6 })
      assert.strictEqual(yield* net.dials, 6)
      // On the clock: the next attempt's delay, and no connect; and the probe interval the Ready link armed, which
      // TestClock keeps (it never removes a sleep) though nobody waits on it any more.
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* TestClock.sleeps()), [2250, 30050])
    }).pipe(noJitter))

  it.effect("a blackholed link: ConnectTimeout at exactly the connect timeout, TCP never answered", () =>
    Effect.gen(function*() {
      const { conn } = yield* setup({ link: "blackhole" })
      yield* TestClock.adjust("2999 millis")
      assert.strictEqual((yield* conn.state)._tag, "Connecting")
      yield* TestClock.adjust("1 millis")
      const error = lastErrorOf(yield* conn.state)
      assert.strictEqual(error.reason, "ConnectTimeout")
      assert.strictEqual(error.stage, "Connect")
      assert.strictEqual(error.message, "not READY within 3s: TCP never answered")
    }).pipe(noJitter))

  it.effect("a stalled master: ConnectTimeout in the HTTP/2 handshake, then attempts 0.5, 1 and 2 s after each timeout", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* SubscriptionRef.set(net.master, "stalled")
      yield* TestClock.adjust("3 seconds")
      const error = lastErrorOf(yield* conn.state)
      assert.strictEqual(error.reason, "ConnectTimeout")
      assert.strictEqual(error.stage, "Handshake")
      assert.strictEqual(error.message, "not READY within 3s: the HTTP/2 handshake never finished")
      // Attempts at 0, 3.5, 7.5 and 12.5 s: each times out after 3 s, then 0.5, 1 and 2 s.
      const dialsAt: Array<number> = []
      for (const at of [3499, 3500, 7499, 7500, 12_499, 12_500]) {
        yield* TestClock.adjust(at - (yield* now))
        dialsAt.push(yield* net.dials)
      }
      assert.deepStrictEqual(dialsAt, [1, 2, 2, 3, 3, 4])
    }).pipe(noJitter))

  it.effect("a silent master: NotReady, naming the probe", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup({}, { readiness: { probe: SimulatedNetwork.probe, bound: "2 seconds" } })
      yield* SubscriptionRef.set(net.master, "silent")
      yield* TestClock.adjust("2050 millis")
      const error = lastErrorOf(yield* conn.state)
      assert.strictEqual(error.reason, "NotReady")
      assert.strictEqual(error.check, "probe")
    }).pipe(noJitter))

  it.effect("refused for 5 s, then a stalled master: 9 s for each handshake it accepts, and the 2 s cap between, as if every failure had been costly", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup({ refusalLatency: "50 millis" })
      yield* TestClock.adjust("1 second")
      yield* net.fail("Refused")
      // Attempts every 300 ms from 1.0 s (refused after 50 ms, then 250 ms): the 17th starts at 5.8 s.
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* net.dials, 18)
      yield* SubscriptionRef.set(net.master, "stalled")
      yield* net.restore
      // The attempt at 6.1 s, after a refusal, waits three connect timeouts for its handshake: until 15.1 s.
      yield* TestClock.adjust(15_099 - (yield* now))
      assert.strictEqual(lastErrorOf(yield* conn.state).reason, "Refused")
      yield* TestClock.adjust("1 millis")
      const error = lastErrorOf(yield* conn.state)
      assert.deepInclude(error, { reason: "ConnectTimeout", stage: "Handshake" })
      assert.strictEqual(error.message, "not READY within 9s: the HTTP/2 handshake never finished")
      // The next waits the 2 s cap, at 17.1 s: in an outage its master began by refusing, it is patient too.
      yield* TestClock.adjust("1999 millis")
      assert.strictEqual(yield* net.dials, 19)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* net.dials, 20)
      yield* TestClock.adjust("8999 millis")
      assert.strictEqual(yield* net.dials, 20)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(
        lastErrorOf(yield* conn.state).message,
        "not READY within 9s: the HTTP/2 handshake never finished"
      )
    }).pipe(noJitter))

  it.effect("an outage without a refusal keeps the plain 3 s connect timeout, for an accepted connection too", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      // A master that stops answering: the check's probe gives up after 2 s, and the link is lost.
      yield* SubscriptionRef.set(net.master, "silent")
      yield* conn.check
      yield* TestClock.adjust("2001 millis")
      assert.strictEqual(lastErrorOf(yield* conn.state).reason, "ProbeFailed")
      // Then it accepts connections and never finishes their handshake.
      yield* SubscriptionRef.set(net.master, "stalled")
      yield* TestClock.adjust("3 seconds")
      const error = lastErrorOf(yield* conn.state)
      assert.deepInclude(error, { reason: "ConnectTimeout", stage: "Handshake" })
      assert.strictEqual(error.message, "not READY within 3s: the HTTP/2 handshake never finished")
    }).pipe(noJitter))

  it.effect("refused, then a master slow to finish handshakes: the connection it accepted is kept, one dial", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.fail("Refused")
      yield* TestClock.adjust("2 seconds")
      const dials = yield* net.dials
      yield* SubscriptionRef.set(net.master, "stalled")
      yield* net.restore
      // The next attempt (at 3.1 s) is accepted; the master finishes its handshake 5 s later.
      yield* TestClock.adjust("5100 millis")
      yield* SubscriptionRef.set(net.master, "serving")
      yield* TestClock.adjust("10 millis")
      assert.deepInclude(yield* conn.state, { _tag: "Ready", generation: 2 })
      assert.strictEqual(yield* net.dials, dials + 1)
    }).pipe(noJitter))

  it.effect("refused for two minutes: attempts 250 ms apart, then 3 % of the outage so far", () =>
    Effect.gen(function*() {
      const { net } = yield* setup({ link: "down", cutFailure: "Refused", refusalLatency: "50 millis" })
      const dialsAt = (at: number) => Effect.zipRight(Effect.flatMap(now, (t) => TestClock.adjust(at - t)), net.dials)
      // 50 ms to fail, then 250 ms, while 3 % of the outage is shorter: 28 attempts in the first 8.4 s.
      assert.strictEqual(yield* dialsAt(8_399), 28)
      // Then each delay is 3 % of the outage so far: 113 attempts by 2 minutes, against 400 at 250 ms.
      assert.strictEqual(yield* dialsAt(120_000), 113)
    }).pipe(noJitter))

  it.effect("each attempt's log line names why it failed; the same failure again within 30 s is at debug level", () =>
    capturing((lines) =>
      Effect.gen(function*() {
        const { net } = yield* setup()
        yield* TestClock.adjust("1 second")
        yield* net.fail("Refused")
        yield* TestClock.adjust("1 second")
        const attempts = lines.filter(([, line]) => line.startsWith("connection attempt"))
        assert.deepStrictEqual(attempts.slice(0, 3), [
          [
            "WARN",
            "connection attempt 1 failed (Refused: connection refused: simulated: connect ECONNREFUSED (master:9666)); attempt 2 in 250ms"
          ],
          [
            "DEBUG",
            "connection attempt 2 failed (Refused: connection refused: simulated: connect ECONNREFUSED (master:9666)); attempt 3 in 250ms"
          ],
          [
            "DEBUG",
            "connection attempt 3 failed (Refused: connection refused: simulated: connect ECONNREFUSED (master:9666)); attempt 4 in 250ms"
          ]
        ])
        yield* net.fail("HostUnreachable")
        yield* TestClock.adjust("300 millis")
        assert.deepStrictEqual(lines.at(-1)?.[0], "WARN")
        assert.include(lines.at(-1)?.[1], "HostUnreachable: host unreachable")
        // 30 s after the last warning, the same failure is a warning again.
        const warnings = () =>
          lines.filter(([level, line]) => level === "WARN" && line.startsWith("connection attempt")).length
        const before = warnings()
        yield* TestClock.adjust("29 seconds")
        assert.strictEqual(warnings(), before)
        // The attempt after the 30 s mark (by now 3 % of the outage apart, under a second) warns again.
        yield* TestClock.adjust("2 seconds")
        assert.strictEqual(warnings(), before + 1)
      })
    ).pipe(noJitter))
})

describe("Connection options", () => {
  const invalid = (options: Partial<Connection.Options<typeof services, SimulatedNetwork.SimulatedNetwork>>) =>
    setup({}, options).pipe(Effect.flip, Effect.map((error) => error as InvalidOption.InvalidOption))

  it.effect("rejects an empty address", () =>
    Effect.gen(function*() {
      const error = yield* invalid({ address: "" })
      assert.strictEqual(error.option, "address")
    }))

  it.effect("rejects a malformed address and a port out of range", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* invalid({ address: "master 9666" })).option, "address")
      const port = yield* invalid({ address: "master:70000" })
      assert.strictEqual(port.option, "address")
      assert.include(port.message, "70000")
    }))

  it.effect("rejects zero, negative and malformed durations, naming the option", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* invalid({ connectTimeout: 0 })).option, "connectTimeout")
      assert.strictEqual(
        (yield* invalid({ lookupTimeout: "-1 seconds" as Duration.DurationInput })).option,
        "lookupTimeout"
      )
      const bad = yield* invalid({ reconnectingLookupTimeout: "soon" as Duration.DurationInput })
      assert.strictEqual(bad.option, "reconnectingLookupTimeout")
      assert.include(bad.message, "soon")
    }))

  it.effect("rejects a service that is not a client constructor, naming its key", () =>
    Effect.gen(function*() {
      const error = yield* invalid({ services: { echo: "EchoClient" } as unknown as typeof services })
      assert.strictEqual(error.option, "services.echo")
    }))

  it.effect("accepts host:port, [v6]:port and gRPC target URIs", () =>
    Effect.gen(function*() {
      for (
        const address of [
          "127.0.0.1:9666",
          "[::1]:9666",
          "master:9666",
          "dns:///master:9666",
          "dns:master",
          "unix:/tmp/master.sock"
        ]
      ) {
        const { scope } = yield* setup({}, { address })
        yield* Scope.close(scope, Exit.void)
      }
    }))
})

class Echo extends Connection.Tag("test/Echo", services)<Echo>() {}
class OtherEcho extends Connection.Tag("test/OtherEcho", services)<OtherEcho>() {}

describe("Connection layers", () => {
  it.effect("a connection declared with Connection.Tag composes as a layer over the simulated network", () =>
    Effect.gen(function*() {
      const net = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Echo
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("40 seconds")
      yield* net.restore
      yield* TestClock.adjust("3 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      // Typed at compile time by the tag's services: the client is an EchoClient, an unknown key does not compile.
      const client: EchoClient = yield* conn.client("echo")
      assert.instanceOf(client, EchoClient)
      // @ts-expect-error "nope" is not a service of Echo
      yield* Effect.flip(conn.client("nope"))
    }).pipe(
      Effect.provide(
        Echo.layer({ address: "master:9666", readiness: { probe: SimulatedNetwork.probe } }).pipe(
          Layer.provideMerge(SimulatedNetwork.layer())
        )
      )
    ))

  it.effect("two connection tags in one app are two connections, each with its own address and state", () =>
    Effect.gen(function*() {
      const net = yield* SimulatedNetwork.SimulatedNetwork
      yield* TestClock.adjust("1 second")
      const [one, two] = [yield* Echo, yield* OtherEcho]
      assert.notStrictEqual(one, two)
      assert.deepStrictEqual([one.address, two.address], ["master-a:9666", "master-b:9666"])
      assert.deepStrictEqual([(yield* one.state)._tag, (yield* two.state)._tag], ["Ready", "Ready"])
      // Each has its own channel: two dials, two open channels.
      assert.strictEqual(yield* net.openChannels, 2)
      assert.notStrictEqual(yield* one.client("echo"), yield* two.client("echo"))
    }).pipe(
      Effect.provide(
        Layer.mergeAll(
          Echo.layer({ address: "master-a:9666", readiness: { probe: SimulatedNetwork.probe } }),
          OtherEcho.layer({ address: "master-b:9666", readiness: { probe: SimulatedNetwork.probe } })
        ).pipe(Layer.provideMerge(SimulatedNetwork.layer()))
      )
    ))

  it.effect("an address without a port fails with InvalidOption naming address, before any dial", () =>
    Effect.gen(function*() {
      const net = yield* SimulatedNetwork.SimulatedNetwork
      for (const address of ["127.0.0.1", "master", "[::1]"]) {
        const error = yield* Effect.flip(Layer.build(Echo.layer({ address })))
        assert.strictEqual(error.option, "address")
        assert.include(error.message, "has no port")
      }
      assert.strictEqual(yield* net.dials, 0)
    }).pipe(Effect.scoped, Effect.provide(SimulatedNetwork.layer())))
})

describe("Connection (virtual time): the log line of a reconnection", () => {
  it.effect("ready again names the generation, the outage's length, the attempts and the last attempt's time", () =>
    capturing((lines) =>
      Effect.gen(function*() {
        const { net } = yield* setup()
        yield* TestClock.adjust("1 second")
        yield* net.cut
        yield* TestClock.adjust("10 seconds")
        yield* net.restore
        yield* TestClock.adjust("5 seconds")
        const again = lines.filter(([, message]) => message.startsWith("connected to master:9666 again"))
        assert.strictEqual(again.length, 1, lines.map(([, m]) => m).join("\n"))
        const [level, message] = again[0]!
        assert.strictEqual(level, "INFO")
        assert.match(
          message,
          /^connected to master:9666 again, generation 2, after an outage of \d+s( \d+ms)? and \d+ attempts; the last took \d+ms to be ready$/
        )
        // The first connection's line says no more than it knows.
        assert.isTrue(lines.some(([, m]) => m === "connected to master:9666, generation 1"))
      })
    ))
})

describe("Connection (virtual time): defects", () => {
  it.effect("a probe that dies has failed, naming the defect; the supervisor goes on, Ready when it answers", () =>
    Effect.gen(function*() {
      let calls = 0
      const probe: Readiness.Probe<SimulatedNetwork.SimulatedNetwork> = (target) =>
        Effect.suspend(() => (++calls === 1 ? Effect.die(new Error("probe bug")) : SimulatedNetwork.probe(target)))
      const { conn } = yield* setup({}, { readiness: { probe } })
      yield* TestClock.adjust("100 millis")
      assert.strictEqual((yield* conn.state)._tag, "Connecting")
      const status = yield* conn.readiness.status
      assert.strictEqual(Readiness.failingCheck(status.report), "probe")
      assert.include(Readiness.describeFailure(status.report), "the probe died: probe bug")
      // The next round, 500 ms after the first, asks the probe again.
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Ready({ generation: 1, since: 550 }))
    }).pipe(noJitter))

  it.effect("a client constructor that throws ends the supervisor: Closed at once, the defect named, lookups fail", () =>
    Effect.gen(function*() {
      // A client whose proto cannot load: its constructor throws.
      const broken = class {
        constructor() {
          throw new Error("no proto here")
        }
      } as unknown as typeof EchoClient
      const { conn } = yield* setup({}, { services: { echo: broken } })
      yield* TestClock.adjust("100 millis")
      const state = yield* conn.state
      assert.strictEqual(state._tag, "Closed")
      const closed = state as Extract<typeof state, { _tag: "Closed" }>
      assert.strictEqual(closed.lastError?.message, "the supervisor died: no proto here")
      const lookup = yield* Effect.flip(conn.client("echo"))
      assert.strictEqual(lookup.reason, "Closed")
    }))
})
