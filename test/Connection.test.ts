import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { EchoClient } from "./fixtures/echo.js"
import * as ConnectionState from "../src/ConnectionState.js"
import * as InvalidOption from "../src/InvalidOption.js"

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
      const { conn, net } = yield* setup()
      yield* TestClock.adjust("1 second")
      yield* net.cut
      // attempts at 1.000, 1.550, 2.600, 4.650 fail 50 ms after they start; backoffs 0.5, 1, 2, 2 s.
      yield* TestClock.adjust("4 seconds")
      const during = yield* conn.state
      assert.strictEqual(during._tag, "Reconnecting")
      assert.strictEqual((during as Extract<typeof during, { _tag: "Reconnecting" }>).attempt, 5)
      yield* net.restore
      // Nothing fires on restore: the attempt after the current backoff (at 6.700) finds the network.
      yield* TestClock.adjust("1699 millis")
      assert.strictEqual((yield* conn.state)._tag, "Reconnecting")
      yield* TestClock.adjust("51 millis")
      assert.deepStrictEqual(yield* conn.state, ConnectionState.ConnectionState.Ready({ generation: 2, since: 6750 }))
      assert.strictEqual(yield* net.dials, 6)
      assert.strictEqual(yield* net.openChannels, 1)
    }).pipe(noJitter))

  it.effect("the reconnecting state records when the outage began and why", () =>
    Effect.gen(function*() {
      const { conn, net } = yield* setup()
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
      const { conn, net } = yield* setup({ connectLatency: "2 seconds" })
      const lookup = yield* Effect.fork(Effect.zip(conn.client("echo"), now))
      yield* TestClock.adjust("1 second")
      yield* net.cut
      yield* TestClock.adjust("40 seconds")
      yield* net.restore
      yield* TestClock.adjust("10 seconds")
      const [client, at] = yield* Fiber.join(lookup)
      assert.instanceOf(client, EchoClient)
      // Attempts run every 4 s (2 s handshake + 2 s backoff) from 9.5 s: the one at 41.5 s is READY at 43.5 s.
      assert.strictEqual(at, 43_500)
      // The original fixed 15 s wait would have given up 28.5 s earlier.
      assert.isAbove(at, 15_000)
    }).pipe(noJitter))

  it.effect("a lookup with no reconnection fails at exactly 15 s with ClientUnavailable", () =>
    Effect.gen(function*() {
      const { conn } = yield* setup({ link: "blackhole" }, { connectTimeout: "20 seconds" })
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
      assert.strictEqual((state as Extract<typeof state, { _tag: "Closed" }>).lastError?.reason, "TransientFailure")
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
      assert.strictEqual((yield* invalid({ lookupTimeout: "-1 seconds" as Duration.DurationInput })).option, "lookupTimeout")
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
      for (const address of ["127.0.0.1:9666", "[::1]:9666", "master:9666", "dns:///master:9666", "dns:master", "unix:/tmp/master.sock"]) {
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
