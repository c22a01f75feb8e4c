import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import * as FaultProxy from "../src/testing/FaultProxy.js"
import { addEcho, EchoClient, type SayReply } from "./fixtures/echo.js"
import { serve } from "./fixtures/server.js"

// The fixture's constructor type is an intersection whose first signature builds a bare ServiceClient.
const Echo: new(...args: ConstructorParameters<typeof grpc.Client>) => EchoClient = EchoClient

// A fresh channel each time: a local subchannel pool means a new connection, not a shared one in backoff.
const client = (address: string) =>
  Effect.acquireRelease(
    Effect.sync(() => new Echo(address, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 })),
    (client) => Effect.sync(() => client.close())
  )

const say = (client: EchoClient, text: string, deadline: Duration.DurationInput = "2 seconds") =>
  Effect.async<SayReply, grpc.ServiceError>((resume) => {
    const call = client.say(
      { text },
      { deadline: Date.now() + Duration.toMillis(deadline) },
      (error, reply) => resume(error ? Effect.fail(error) : Effect.succeed(reply!))
    )
    return Effect.sync(() => call.cancel())
  })

// The status a call failed with, and how long it took to fail.
const failure = (call: Effect.Effect<SayReply, grpc.ServiceError>) =>
  call.pipe(
    Effect.flip,
    Effect.timed,
    Effect.map(([took, error]) => ({ code: grpc.status[error.code], millis: Duration.toMillis(took) }))
  )

const proxyTo = (port: number) => FaultProxy.make({ target: { host: "127.0.0.1", port } })

// A plain TCP echo server, for byte-level checks.
const echoServer = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer((socket) => {
      socket.on("error", () => {})
      socket.pipe(socket)
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)
const portOf = (server: net.Server) => (server.address() as net.AddressInfo).port

// A raw TCP client: what it received, and how it ended (null while open).
const rawClient = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ socket: net.Socket; received: () => string; ended: () => string | null }, Error>((resume) => {
      let received = ""
      let ended: string | null = null
      let connected = false
      const socket = net.connect(port, "127.0.0.1")
      socket.on("data", (chunk) => (received += chunk.toString()))
      socket.on("error", (error: NodeJS.ErrnoException) => {
        ended = error.code ?? error.message
        if (!connected) resume(Effect.fail(error))
      })
      socket.on("close", () => (ended ??= "closed"))
      socket.once("connect", () => {
        connected = true
        resume(Effect.succeed({ socket, received: () => received, ended: () => ended }))
      })
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

// Connects, sends a line, and tells how the connection ended, within a second: the refused connection's view.
const refusal = (port: number) =>
  Effect.async<{ ended: string; received: string }>((resume) => {
    let received = ""
    let ended = "closed"
    const socket = net.connect(port, "127.0.0.1", () => socket.write("anyone?"))
    socket.on("data", (chunk) => (received += chunk.toString()))
    socket.on("error", (error: NodeJS.ErrnoException) => (ended = error.code ?? error.message))
    socket.on("close", () => resume(Effect.succeed({ ended, received })))
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutFail({ duration: "1 second", onTimeout: () => new Error("connection still open after 1 s") }))

// Polls until `check` holds, up to `within`; the caller asserts afterwards, so a failure shows the values.
const eventually = (check: Effect.Effect<boolean>, within: Duration.DurationInput = "1 second") =>
  check.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("10 millis") }),
    Effect.timeout(within),
    Effect.ignore
  )

// An echo server behind a proxy, and a client that has made one call through it.
const warmProxy = Effect.gen(function*() {
  const { port } = yield* serve(addEcho)
  const proxy = yield* proxyTo(port)
  const echo = yield* client(proxy.address)
  yield* say(echo, "warm up")
  return { echo, proxy }
})

const tcpHandles = () =>
  process.getActiveResourcesInfo().filter((kind) => kind.startsWith("TCP") || kind === "Timeout").sort()

