import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Breaker from "../src/Breaker.js"
import * as Connection from "../src/Connection.js"
import * as GrpcError from "../src/GrpcError.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { EchoClient } from "./fixtures/echo.js"

const unavailable = Effect.fail(
  new GrpcError.GrpcError({ code: grpc.status.UNAVAILABLE, details: "down", service: "echo", method: "say" })
)
const denied = Effect.fail(
  new GrpcError.GrpcError({ code: grpc.status.PERMISSION_DENIED, details: "no", service: "echo", method: "say" })
)

const noJitter = Effect.withRandom(Random.fixed([0.5]))

const failTimes = (breaker: Breaker.Breaker, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => Effect.either(breaker.protect(unavailable)), { discard: true })

describe("Breaker (virtual time)", () => {
  it.scoped("opens after 5 consecutive transient failures, fails fast, half-opens at 1 s and closes on a success", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make()
      yield* failTimes(breaker, 4)
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Closed({ failures: 4 }))
      yield* failTimes(breaker, 1)
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Open({ since: 0, until: 1000 }))

      let ran = 0
      const counted = Effect.sync(() => ran++)
      const fast = yield* Effect.flip(breaker.protect(counted))
      assert.strictEqual(fast._tag, "BreakerOpen")
      assert.strictEqual(ran, 0)

      yield* TestClock.adjust("999 millis")
      assert.strictEqual((yield* breaker.state)._tag, "Open")
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.HalfOpen({ trial: false }))
      yield* breaker.protect(counted)
      assert.strictEqual(ran, 1)
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Closed({ failures: 0 }))
    }).pipe(noJitter))

  it.scoped("a failed trial opens it again for the schedule's next delay; closing restarts the schedule", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make()
      yield* failTimes(breaker, 5)
      yield* TestClock.adjust("1 second")
      yield* Effect.either(breaker.protect(unavailable))
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Open({ since: 1000, until: 3000 }))
      yield* TestClock.adjust("2 seconds")
      yield* breaker.protect(Effect.void)
      yield* failTimes(breaker, 5)
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Open({ since: 3000, until: 4000 }))
    }).pipe(noJitter))

  it.scoped("while the trial is under way, other calls fail fast; an interrupted trial frees the slot", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make({ threshold: 1 })
      yield* failTimes(breaker, 1)
      yield* TestClock.adjust("1 second")
      const started = yield* Deferred.make<void>()
      const trial = yield* Effect.fork(
        breaker.protect(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
      )
      yield* Deferred.await(started)
      const refused = yield* Effect.flip(breaker.protect(Effect.void))
      assert.strictEqual(refused.reason, "TrialUnderWay")
      yield* Fiber.interrupt(trial)
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.HalfOpen({ trial: false }))
    }).pipe(noJitter))

  it.scoped("an answer from the master, even an error, resets the count", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make()
      yield* failTimes(breaker, 4)
      yield* Effect.either(breaker.protect(denied))
      assert.deepStrictEqual(yield* breaker.state, Breaker.BreakerState.Closed({ failures: 0 }))
    }))

  it.scoped("its state changes are observable", () =>
    Effect.gen(function*() {
      const breaker = yield* Breaker.make({ threshold: 2 })
      const seen = yield* breaker.changes.pipe(
        Stream.map((s) => s._tag),
        Stream.changes,
        Stream.take(4),
        Stream.runCollect,
        Effect.fork
      )
      yield* TestClock.adjust(0) // the subscriber is listening
      yield* failTimes(breaker, 2)
      yield* TestClock.adjust("1 second")
      yield* breaker.protect(Effect.void)
      assert.deepStrictEqual(Array.from(yield* Fiber.join(seen)), ["Closed", "Open", "HalfOpen", "Closed"])
    }).pipe(noJitter))

  it.scoped("rejects a threshold that is not a positive whole number", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Breaker.make({ threshold: 0 }))
      assert.strictEqual(error.option, "breaker.threshold")
    }))

  it.effect("the connection's reconnect loop keeps going while the breaker is open", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* Connection.Connection
      yield* TestClock.adjust("1 second")
      yield* network.cut
      yield* failTimes(conn.breaker, 5)
      assert.strictEqual((yield* conn.breaker.state)._tag, "Open")
      yield* network.restore
      yield* TestClock.adjust("900 millis")
      assert.strictEqual((yield* conn.breaker.state)._tag, "Open")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
    }).pipe(
      Effect.provide(
        Connection.layer({
          address: "master:9666",
          services: { echo: EchoClient },
          readiness: { probe: SimulatedNetwork.probe }
        }).pipe(Layer.provideMerge(SimulatedNetwork.layer()))
      ),
      noJitter
    ))
})
