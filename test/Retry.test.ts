import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"
import { ClientUnavailable, ConnectError, type ConnectErrorReason, ConnectionState } from "../src/ConnectionState.js"
import * as GrpcError from "../src/GrpcError.js"
import * as Retry from "../src/Retry.js"

const delaysOf = (schedule: Schedule.Schedule<unknown, unknown>, count: number) =>
  Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: count }, () => undefined)).pipe(
    Effect.map((delays) => Chunk.toReadonlyArray(delays).map(Duration.toMillis))
  )

describe("Retry.reconnect", () => {
  it.effect("backs off 0.5, 1, 2, 2 ... s in the first minute, then grows on to a 30 s cap", () =>
    Effect.gen(function*() {
      const delays = yield* delaysOf(Retry.reconnect, 37).pipe(Effect.withRandom(Random.fixed([0.5])))
      // Steps at 0, 0.5, 1.5, 3.5 ... 59.5 s stay under the 2 s cap; the step at 61.5 s starts the long phase.
      assert.deepStrictEqual(delays, [
        500,
        1000,
        ...Array.from({ length: 30 }, () => 2000),
        4000,
        8000,
        16000,
        30000,
        30000
      ])
    }))

  it.effect("jitters every delay by 0.8 to 1.2 after the cap", () =>
    Effect.gen(function*() {
      // 50 delays: the outage stays under 16.7 minutes, where the 30 s cap starts to grow with it.
      const low = yield* delaysOf(Retry.reconnect, 50).pipe(Effect.withRandom(Random.fixed([0])))
      const high = yield* delaysOf(Retry.reconnect, 50).pipe(Effect.withRandom(Random.fixed([0.999999])))
      assert.deepStrictEqual(low.slice(0, 4), [400, 800, 1600, 1600])
      assert.deepStrictEqual(high.slice(0, 4).map(Math.round), [600, 1200, 2400, 2400])
      assert.strictEqual(Math.max(...low), 24_000)
      assert.strictEqual(Math.round(Math.max(...high)), 36_000)
    }))

  it.effect("never stops by itself", () =>
    Effect.gen(function*() {
      const delays = yield* delaysOf(Retry.reconnect, 1000).pipe(Effect.withRandom(Random.fixed([0.5])))
      assert.strictEqual(delays.length, 1000)
      assert.strictEqual(delays.at(-1), 120_000)
    }))

  it.effect("a long outage: the 30 s cap until 3 % of the outage is longer (16.7 minutes), then that, up to 2 minutes", () =>
    Effect.gen(function*() {
      const delays = yield* delaysOf(Retry.reconnect, 200).pipe(Effect.withRandom(Random.fixed([0.5])))
      let at = 0
      for (const [i, delay] of delays.entries()) {
        // The first minute and the climb to the long cap, as before; the cap then follows the outage.
        if (at >= 90_000) {
          assert.strictEqual(delay, Math.min(120_000, Math.max(30_000, Math.round(0.03 * at))), `step ${i} at ${at} ms`)
        }
        at += delay
      }
      // 30 s apart until 1000 s into the outage, and 120 s apart from 4000 s on.
      const at1000 = delays.findIndex((_, i) => delays.slice(0, i + 1).reduce((a, b) => a + b, 0) > 1_000_000)
      assert.deepStrictEqual(delays.slice(at1000 - 3, at1000), [30_000, 30_000, 30_000])
      assert.strictEqual(delays.at(-1), 120_000)
    }))

  it.effect("a long cap above the 2 minutes the cap grows to is kept", () =>
    Effect.gen(function*() {
      const schedule = Retry.reconnectWith({ longCap: "5 minutes", jitter: { min: 1, max: 1 } })
      const delays = yield* delaysOf(schedule, 50)
      assert.strictEqual(delays.at(-1), 300_000)
    }))

  it.effect("takes its shape from options", () =>
    Effect.gen(function*() {
      const schedule = Retry.reconnectWith({
        base: "100 millis",
        factor: 3,
        shortCap: "1 second",
        shortPhase: "2 seconds",
        longCap: "5 seconds",
        jitter: { min: 1, max: 1 }
      })
      // 0.1, 0.3, 0.9 (at 0, 0.1, 0.4 s), 1 (at 1.3 s), then from 2.3 s: 3, 5, 5.
      assert.deepStrictEqual(yield* delaysOf(schedule, 7), [100, 300, 900, 1000, 3000, 5000, 5000])
    }))
})