describe("FaultProxy (live)", () => {
  it.scopedLive("pass forwards calls and counts connections and bytes each way", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(addEcho)
      const proxy = yield* proxyTo(port)
      assert.strictEqual(proxy.address, `127.0.0.1:${proxy.port}`)
      const echo = yield* client(proxy.address)
      assert.deepStrictEqual(yield* say(echo, "hello"), { text: "hello" })
      assert.deepStrictEqual(yield* say(echo, "again"), { text: "again" })
      assert.strictEqual(yield* proxy.accepted, 1)
      assert.strictEqual(yield* proxy.connections, 1)
      assert.isAbove(yield* proxy.bytesToTarget, 0)
      assert.isAbove(yield* proxy.bytesFromTarget, 0)
      assert.strictEqual((yield* proxy.mode.get)._tag, "Pass")
    }), 5_000)

  it.scopedLive(
    "reset fails an in-flight call UNAVAILABLE at once and refuses new connections until pass",
    () =>
      Effect.gen(function*() {
        const { echo, proxy } = yield* warmProxy

        // Latency keeps the call in flight long enough to reset under it.
        yield* proxy.latency("300 millis")
        const inFlight = yield* Effect.fork(failure(say(echo, "in flight")))
        yield* Effect.sleep("100 millis")
        const resetAt = yield* Clock.currentTimeMillis
        yield* proxy.reset
        const failed = yield* Fiber.join(inFlight)
        assert.strictEqual(failed.code, "UNAVAILABLE")
        assert.isBelow((yield* Clock.currentTimeMillis) - resetAt, 500)
        yield* eventually(Effect.map(proxy.connections, (n) => n === 0))
        assert.strictEqual(yield* proxy.connections, 0)

        // A new TCP connection is answered with an RST, without a byte.
        assert.deepStrictEqual(yield* refusal(proxy.port), { ended: "ECONNRESET", received: "" })

        // And a new channel fails fast instead of hanging.
        const fresh = yield* client(proxy.address)
        const refused = yield* failure(say(fresh, "refused?"))
        assert.strictEqual(refused.code, "UNAVAILABLE")
        assert.isBelow(refused.millis, 1000)

        yield* proxy.pass
        assert.deepStrictEqual(yield* say(yield* client(proxy.address), "back"), { text: "back" })
        assert.isAtLeast(yield* proxy.accepted, 4)
      }),
    5_000
  )

  it.scopedLive(
    "blackhole: a 500 ms call fails DEADLINE_EXCEEDED on an open socket; after pass it stays dead, a new channel works",
    () =>
      Effect.gen(function*() {
        const { echo, proxy } = yield* warmProxy
        const sent = yield* proxy.bytesToTarget

        yield* proxy.blackhole
        const lost = yield* failure(say(echo, "lost", "500 millis"))
        assert.strictEqual(lost.code, "DEADLINE_EXCEEDED")
        assert.isAtLeast(lost.millis, 450)
        // Half-open: the socket is still there and grpc-js still believes in it.
        assert.strictEqual(yield* proxy.connections, 1)
        assert.strictEqual(echo.getChannel().getConnectivityState(false), grpc.connectivityState.READY)
        assert.strictEqual(yield* proxy.bytesToTarget, sent)

        // A new connection is accepted but goes nowhere either.
        const during = yield* client(proxy.address)
        assert.strictEqual((yield* failure(say(during, "nowhere", "500 millis"))).code, "DEADLINE_EXCEEDED")
        assert.strictEqual(yield* proxy.accepted, 2)
        assert.strictEqual(yield* proxy.bytesToTarget, sent)

        yield* proxy.pass
        // The old connection lost bytes, so it stays dead: only keepalive or a probe would find out.
        assert.strictEqual((yield* failure(say(echo, "still lost", "500 millis"))).code, "DEADLINE_EXCEEDED")
        assert.deepStrictEqual(yield* say(yield* client(proxy.address), "fresh"), { text: "fresh" })
      }),
    5_000
  )

  it.scopedLive(
    "latency(200 ms) delays each direction: a round trip takes at least 400 ms",
    () =>
      Effect.gen(function*() {
        const { echo, proxy } = yield* warmProxy
        yield* proxy.latency("200 millis")
        const [took, reply] = yield* Effect.timed(say(echo, "slow"))
        assert.deepStrictEqual(reply, { text: "slow" })
        assert.isAtLeast(Duration.toMillis(took), 400)
        assert.isBelow(Duration.toMillis(took), 1500)
      }),
    5_000
  )

  it.scopedLive("bytes keep their order when the latency drops mid-stream", () =>
    Effect.gen(function*() {
      const server = yield* echoServer
      const proxy = yield* proxyTo(portOf(server))
      const raw = yield* rawClient(proxy.port)
      yield* proxy.latency("150 millis")
      raw.socket.write("a")
      yield* proxy.pass
      raw.socket.write("b")
      yield* eventually(Effect.sync(() => raw.received().length === 2))
      assert.strictEqual(raw.received(), "ab")
    }), 5_000)

  it.scopedLive(
    "flap alternates the fault and pass, holding each for a while, and leaves pass when interrupted",
    () =>
      Effect.gen(function*() {
        const { port } = yield* serve(addEcho)
        const proxy = yield* proxyTo(port)
        const timeline = proxy.mode.changes.pipe(
          Stream.mapEffect((mode) => Effect.map(Clock.currentTimeMillis, (at) => ({ tag: mode._tag, at }))),
          Stream.dropWhile((change) => change.tag === "Pass"),
          Stream.take(6),
          Stream.runCollect,
          Effect.timeout("10 seconds")
        )
        const collecting = yield* Effect.fork(timeline)
        yield* Effect.yieldNow()
        const fiber = yield* proxy.flap({
          down: ["50 millis", "100 millis"],
          up: ["50 millis", "100 millis"],
          kind: "reset"
        })
        const changes = Chunk.toReadonlyArray(yield* Fiber.join(collecting))
        assert.deepStrictEqual(changes.map((c) => c.tag), ["Reset", "Pass", "Reset", "Pass", "Reset", "Pass"])
        // Five holds of at least 50 ms each. Stamped when the subscriber sees a change, and a loaded machine may
        // look late, at the first change too: the span is only bounded loosely, and no single hold is timed.
        const span = changes.at(-1)!.at - changes[0]!.at
        assert.isAtLeast(span, 100, `the five holds took ${span} ms`)
        yield* Fiber.interrupt(fiber)
        assert.strictEqual((yield* proxy.mode.get)._tag, "Pass")
        // Faults were really applied: a call through the proxy works again.
        assert.deepStrictEqual(yield* say(yield* client(proxy.address), "after"), { text: "after" })
      }),
    15_000
  )

  it.scopedLive(
    "closing the scope closes the listener and every socket, leaving no handle",
    () =>
      Effect.gen(function*() {
        const server = yield* echoServer
        // Sockets of the tests before close on the next turns of the event loop: wait until only the echo server is left.
        const onlyEcho = () => tcpHandles().filter((kind) => kind !== "Timeout")
        yield* eventually(Effect.sync(() => onlyEcho().length === 1))
        assert.deepStrictEqual(onlyEcho(), ["TCPServerWrap"])
        const before = tcpHandles()
        const scope = yield* Scope.make()
        const proxy = yield* proxyTo(portOf(server)).pipe(Scope.extend(scope))
        // One dead connection, one live with a chunk still queued behind the latency.
        const dead = yield* rawClient(proxy.port).pipe(Scope.extend(scope))
        yield* proxy.blackhole
        yield* proxy.pass
        const live = yield* rawClient(proxy.port).pipe(Scope.extend(scope))
        live.socket.write("echo")
        yield* eventually(Effect.sync(() => live.received() === "echo"))
        yield* proxy.latency("5 seconds")
        live.socket.write("pending")
        yield* eventually(Effect.map(proxy.connections, (n) => n === 2))
        assert.strictEqual(yield* proxy.connections, 2)
        assert.isAbove(tcpHandles().length, before.length)

        yield* Scope.close(scope, Exit.void)
        // The clients' and the echo server's sockets close on the next turns of the event loop.
        yield* eventually(Effect.sync(() => dead.ended() !== null && live.ended() !== null))
        assert.deepStrictEqual([dead.ended(), live.ended()], ["closed", "closed"])
        yield* eventually(Effect.sync(() => tcpHandles().length <= before.length))
        // Every socket is back to what it was; a timer of someone else's may have ended meanwhile, none is added.
        const sockets = (handles: ReadonlyArray<string>) => handles.filter((kind) => kind.startsWith("TCP"))
        const timers = (handles: ReadonlyArray<string>) => handles.filter((kind) => kind === "Timeout").length
        assert.deepStrictEqual(sockets(tcpHandles()), sockets(before))
        assert.isAtMost(timers(tcpHandles()), timers(before))
        const refused = yield* Effect.exit(Effect.scoped(rawClient(proxy.port)))
        assert.isTrue(Exit.isFailure(refused), "the listener is closed")
      }),
    5_000
  )
})
