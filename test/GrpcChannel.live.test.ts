import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as net from "node:net"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Master from "../src/testing/Master.js"
import * as Certs from "./fixtures/certs.js"
import { EchoClient } from "./fixtures/echo.js"

const services = { echo: EchoClient }

// A TCP server that does `onSocket` with each connection, and counts them; closed with the scope.
const tcp = (onSocket: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<
      {
        readonly port: number
        readonly open: () => number
        readonly accepted: () => number
        readonly close: () => void
      }
    >(
      (resume) => {
        const sockets = new Set<net.Socket>()
        let accepted = 0
        const server = net.createServer((socket) => {
          accepted++
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
          socket.on("error", () => {})
          // Reading, so the peer's FIN is seen and the socket closes.
          socket.resume()
          onSocket(socket)
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({
            port: (server.address() as net.AddressInfo).port,
            open: () => sockets.size,
            accepted: () => accepted,
            close: () => {
              for (const socket of sockets) socket.destroy()
              server.close()
            }
          })))
      }
    ),
    (server) => Effect.sync(() => server.close())
  )

// A port nothing listens on: bound, then closed.
const closedPort = Effect.async<number>((resume) => {
  const server = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

// The error of a connection's one attempt: with a schedule that never retries, it closes with it.
const firstError = (options: Partial<Connection.Options<typeof services>> & { readonly address: string }) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const conn = yield* Connection.make({ services, reconnectSchedule: Schedule.stop, ...options }).pipe(
      Effect.provide(GrpcChannel.layer),
      Scope.extend(scope)
    )
    const closed = yield* conn.changes.pipe(
      Stream.filter((state) => state._tag === "Closed"),
      Stream.runHead,
      Effect.flatten,
      Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the attempt did not fail within 10 s") })
    )
    yield* Scope.close(scope, Exit.void)
    assert.strictEqual(closed._tag, "Closed")
    return closed._tag === "Closed" ? closed.lastError! : undefined!
  })

// A plaintext channel to `address` from the dialer in context, closed with the scope.
const dial = (address: string) =>
  Effect.flatMap(
    GrpcChannel.Dialer,
    (dialer) => dialer.dial({ address, credentials: grpc.credentials.createInsecure(), channelOptions: {} })
  )

const waitFor = (what: string, condition: () => boolean, within: Duration.DurationInput = "5 seconds") =>
  Effect.suspend(() => (condition() ? Effect.void : Effect.fail(new Error(what)))).pipe(
    Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo(within))),
    Effect.orDie
  )

describe("GrpcChannel (live loopback): an attempt's error names why it failed", () => {
  it.scopedLive("a port nothing listens on: Refused, with grpc-js's words", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const error = yield* firstError({ address: `127.0.0.1:${port}` })
      assert.strictEqual(error.reason, "Refused")
      assert.strictEqual(error.message, `connection refused: connect ECONNREFUSED 127.0.0.1:${port}`)
      assert.include(error.detail, "ECONNREFUSED")
    }), 20_000)

  it.scopedLive("a connection reset at accept: Refused", () =>
    Effect.gen(function*() {
      const server = yield* tcp((socket) => socket.resetAndDestroy())
      const error = yield* firstError({ address: `127.0.0.1:${server.port}` })
      assert.strictEqual(error.reason, "Refused")
      assert.include(error.message, "ECONNRESET")
    }), 20_000)

  it.scopedLive("a name that does not resolve: NameNotResolved", () =>
    Effect.gen(function*() {
      const error = yield* firstError({ address: "nonexistent.invalid:9666" })
      assert.strictEqual(error.reason, "NameNotResolved")
      assert.include(error.message, "name not resolved")
    }), 20_000)

  it.scopedLive("a master whose certificate is not trusted: TlsRefused", () =>
    Effect.gen(function*() {
      const certs = yield* Certs.make
      const master = yield* Master.make({ tls: { cert: certs.server.cert.pem, key: certs.server.key.pem } })
      const error = yield* firstError({
        address: master.address,
        credentials: grpc.credentials.createSsl(Buffer.from(certs.otherCa.pem))
      })
      assert.strictEqual(error.reason, "TlsRefused")
      assert.include(error.message, "TLS handshake refused")
    }), 20_000)

  it.scopedLive(
    "a master that accepts and never sends its HTTP/2 settings: ConnectTimeout in the handshake",
    () =>
      Effect.gen(function*() {
        const server = yield* tcp(() => {})
        const error = yield* firstError({ address: `127.0.0.1:${server.port}`, connectTimeout: "300 millis" })
        assert.strictEqual(error.reason, "ConnectTimeout")
        assert.strictEqual(error.stage, "Handshake")
        assert.strictEqual(error.message, "not READY within 300ms: the HTTP/2 handshake never finished")
      }),
    20_000
  )

  it.scopedLive("a master that does not pass readiness: NotReady, naming the check", () =>
    Effect.gen(function*() {
      const master = yield* Master.make()
      yield* master.setServing(false)
      const error = yield* firstError({
        address: master.address,
        readiness: { bound: "600 millis", interval: "100 millis" }
      })
      assert.strictEqual(error.reason, "NotReady")
      assert.strictEqual(error.check, "probe")
    }), 20_000)
})