const refused = new ConnectError({ reason: "Refused", message: "connection refused" })
const timedOut = new ConnectError({ reason: "ConnectTimeout", message: "not READY within 3s", stage: "Handshake" })

// The delays for these inputs, each step at the previous one's end: the failures of one outage, back to back.
const delaysFor = (schedule: Schedule.Schedule<unknown, unknown>, inputs: ReadonlyArray<unknown>) =>
  Schedule.run(Schedule.delays(schedule), 0, inputs).pipe(
    Effect.map((delays) => Chunk.toReadonlyArray(delays).map(Duration.toMillis))
  )

describe("Retry.reconnect, by what a failure cost the master", () => {
  it("refused, unreachable and not resolved are cheap; timeouts, readiness, TLS and the rest are costly", () => {
    const cases: ReadonlyArray<readonly [ConnectErrorReason | "not a ConnectError", "Cheap" | "Costly"]> = [
      ["Refused", "Cheap"],
      ["HostUnreachable", "Cheap"],
      ["NameNotResolved", "Cheap"],
      ["TlsRefused", "Costly"],
      ["TransientFailure", "Costly"],
      ["ConnectTimeout", "Costly"],
      ["NotReady", "Costly"],
      ["Shutdown", "Costly"],
      ["not a ConnectError", "Costly"]
    ]
    for (const [reason, cost] of cases) {
      const error = reason === "not a ConnectError" ? new Error("Refused") : new ConnectError({ reason, message: "" })
      assert.strictEqual(Retry.reconnectCost(error), cost, reason)
    }
  })

  it.effect("after a cheap failure: 250 ms, then 3 % of the outage so far, up to 2 minutes", () =>
    Effect.gen(function*() {
      const delays = yield* delaysFor(Retry.reconnect, Array.from({ length: 260 }, () => refused)).pipe(
        Effect.withRandom(Random.fixed([0.5]))
      )
      // Steps 250 ms apart until 3 % of the elapsed time passes 250 ms: the step at 8.5 s waits 255 ms.
      assert.deepStrictEqual(delays.slice(0, 34), Array.from({ length: 34 }, () => 250))
      assert.deepStrictEqual(delays.slice(34, 37), [255, 263, 271])
      // Each later step waits 3 % of the time so far, until the cap.
      let at = 0
      for (const [i, delay] of delays.entries()) {
        if (i >= 34) assert.strictEqual(delay, Math.min(120_000, Math.round(0.03 * at)), `step ${i} at ${at} ms`)
        at += delay
      }
      assert.strictEqual(delays.at(-1), 120_000)
    }))

  it.effect("after a costly failure: as if every failure had been costly, so a fleet refused for a while backs off at the cap", () =>
    Effect.gen(function*() {
      // Ten refusals, then timeouts: the first timeout already waits the short cap, not the first delay.
      const delays = yield* delaysFor(Retry.reconnect, [
        ...Array.from({ length: 10 }, () => refused),
        timedOut,
        timedOut
      ])
        .pipe(Effect.withRandom(Random.fixed([0.5])))
      assert.deepStrictEqual(delays, [...Array.from({ length: 10 }, () => 250), 2000, 2000])
      // Timeouts alone: today's 0.5, 1, 2 s.
      const alone = yield* delaysFor(Retry.reconnect, [timedOut, timedOut, timedOut, timedOut])
        .pipe(Effect.withRandom(Random.fixed([0.5])))
      assert.deepStrictEqual(alone, [500, 1000, 2000, 2000])
    }))

  it.effect("cheap delays are jittered like the others: 200 to 300 ms", () =>
    Effect.gen(function*() {
      const low = yield* delaysFor(Retry.reconnect, [refused]).pipe(Effect.withRandom(Random.fixed([0])))
      const high = yield* delaysFor(Retry.reconnect, [refused]).pipe(Effect.withRandom(Random.fixed([0.999999])))
      assert.deepStrictEqual([low, high], [[200], [300]])
    }))

  it.effect("takes the cheap delays from options", () =>
    Effect.gen(function*() {
      const schedule = Retry.reconnectWith({
        soon: "100 millis",
        soonFraction: 0.5,
        soonCap: "300 millis",
        jitter: { min: 1, max: 1 }
      })
      const delays = yield* delaysFor(schedule, Array.from({ length: 5 }, () => refused))
      // At 0, 0.1 and 0.2 s: 100 ms; at 0.3 s: 150 ms; at 0.45 s: the 300 ms cap.
      assert.deepStrictEqual(delays, [100, 100, 100, 150, 225].map((d) => Math.min(d, 300)))
    }))
})

