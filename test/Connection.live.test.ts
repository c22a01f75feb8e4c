import { assert, describe, it } from "@effect/vitest"
import type * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Connection from "../src/Connection.js"
import type * as ConnectionState from "../src/ConnectionState.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import { addEcho, EchoClient, type SayReply } from "./fixtures/echo.js"
import { serve } from "./fixtures/server.js"

const services = { echo: EchoClient }

const say = (client: EchoClient, text: string) =>
  Effect.async<SayReply, grpc.ServiceError>((resume) => {
    const call = client.say({ text }, { deadline: Date.now() + 2000 }, (error, reply) =>
      resume(error ? Effect.fail(error) : Effect.succeed(reply!)))
    return Effect.sync(() =>
      call.cancel()
    )
  })

const awaitState = (conn: Connection.Connection, tag: ConnectionState.ConnectionState["_tag"]) =>
  conn.changes.pipe(
    Stream.filter((state) => state._tag === tag),
    Stream.runHead,
    Effect.flatten,
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`no ${tag} state within 10 s`) })
  )

const handles = () => process.getActiveResourcesInfo().filter((kind) => kind !== "TTYWrap").sort()

describe("Connection (live loopback)", () => {
  it.live(
    "reconnects to a restarted master with generation + 1, and a lookup plus a real RPC succeed",
    () =>
      Effect.gen(function*() {
        const first = yield* Scope.make()
        const { port } = yield* serve(addEcho).pipe(Scope.extend(first))
        const scope = yield* Scope.make()
        const conn = yield* Connection.make({ address: `127.0.0.1:${port}`, services }).pipe(
          Effect.provide(GrpcChannel.layer),
          Scope.extend(scope)
        )
        const ready = yield* awaitState(conn, "Ready")
        assert.strictEqual(ready._tag === "Ready" && ready.generation, 1)
        assert.deepStrictEqual(yield* say(yield* conn.client("echo"), "before"), { text: "before" })

        yield* Scope.close(first, Exit.void)
        yield* awaitState(conn, "Reconnecting")

        const second = yield* Scope.make()
        yield* serve(addEcho, port).pipe(Scope.extend(second))
        const again = yield* awaitState(conn, "Ready")
        assert.strictEqual(again._tag === "Ready" && again.generation, 2)
        assert.deepStrictEqual(yield* say(yield* conn.client("echo"), "after"), { text: "after" })

        yield* Scope.close(scope, Exit.void)
        yield* Scope.close(second, Exit.void)
      }),
    20_000
  )

  it.live("closing the connection leaves no open handle behind", () =>
    Effect.gen(function*() {
      const server = yield* Scope.make()
      const { port } = yield* serve(addEcho).pipe(Scope.extend(server))
      const before = handles()
      const scope = yield* Scope.make()
      const conn = yield* Connection.make({ address: `127.0.0.1:${port}`, services }).pipe(
        Effect.provide(GrpcChannel.layer),
        Scope.extend(scope)
      )
      yield* awaitState(conn, "Ready")
      yield* say(yield* conn.client("echo"), "hello")
      assert.isAbove(handles().length, before.length)
      yield* Scope.close(scope, Exit.void)
      yield* Scope.close(server, Exit.void)
      // Sockets close on the next turns of the event loop.
      yield* Effect.sleep("100 millis")
      assert.deepStrictEqual(handles().filter((kind) => kind === "TCPSocketWrap" || kind === "TCPWrap"), [])
      assert.strictEqual(yield* conn.state.pipe(Effect.map((s) => s._tag)), "Closed")
    }), 20_000)
})