describe("GrpcChannel (live loopback): a closed channel leaves nothing behind", () => {
  it.scopedLive(
    "a channel closed in TRANSIENT_FAILURE does not connect again when the master is back",
    () =>
      Effect.gen(function*() {
        let resetting = true
        const server = yield* tcp((socket) => {
          if (resetting) socket.resetAndDestroy()
        })
        for (let n = 0; n < 5; n++) {
          const scope = yield* Scope.make()
          const channel = yield* dial(`127.0.0.1:${server.port}`).pipe(Scope.extend(scope))
          yield* channel.connect
          yield* channel.changes.pipe(Stream.filter((state) => state === "TRANSIENT_FAILURE"), Stream.runHead)
          yield* Scope.close(scope, Exit.void)
        }
        const accepted = server.accepted()
        resetting = false
        // grpc-js's own backoff after a failure is 1 s, jittered by 20 %: a reconnection would have come by 1.2 s.
        yield* Effect.sleep("1500 millis")
        assert.strictEqual(server.accepted(), accepted)
        assert.strictEqual(server.open(), 0)
      }).pipe(Effect.provide(GrpcChannel.layer)),
    20_000
  )

  it.scopedLive("a channel closed during the HTTP/2 handshake closes its socket", () =>
    Effect.gen(function*() {
      const server = yield* tcp(() => {})
      const scope = yield* Scope.make()
      const channel = yield* dial(`127.0.0.1:${server.port}`).pipe(Scope.extend(scope))
      yield* channel.connect
      yield* waitFor("the connection was not accepted", () => server.open() === 1)
      assert.strictEqual(yield* channel.stage, "Handshake")
      yield* Scope.close(scope, Exit.void)
      yield* waitFor("the socket stayed open", () => server.open() === 0, "2 seconds")
    }).pipe(Effect.provide(GrpcChannel.layer)), 20_000)
})

// A gRPC server with no services bound to `host` (its HTTP/2 handshake is what a channel waits for); closed with the scope.
const grpcServer = (host: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly port: number; readonly server: grpc.Server }, Error>((resume) => {
      const server = new grpc.Server()
      server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (error, port) =>
        resume(error === null ? Effect.succeed({ port, server }) : Effect.fail(error)))
    }),
    ({ server }) =>
      Effect.sync(() =>
        server.forceShutdown()
      )
  )

describe("GrpcChannel (live loopback): the target a channel is dialed with", () => {
  const dialReady = (address: string) =>
    Effect.gen(function*() {
      const channel = yield* dial(address)
      yield* channel.connect
      const state = yield* channel.changes.pipe(
        Stream.filter((state) => state === "READY" || state === "TRANSIENT_FAILURE"),
        Stream.runHead,
        Effect.flatten,
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`${address}: not READY within 5 s`) })
      )
      return { state, target: channel.target }
    })

  it.scopedLive("an IPv4 address and port: through grpc-js's ip resolver, READY", () =>
    Effect.gen(function*() {
      const { port } = yield* grpcServer("127.0.0.1")
      const { state, target } = yield* dialReady(`127.0.0.1:${port}`)
      assert.strictEqual(state, "READY")
      assert.strictEqual(target, `ipv4:127.0.0.1:${port}`)
    }).pipe(Effect.provide(GrpcChannel.layer)), 20_000)

  it.scopedLive(
    "an IPv6 address in brackets and port: through grpc-js's ip resolver, READY",
    () =>
      Effect.gen(function*() {
        const { port } = yield* grpcServer("[::1]")
        const { state, target } = yield* dialReady(`[::1]:${port}`)
        assert.strictEqual(state, "READY")
        assert.strictEqual(target, `ipv6:[::1]:${port}`)
      }).pipe(Effect.provide(GrpcChannel.layer)),
    20_000
  )

  it.scopedLive(
    "a name, and a target URI, as they are: through the DNS resolver or the one named",
    () =>
      Effect.gen(function*() {
        const { port } = yield* grpcServer("127.0.0.1")
        const byName = yield* dialReady(`localhost:${port}`)
        assert.strictEqual(byName.state, "READY")
        assert.strictEqual(byName.target, `dns:localhost:${port}`)
        const byUri = yield* dialReady(`dns:127.0.0.1:${port}`)
        assert.strictEqual(byUri.state, "READY")
        assert.strictEqual(byUri.target, `dns:127.0.0.1:${port}`)
      }).pipe(Effect.provide(GrpcChannel.layer)),
    20_000
  )
})