const grpcError = (
  code: grpc.status,
  extra: Partial<{ beforeSend: boolean; rstCode: number; tooLarge: { size: number; limit: number } }> = {}
) => new GrpcError.GrpcError({ code, details: "test", service: "echo", method: "say", ...extra })

const unavailable = (reason: "Timeout" | "Closed" | "UnknownService") =>
  new ClientUnavailable({
    reason,
    service: "echo",
    state: ConnectionState.Connecting({ attempt: 1 }),
    waited: Duration.seconds(15)
  })

describe("Retry.isTransient", () => {
  const cases: ReadonlyArray<readonly [string, unknown, boolean, boolean]> = [
    // [case, error, transient for a plain call, transient for an idempotent call]
    ["UNAVAILABLE", grpcError(grpc.status.UNAVAILABLE), true, true],
    ["RESOURCE_EXHAUSTED", grpcError(grpc.status.RESOURCE_EXHAUSTED), true, true],
    [
      "RESOURCE_EXHAUSTED for a message over the size limit",
      grpcError(grpc.status.RESOURCE_EXHAUSTED, { tooLarge: { size: 70_000, limit: 16_384 } }),
      false,
      false
    ],
    ["ABORTED", grpcError(grpc.status.ABORTED), true, true],
    ["DEADLINE_EXCEEDED", grpcError(grpc.status.DEADLINE_EXCEEDED), false, true],
    ["INTERNAL from a reset stream", grpcError(grpc.status.INTERNAL, { rstCode: 2 }), true, true],
    ["INTERNAL", grpcError(grpc.status.INTERNAL), false, false],
    ["UNAUTHENTICATED", grpcError(grpc.status.UNAUTHENTICATED), false, false],
    ["PERMISSION_DENIED", grpcError(grpc.status.PERMISSION_DENIED), false, false],
    ["INVALID_ARGUMENT", grpcError(grpc.status.INVALID_ARGUMENT), false, false],
    ["NOT_FOUND", grpcError(grpc.status.NOT_FOUND), false, false],
    ["UNIMPLEMENTED", grpcError(grpc.status.UNIMPLEMENTED), false, false],
    ["FAILED_PRECONDITION", grpcError(grpc.status.FAILED_PRECONDITION), false, false],
    ["CANCELLED (a server going away mid-call)", grpcError(grpc.status.CANCELLED), true, true],
    ["UNKNOWN", grpcError(grpc.status.UNKNOWN), false, false],
    ["ClientUnavailable Timeout", unavailable("Timeout"), true, true],
    ["ClientUnavailable Closed", unavailable("Closed"), false, false],
    ["ClientUnavailable UnknownService", unavailable("UnknownService"), false, false],
    ["a thrown Error (defect)", new Error("UNAVAILABLE"), false, false],
    ["a string", "UNAVAILABLE", false, false]
  ]
  for (const [name, error, plain, idempotent] of cases) {
    it(`${name}: ${plain ? "transient" : "not transient"}${plain !== idempotent ? `, ${idempotent ? "transient" : "not"} when idempotent` : ""}`, () => {
      assert.strictEqual(Retry.isTransient(error), plain)
      assert.strictEqual(Retry.isTransient(error, { idempotent: true }), idempotent)
    })
  }

  it("reads a message over a size limit from grpc-js's details, once, into a typed field", () => {
    const serviceError = (code: grpc.status, details: string) =>
      Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() })
    const received = GrpcError.fromServiceError(
      serviceError(grpc.status.RESOURCE_EXHAUSTED, "Received message larger than max (70000 vs 16384)"),
      "task",
      "FetchTask"
    )
    assert.deepStrictEqual(received.tooLarge, { size: 70_000, limit: 16_384 })
    const sent = GrpcError.fromServiceError(
      serviceError(grpc.status.RESOURCE_EXHAUSTED, "Sent message larger than max (5000 vs. 4096)"),
      "task",
      "ReportStatus"
    )
    assert.deepStrictEqual(sent.tooLarge, { size: 5000, limit: 4096 })
    // A server out of quota says RESOURCE_EXHAUSTED too: that one may pass.
    const quota = GrpcError.fromServiceError(
      serviceError(grpc.status.RESOURCE_EXHAUSTED, "quota exceeded"),
      "task",
      "FetchTask"
    )
    assert.isUndefined(quota.tooLarge)
    assert.isTrue(Retry.isTransient(quota))
  })

  it("reads the reset-stream code grpc-js leaves only in its details, once, into a typed field", () => {
    const error = GrpcError.fromServiceError(
      Object.assign(new Error("13 INTERNAL"), {
        code: grpc.status.INTERNAL,
        details: "Received RST_STREAM with code 2 (Internal server error)",
        metadata: new grpc.Metadata()
      }),
      "echo",
      "say"
    )
    assert.strictEqual(error.rstCode, 2)
    assert.isTrue(Retry.isTransient(error))
  })

  it("retries a non-idempotent call only when its request was never sent", () => {
    assert.isFalse(Retry.isRetryable(grpcError(grpc.status.UNAVAILABLE)))
    assert.isTrue(Retry.isRetryable(grpcError(grpc.status.UNAVAILABLE, { beforeSend: true })))
    assert.isTrue(Retry.isRetryable(grpcError(grpc.status.UNAVAILABLE), { idempotent: true }))
    assert.isTrue(Retry.isRetryable(unavailable("Timeout")))
    assert.isFalse(Retry.isRetryable(grpcError(grpc.status.UNAUTHENTICATED, { beforeSend: true })))
  })
})

