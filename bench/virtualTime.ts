/**
 * Virtual time: the wall time of the seed's CLS-001 timeline (a worker ready,
 * a 20 s outage, a task created 9 s into it, the task run and reported) on the
 * simulated network under TestClock, as `test/TaskHandler.test.ts` plays it.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import * as Connection from "../src/Connection.js"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as SimulatedMaster from "../src/testing/SimulatedMaster.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import type { Bench } from "./Bench.js"
import { bars, percentile } from "./plot.js"

const Payload = Schema.Struct({ seconds: Schema.Number })

const world = TaskHandler.layer({ payload: Payload, run: (task) => Effect.sleep(`${task.payload.seconds} seconds`) })
  .pipe(
    Layer.provideMerge(SimulatedMaster.taskSource({ nodeKey: "w1" })),
    Layer.provideMerge(
      Connection.layer({
        address: "master:9666",
        services: TaskSource.services,
        readiness: { probe: SimulatedNetwork.probe }
      })
    ),
    Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
  )

// The timeline; fails if the task did not finish, so a broken run is never timed as a fast one.
const cls001 = (seed: number) =>
  Effect.gen(function*() {
    const network = yield* SimulatedNetwork.SimulatedNetwork
    const master = yield* SimulatedMaster.SimulatedMaster
    yield* TestClock.adjust("6 seconds")
    yield* network.cut
    yield* TestClock.adjust("9 seconds")
    const id = yield* master.enqueue({ payload: JSON.stringify({ seconds: 2 }) })
    yield* TestClock.adjust("11 seconds")
    yield* network.restore
    yield* TestClock.adjust("10 seconds")
    const task = yield* master.task(id)
    if (task.status !== "FINISHED") return yield* Effect.dieMessage(`seed ${seed}: the task is ${task.status}`)
  }).pipe(
    Effect.provide(world),
    Effect.withRandom(Random.make(seed)),
    Effect.provide(TestContext.TestContext),
    Logger.withMinimumLogLevel(LogLevel.None)
  )

// Each run on a fiber of its own runtime: providing TestContext leaves the TestClock in the running fiber's
// default services, and the benchmarks after this one would sleep on a clock nobody advances.
const isolated = (seed: number) => Effect.promise(() => Effect.runPromise(cls001(seed)))

// The zero-delay timers a run starts: `TestClock` settles each wake-up with them, so they are where its wall
// time goes (each waits at least 1 ms in Node).
const countingZeroTimers = <A, E>(self: Effect.Effect<A, E>): Effect.Effect<[A, number], E> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const original = globalThis.setTimeout
      const counter = { original, count: 0 }
      globalThis.setTimeout = ((handler: () => void, delay?: number, ...rest: Array<unknown>) => {
        if (!delay) counter.count++
        return (original as (...args: Array<unknown>) => ReturnType<typeof setTimeout>)(handler, delay, ...rest)
      }) as typeof setTimeout
      return counter
    }),
    (counter) => Effect.map(self, (a): [A, number] => [a, counter.count]),
    (counter) => Effect.sync(() => void (globalThis.setTimeout = counter.original))
  )

export const virtualTime: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const runs = quick ? 3 : 20
    yield* isolated(0) // warm-up: module loading and JIT are not the timeline's cost
    const walls: Array<number> = []
    const timers: Array<number> = []
    for (let seed = 1; seed <= runs; seed++) {
      const start = performance.now()
      const [, zeroTimers] = yield* countingZeroTimers(isolated(seed))
      walls.push(performance.now() - start)
      timers.push(zeroTimers)
    }
    const p50 = percentile(walls, 50)
    const max = Math.max(...walls)
    return {
      name: "virtual-time",
      title: "Virtual time: the simulated CLS-001 timeline",
      method:
        `${runs} runs (jitter seeds 1 to ${runs}) of the CLS-001 timeline, 36 s of virtual time each: worker ready, ` +
        "network cut at 6 s, a task created at 15 s, the network back at 26 s, the task run and reported; wall time per run.",
      tables: [{
        title: "Wall time per run",
        columns: ["runs", "virtual time", "p50", "max", "zero-delay timers per run (p50)", "wall time per timer (p50)"],
        rows: [[
          runs,
          "36 s",
          `${p50.toFixed(0)} ms`,
          `${max.toFixed(0)} ms`,
          percentile(timers, 50),
          `${(p50 / percentile(timers, 50)).toFixed(2)} ms`
        ]]
      }],
      targets: [{
        name: "wall time of one run",
        target: "< 200 ms",
        measured: `p50 ${p50.toFixed(0)} ms, max ${max.toFixed(0)} ms`,
        met: max < 200
      }],
      svg: bars({
        title: "Virtual time: the simulated CLS-001 timeline",
        subtitle: `36 s of virtual time, ${runs} runs`,
        unit: "wall time (ms)",
        groups: [{ label: "CLS-001", bars: [{ series: "p50 (whisker: max)", value: p50, high: max }] }]
      }),
      data: { runs, walls, timers }
    }
  })
