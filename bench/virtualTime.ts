/**
 * Virtual time: the wall time of the seed's CLS-001 timeline (a worker ready,
 * a 20 s outage, a task created 9 s into it, the task run and reported) on the
 * simulated network under TestClock, as `test/TaskHandler.test.ts` plays it;
 * and of a 60-minute outage, of a worker and of its connection alone, with the
 * clock's wake-ups (the sleeps scheduled on it, by loop) that its wall time
 * goes to; and, beside them, what a wake-up costs `TestClock` with nothing
 * else running: the floor under every figure here.
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
import { withCountingClock } from "../test/fixtures/countingClock.js"
import type { Bench } from "./Bench.js"
import { bars, percentile } from "./plot.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("bench/MasterLink", TaskSource.services)<MasterLink>() {}

const Payload = Schema.Struct({ seconds: Schema.Number })

const connection = MasterLink.layer({
  address: "master:9666",
  readiness: { probe: SimulatedNetwork.probe }
})

const world = TaskHandler.layer({
  connection: MasterLink,
  payload: Payload,
  run: (task) => Effect.sleep(`${task.payload.seconds} seconds`)
})
  .pipe(
    Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provideMerge(connection),
    Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
  )

// The connection alone: what the connection layer's own loops cost.
const connectionAlone = Layer.provideMerge(connection, SimulatedNetwork.layer())

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

interface OutageRun {
  readonly wall: number
  readonly wakeups: number
  /** Wake-ups by loop (`module/fiber`), every duration together. */
  readonly byLoop: Record<string, number>
}

// Ready, then the link cut for 60 minutes: the wall time and the wake-ups of those 60 minutes; fails if the
// connection is not Ready again 131 s after the link is back.
const outage = (seed: number, layer: Layer.Layer<MasterLink | SimulatedNetwork.SimulatedNetwork, unknown>) =>
  withCountingClock((wakeups) =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* MasterLink
      yield* TestClock.adjust("6 seconds")
      yield* network.cut
      yield* wakeups.reset
      const start = performance.now()
      yield* TestClock.adjust("60 minutes")
      const wall = performance.now() - start
      const count = yield* wakeups.count
      const byLoop: Record<string, number> = {}
      for (const [caller, n] of yield* wakeups.byCaller) {
        const loop = caller.replace(/ \d+ms$/, "")
        byLoop[loop] = (byLoop[loop] ?? 0) + n
      }
      yield* network.restore
      // An hour in, the next attempt is up to 3 % of the hour (108 s, jittered up to 130 s) away.
      yield* TestClock.adjust("131 seconds")
      const state = yield* conn.state
      if (state._tag !== "Ready") return yield* Effect.dieMessage(`seed ${seed}: ${state._tag} after the outage`)
      return { wall, wakeups: count, byLoop } satisfies OutageRun
    }).pipe(Effect.provide(layer))
  ).pipe(
    Effect.withRandom(Random.make(seed)),
    Effect.provide(TestContext.TestContext),
    Logger.withMinimumLogLevel(LogLevel.None)
  )

// TestClock's own cost of a wake-up: one fiber sleeping 1 s at a time and doing nothing else, `n` seconds of it in
// one adjust. Each wake-up is a step of `TestClock.adjust`, which waits for the fibers to settle with three
// zero-delay timers; the adjust itself ends with three more.
const idle = (n: number) =>
  Effect.gen(function*() {
    yield* Effect.fork(Effect.forever(Effect.sleep("1 second")))
    const start = performance.now()
    yield* TestClock.adjust(`${n} seconds`)
    return performance.now() - start
  }).pipe(Effect.provide(TestContext.TestContext))

// Each run on a fiber of its own runtime: providing TestContext leaves the TestClock in the running fiber's
// default services, and the benchmarks after this one would sleep on a clock nobody advances.
const isolated = (seed: number) => Effect.promise(() => Effect.runPromise(cls001(seed)))
const isolatedOutage = (seed: number, layer: Parameters<typeof outage>[1]) =>
  Effect.promise(() => Effect.runPromise(outage(seed, layer)))

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
    // One 60-minute outage each: a run takes seconds, and its wake-ups, not its jitter, are the point.
    const outages: Array<readonly [string, OutageRun, number]> = []
    for (const [label, layer] of [["worker", world], ["connection alone", connectionAlone]] as const) {
      const [run, zeroTimers] = yield* countingZeroTimers(isolatedOutage(1, layer))
      outages.push([label, run, zeroTimers])
    }
    const worker = outages[0]![1]
    const idleWakeups = quick ? 100 : 300
    const [idleWall, idleTimers] = yield* countingZeroTimers(Effect.promise(() => Effect.runPromise(idle(idleWakeups))))
    return {
      name: "virtual-time",
      title: "Virtual time: the simulated CLS-001 timeline",
      method:
        `${runs} runs (jitter seeds 1 to ${runs}) of the CLS-001 timeline, 36 s of virtual time each: worker ready, ` +
        "network cut at 6 s, a task created at 15 s, the network back at 26 s, the task run and reported; wall time per run. " +
        "Then one 60-minute outage of the same worker, and one of its connection alone: the wall time of the 60 " +
        "minutes, and the clock's wake-ups in them (sleeps scheduled on TestClock, each a step of its own). " +
        "Last, the floor: one fiber that only sleeps, 1 s at a time, its wake-ups in one adjust.",
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
      }, {
        title: "A 60-minute outage (link cut after 6 s, jitter seed 1)",
        columns: ["what runs", "wall time", "wake-ups", "zero-delay timers", "wake-ups by loop"],
        rows: outages.map(([label, run, zeroTimers]) => [
          label,
          `${(run.wall / 1000).toFixed(2)} s`,
          run.wakeups,
          zeroTimers,
          Object.entries(run.byLoop).sort(([, a], [, b]) => b - a).map(([loop, n]) => `${loop} ${n}`).join(", ")
        ])
      }, {
        title: "The floor: TestClock's own cost of a wake-up (one idle fiber, nothing else running)",
        columns: ["wake-ups", "wall time", "zero-delay timers", "wall time per wake-up"],
        rows: [[
          idleWakeups,
          `${idleWall.toFixed(0)} ms`,
          idleTimers,
          `${(idleWall / idleWakeups).toFixed(2)} ms`
        ]]
      }],
      targets: [{
        name: "wall time of one run",
        target: "< 200 ms",
        measured: `p50 ${p50.toFixed(0)} ms, max ${max.toFixed(0)} ms`,
        met: max < 200
      }, {
        name: "wall time of a worker's 60-minute outage",
        target: "< 1 s",
        measured: `${(worker.wall / 1000).toFixed(2)} s (${worker.wakeups} wake-ups)`,
        met: worker.wall < 1000
      }],
      svg: bars({
        title: "Virtual time: the simulated CLS-001 timeline",
        subtitle: `36 s of virtual time, ${runs} runs`,
        unit: "wall time (ms)",
        groups: [{ label: "CLS-001", bars: [{ series: "p50 (whisker: max)", value: p50, high: max }] }]
      }),
      data: {
        runs,
        walls,
        timers,
        outages: outages.map(([label, run, zeroTimers]) => ({ label, ...run, zeroTimers })),
        idle: { wakeups: idleWakeups, wall: idleWall, zeroTimers: idleTimers }
      }
    }
  })
