import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Call from "../src/Call.js"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import { addEcho, EchoClient, type EchoHandlers, ticking } from "./fixtures/echo.js"
import { freePort } from "./fixtures/nginx.js"
import { serve } from "./fixtures/server.js"

const services = { echo: EchoClient }

const connect = (port: number) =>
  Effect.gen(function*() {
    const conn = yield* Connection.make({ address: `127.0.0.1:${port}`, services }).pipe(
      Effect.provide(GrpcChannel.layer)
    )
    yield* conn.readiness.await
    return conn
  })

// A Say handler that fails its first `failures` calls with `code`, and counts every call.
const failingFirst = (failures: number, code: grpc.status) => {
  const calls = { count: 0 }
  const handlers: EchoHandlers = {
    say: (call, callback) => {
      calls.count++
      if (calls.count <= failures) callback({ code, details: `failure ${calls.count}` })
      else callback(null, { text: call.request.text })
    }
  }
  return { calls, handlers }
}

describe("Connection.call (live loopback)", () => {
  it.scopedLive(
    "a server that fails the first two calls with UNAVAILABLE: an idempotent call succeeds on the third try",
    () =>
      Effect.gen(function*() {
        const { calls, handlers } = failingFirst(2, grpc.status.UNAVAILABLE)
        const { port } = yield* serve((server) => addEcho(server, handlers))
        const conn = yield* connect(port)
        const reply = yield* conn.call("echo", "say", { text: "third" }, { idempotent: true })
        assert.deepStrictEqual(reply, { text: "third" })
        assert.strictEqual(calls.count, 3)
      }),
    20_000
  )

  it.scopedLive(
    "the same failure on a call not marked idempotent is not retried: the request was sent",
    () =>
      Effect.gen(function*() {
        const { calls, handlers } = failingFirst(2, grpc.status.UNAVAILABLE)
        const { port } = yield* serve((server) => addEcho(server, handlers))
        const conn = yield* connect(port)
        const error = yield* Effect.flip(conn.call("echo", "say", { text: "once" }))
        assert.strictEqual(error._tag, "GrpcError")
        assert.strictEqual(error._tag === "GrpcError" && error.code, grpc.status.UNAVAILABLE)
        assert.strictEqual(calls.count, 1)
      }),
    20_000
  )

  it.scopedLive("UNAUTHENTICATED is tried once only, and fails with a typed GrpcError", () =>
    Effect.gen(function*() {
      const { calls, handlers } = failingFirst(10, grpc.status.UNAUTHENTICATED)
      const { port } = yield* serve((server) => addEcho(server, handlers))
      const conn = yield* connect(port)
      const error = yield* Effect.flip(conn.call("echo", "say", { text: "no" }, { idempotent: true }))
      assert.deepStrictEqual(
        error._tag === "GrpcError" && { code: error.code, service: error.service, method: error.method },
        { code: grpc.status.UNAUTHENTICATED, service: "echo", method: "say" }
      )
      assert.strictEqual(calls.count, 1)
    }), 20_000)

  it.scopedLive("interrupting a slow call makes the server see it cancelled", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const cancelled = yield* Deferred.make<void>()
      const { port } = yield* serve((server) =>
        addEcho(server, {
          say: (call) => {
            Effect.runSync(Deferred.succeed(started, undefined))
            call.on("cancelled", () => Effect.runSync(Deferred.succeed(cancelled, undefined)))
          }
        })
      )
      const conn = yield* connect(port)
      const fiber = yield* Effect.fork(conn.call("echo", "say", { text: "slow" }))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      yield* Deferred.await(cancelled).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the server never saw the cancel") })
      )
    }), 20_000)

  it.scopedLive(
    "a call's deadline fails it DEADLINE_EXCEEDED, and an idempotent one is retried",
    () =>
      Effect.gen(function*() {
        let count = 0
        const { port } = yield* serve((server) =>
          addEcho(server, {
            say: (call, callback) => {
              if (++count > 1) callback(null, { text: call.request.text })
            }
          })
        )
        const conn = yield* connect(port)
        const reply = yield* conn.call("echo", "say", { text: "late" }, { idempotent: true, timeout: "200 millis" })
        assert.deepStrictEqual(reply, { text: "late" })
        assert.strictEqual(count, 2)
      }),
    20_000
  )

  it.live("a server stream resumes on the next generation after the server restarts", () =>
    Effect.gen(function*() {
      const first = yield* Scope.make()
      const { port } = yield* serve((server) => addEcho(server, { watch: ticking("first") })).pipe(Scope.extend(first))
      const scope = yield* Scope.make()
      const conn = yield* connect(port).pipe(Scope.extend(scope))
      const firstSeen = yield* Deferred.make<void>()
      const ticks = yield* conn.stream("echo", "watch", (generation) => ({ generation })).pipe(
        Stream.filter((tick) => tick.n === 3),
        Stream.tap(() => Deferred.succeed(firstSeen, undefined)),
        Stream.take(2),
        Stream.runCollect,
        Effect.fork
      )
      // The first server's stream is seen before that server goes away, however slow the machine.
      yield* Deferred.await(firstSeen)
      yield* Scope.close(first, Exit.void)
      const second = yield* Scope.make()
      yield* serve((server) => addEcho(server, { watch: ticking("second") }), port).pipe(Scope.extend(second))
      const seen = yield* Fiber.join(ticks).pipe(
        Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the stream did not resume") })
      )
      assert.deepStrictEqual(
        Chunk.toReadonlyArray(seen).map(({ generation, server }) => ({ generation, server })),
        [{ generation: 1, server: "first" }, { generation: 2, server: "second" }]
      )
      yield* Scope.close(scope, Exit.void)
      yield* Scope.close(second, Exit.void)
    }), 20_000)
})

describe("Call.unary (live loopback): whether a failed request may have left", () => {
  // The channel's state once it is `state`, read in the same turn as the call that follows.
  const reach = (channel: grpc.ChannelInterface, state: grpc.connectivityState) =>
    Effect.async<void>((resume) => {
      const look = () => {
        const now = channel.getConnectivityState(true)
        if (now === state) return resume(Effect.void)
        channel.watchConnectivityState(now, Infinity, look)
      }
      look()
    })

  it.scopedLive(
    "queued on an IDLE channel it may have left, though it failed; on a channel in TRANSIENT_FAILURE it never left",
    () =>
      Effect.gen(function*() {
        // Nothing listens there: every connection is refused.
        const port = yield* freePort
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure())),
          (c) => Effect.sync(() => c.close())
        )
        assert.strictEqual(client.getChannel().getConnectivityState(false), grpc.connectivityState.IDLE)
        // grpc-js queues it while it connects: had the connection been accepted, it would have been sent.
        const queued = yield* Effect.flip(Call.unary(client, "echo", "say", { text: "a" }, { timeout: "10 seconds" }))
        assert.strictEqual(queued.code, grpc.status.UNAVAILABLE)
        assert.isFalse(queued.beforeSend)
        yield* reach(client.getChannel(), grpc.connectivityState.TRANSIENT_FAILURE)
        const refused = yield* Effect.flip(Call.unary(client, "echo", "say", { text: "b" }, { timeout: "10 seconds" }))
        assert.strictEqual(refused.code, grpc.status.UNAVAILABLE)
        assert.isTrue(refused.beforeSend)
      }),
    20_000
  )
})
