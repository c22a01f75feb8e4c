import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
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
      assert.deepStrictEqual(delays, [500, 1000, ...Array.from({ length: 30 }, () => 2000), 4000, 8000, 16000, 30000, 30000])
    }))

  it.effect("jitters every delay by 0.8 to 1.2 after the cap", () =>
    Effect.gen(function*() {
      const low = yield* delaysOf(Retry.reconnect, 60).pipe(Effect.withRandom(Random.fixed([0])))
      const high = yield* delaysOf(Retry.reconnect, 60).pipe(Effect.withRandom(Random.fixed([0.999999])))
      assert.deepStrictEqual(low.slice(0, 4), [400, 800, 1600, 1600])
      assert.deepStrictEqual(high.slice(0, 4).map(Math.round), [600, 1200, 2400, 2400])
      assert.strictEqual(Math.max(...low), 24_000)
      assert.strictEqual(Math.round(Math.max(...high)), 36_000)
    }))

  it.effect("never stops by itself", () =>
    Effect.gen(function*() {
      const delays = yield* delaysOf(Retry.reconnect, 1000).pipe(Effect.withRandom(Random.fixed([0.5])))
      assert.strictEqual(delays.length, 1000)
      assert.strictEqual(delays.at(-1), 30_000)
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