describe("Retry schedules", () => {
  it.effect("lookup: 2 s apart, 3 attempts in all", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* delaysOf(Retry.lookup, 10), [2000, 2000, 0])
    }))

  it.effect("call: exponential from 100 ms, 5 attempts in all, jittered", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(
        yield* delaysOf(Retry.call, 10).pipe(Effect.withRandom(Random.fixed([0.5]))),
        [100, 200, 400, 800, 0]
      )
      const low = yield* delaysOf(Retry.call, 10).pipe(Effect.withRandom(Random.fixed([0])))
      assert.deepStrictEqual(low, [80, 160, 320, 640, 0])
    }))
})

describe("Retry.transient (virtual time)", () => {
  const failing = <E>(error: E) =>
    Effect.gen(function*() {
      const times: Array<number> = []
      const effect = Effect.flatMap(TestClock.currentTimeMillis, (now) => {
        times.push(now)
        return Effect.fail(error)
      })
      return { times, effect }
    })

  it.effect("the lookup retry makes exactly 3 attempts, at 0, 2 and 4 s", () =>
    Effect.gen(function*() {
      const { times, effect } = yield* failing(unavailable("Timeout"))
      const fiber = yield* Effect.fork(Effect.flip(effect.pipe(Retry.transient(Retry.lookup))))
      yield* TestClock.adjust("1 minute")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error.reason, "Timeout")
      assert.deepStrictEqual(times, [0, 2000, 4000])
    }))

  it.effect("a non-transient failure is not retried", () =>
    Effect.gen(function*() {
      const { times, effect } = yield* failing(grpcError(grpc.status.UNAUTHENTICATED))
      const fiber = yield* Effect.fork(Effect.flip(effect.pipe(Retry.transient(Retry.call, { idempotent: true }))))
      yield* TestClock.adjust("1 minute")
      assert.strictEqual((yield* Fiber.join(fiber)).code, grpc.status.UNAUTHENTICATED)
      assert.deepStrictEqual(times, [0])
    }))

  it.effect("a transient failure of a sent, non-idempotent call is not retried; an unsent one is", () =>
    Effect.gen(function*() {
      const sent = yield* failing(grpcError(grpc.status.UNAVAILABLE))
      yield* Effect.fork(Effect.flip(sent.effect.pipe(Retry.transient(Retry.call))))
      const unsent = yield* failing(grpcError(grpc.status.UNAVAILABLE, { beforeSend: true }))
      yield* Effect.fork(Effect.flip(unsent.effect.pipe(Retry.transient(Retry.call))))
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(sent.times, [0])
      assert.deepStrictEqual(unsent.times, [0, 100, 300, 700, 1500])
    }).pipe(Effect.withRandom(Random.fixed([0.5]))))

  it.effect("is data-first and data-last", () =>
    Effect.gen(function*() {
      const { times, effect } = yield* failing(unavailable("Timeout"))
      const fiber = yield* Effect.fork(Effect.flip(Retry.transient(effect, Retry.lookup)))
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(fiber)
      assert.strictEqual(times.length, 3)
    }))
})
