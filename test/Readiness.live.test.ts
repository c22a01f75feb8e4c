import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { HealthImplementation } from "grpc-health-check"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Readiness from "../src/Readiness.js"
import { addEcho, EchoClient } from "./fixtures/echo.js"
import { serve } from "./fixtures/server.js"

const services = { echo: EchoClient }

const connect = (port: number) =>
  Connection.make({ address: `127.0.0.1:${port}`, services, readiness: { probeInterval: "200 millis" } }).pipe(
    Effect.provide(GrpcChannel.layer)
  )

const awaitStatus = (conn: Connection.Connection, ready: boolean) =>
  conn.readiness.changes.pipe(
    Stream.filter((status) => status.ready === ready && status.report.rounds > 0),
    Stream.runHead,
    Effect.flatten,
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`readiness never became ${ready}`) })
  )

describe("Readiness (live loopback)", () => {
  it.scopedLive(
    "a SERVING master is ready; switched to NOT_SERVING it is not, and the report says so",
    () =>
      Effect.gen(function*() {
        const health = new HealthImplementation({ "": "SERVING" })
        const { port } = yield* serve((server) => {
          addEcho(server)
          health.addToServer(server)
        })
        const conn = yield* connect(port)
        const ready = yield* awaitStatus(conn, true)
        assert.deepStrictEqual(ready.report.checks.probe, Readiness.CheckResult.Passed())

        health.setStatus("", "NOT_SERVING")
        const notReady = yield* awaitStatus(conn, false)
        assert.strictEqual(Readiness.failingCheck(notReady.report), "probe")
        assert.include(Readiness.describeFailure(notReady.report), "NOT_SERVING")
        const state = yield* conn.state
        assert.strictEqual(state._tag, "Reconnecting")

        health.setStatus("", "SERVING")
        const again = yield* awaitStatus(conn, true)
        assert.strictEqual(again.report.generation, 2)
      }),
    20_000
  )

  it.scopedLive("a master without a health service is ready through UNIMPLEMENTED", () =>
    Effect.gen(function*() {
      const { port } = yield* serve(addEcho)
      const conn = yield* connect(port)
      const report = yield* conn.readiness.await
      assert.deepStrictEqual(report.checks.probe, Readiness.CheckResult.Passed())
      assert.strictEqual(report.rounds, 1)
    }), 20_000)

  it.scopedLive(
    "the health probe fails NotServing, Unavailable and Timeout for what they mean",
    () =>
      Effect.gen(function*() {
        const health = new HealthImplementation({ "": "NOT_SERVING" })
        const { port } = yield* serve((server) => health.addToServer(server))
        const dial = (address: string) =>
          Effect.flatMap(
            GrpcChannel.Dialer,
            (dialer) => dialer.dial({ address, credentials: grpc.credentials.createInsecure(), channelOptions: {} })
          ).pipe(
            Effect.provide(GrpcChannel.layer)
          )
        const target = (channel: GrpcChannel.GrpcChannel): Readiness.Target => ({
          generation: 1,
          channel,
          clients: {},
          services: []
        })
        const serving = target(yield* dial(`127.0.0.1:${port}`))
        const notServing = yield* Effect.flip(Readiness.healthProbe()(serving))
        assert.strictEqual(notServing.reason, "NotServing")
        // A health service with no status for the name has answered.
        assert.isTrue((yield* Effect.either(Readiness.healthProbe("worker.v1.Unknown")(serving)))._tag === "Right")

        const { port: closed } = yield* serve(() => {}).pipe(Effect.scoped)
        const refused = yield* Effect.flip(Readiness.healthProbe()(target(yield* dial(`127.0.0.1:${closed}`))))
        assert.strictEqual(refused.reason, "Unavailable")
        assert.strictEqual(refused.code, grpc.status.UNAVAILABLE)

        const silent = yield* Effect.flip(Readiness.answers(serving, () => Effect.never, "100 millis"))
        assert.strictEqual(silent.reason, "Timeout")
      }),
    20_000
  )
})
