/**
 * What is done with a task's process groups, in virtual time, over a
 * simulated operating system: which group is signalled, when, and what the
 * task's report says after a restart.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskProcess from "../src/TaskProcess.js"
import * as SimulatedMaster from "../src/testing/SimulatedMaster.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { MasterLink } from "./fixtures/masterLink.js"

interface Simulated {
  readonly pid: number
  readonly group: number
  readonly start: string
  /** What it does on SIGTERM: ends after this many millis, or ignores it. */
  readonly onTerm: number | "ignores"
}

// A simulated operating system: its processes, and every signal sent, with the virtual time it was sent at.
const system = (processes: ReadonlyArray<Simulated>) => {
  const alive = new Map(processes.map((p) => [p.pid, p]))
  const signals: Array<{ readonly at: number; readonly pgid: number; readonly signal: string }> = []
  const members = (pgid: number) => Array.from(alive.values()).filter((p) => p.group === pgid)
  const layer = Layer.succeed(
    TaskProcess.ProcessGroups,
    TaskProcess.ProcessGroups.of({
      start: () => Effect.dieMessage("not simulated"),
      inspect: (pid) =>
        Effect.sync(() => Option.map(Option.fromNullable(alive.get(pid)), (p) => ({ group: p.group, start: p.start }))),
      boot: Effect.succeedSome("boot-2"),
      members: (pgid) => Effect.sync(() => members(pgid).map(({ pid, start }) => ({ pid, start }))),
      signal: (pgid, signal) =>
        Effect.gen(function*() {
          const targets = members(pgid)
          signals.push({ at: yield* TestClock.currentTimeMillis, pgid, signal })
          for (const p of targets) {
            if (signal === "SIGKILL") alive.delete(p.pid)
            else if (p.onTerm !== "ignores") {
              yield* Effect.forkDaemon(Effect.delay(Effect.sync(() => alive.delete(p.pid)), p.onTerm))
            }
          }
          return targets.length > 0
        })
    })
  )
  return { layer, signals, alive }
}

const leader = (pgid: number, start: string, onTerm: Simulated["onTerm"]): Simulated => ({
  pid: pgid,
  group: pgid,
  start,
  onTerm
})

// Ends the group in a fiber, lets `millis` of virtual time pass, and returns what it came to.
const ending = (group: TaskProcess.ProcessGroup, millis: number, options?: TaskProcess.EndOptions) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(TaskProcess.end(group, options))
    yield* TestClock.adjust(millis)
    return yield* Fiber.join(fiber)
  })

describe("TaskProcess.end (virtual time)", () => {
  it.effect("a group whose leader runs with the recorded start time gets SIGTERM, and SIGKILL 2 s later if it stays", () => {
    const os = system([leader(4242, "100", "ignores"), { pid: 4243, group: 4242, start: "101", onTerm: "ignores" }])
    return Effect.gen(function*() {
      const outcome = yield* ending({ pgid: 4242, start: "100" }, 5_000)
      assert.deepStrictEqual(outcome, { group: { pgid: 4242, start: "100" }, result: "Ended", signal: "SIGKILL" })
      assert.deepStrictEqual(os.signals, [
        { at: 0, pgid: 4242, signal: "SIGTERM" },
        { at: 2_000, pgid: 4242, signal: "SIGKILL" }
      ])
      assert.strictEqual(os.alive.size, 0)
    }).pipe(Effect.provide(os.layer))
  })

  it.effect("a group that ends on SIGTERM within the grace is not sent SIGKILL", () => {
    const os = system([leader(4242, "100", 300)])
    return Effect.gen(function*() {
      const outcome = yield* ending({ pgid: 4242, start: "100" }, 5_000)
      assert.strictEqual(outcome.signal, "SIGTERM")
      assert.deepStrictEqual(os.signals, [{ at: 0, pgid: 4242, signal: "SIGTERM" }])
    }).pipe(Effect.provide(os.layer))
  })

  it.effect("a pid now another process's (another start time or boot), a group gone, a group without its leader: left alone", () => {
    const os = system([leader(4242, "999", "ignores"), { pid: 5001, group: 5000, start: "100", onTerm: "ignores" }])
    return Effect.gen(function*() {
      assert.strictEqual((yield* ending({ pgid: 4242, start: "100" }, 5_000)).result, "Reused")
      assert.strictEqual((yield* ending({ pgid: 6000, start: "100" }, 5_000)).result, "Gone")
      assert.strictEqual((yield* ending({ pgid: 5000, start: "90" }, 5_000)).result, "Leaderless")
      assert.strictEqual((yield* ending({ pgid: 4242 }, 5_000)).result, "Unchecked")
      // The same pid and start time in another boot: start times count from the boot.
      assert.strictEqual((yield* ending({ pgid: 4242, start: "999", boot: "boot-1" }, 5_000)).result, "Gone")
      assert.deepStrictEqual(os.signals, [])
      assert.strictEqual(os.alive.size, 2)
    }).pipe(Effect.provide(os.layer))
  })

  it.effect("a group of this worker's own (the end of a task's scope) is ended without its leader", () => {
    const os = system([{ pid: 5001, group: 5000, start: "100", onTerm: 10 }])
    return Effect.gen(function*() {
      const outcome = yield* ending({ pgid: 5000, start: "90" }, 1_000, { trust: "group" })
      assert.deepStrictEqual([outcome.result, outcome.signal], ["Ended", "SIGTERM"])
      assert.strictEqual(os.alive.size, 0)
    }).pipe(Effect.provide(os.layer))
  })

  it("describe: what the report says", () => {
    const group = (pgid: number) => ({ pgid, start: "1" })
    assert.strictEqual(
      TaskProcess.describe([{ group: group(4242), result: "Ended", signal: "SIGTERM" }]),
      "its processes (group 4242) were ended"
    )
    assert.strictEqual(
      TaskProcess.describe([
        { group: group(1), result: "Gone" },
        { group: group(2), result: "Reused" },
        { group: group(3), result: "Ended", signal: "SIGKILL" },
        { group: group(4), result: "Ended", signal: "SIGTERM" }
      ]),
      "its processes (groups 3, 4) were ended"
    )
    assert.strictEqual(
      TaskProcess.describe([{ group: group(1), result: "Gone" }, { group: group(2), result: "Reused" }]),
      "nothing it started was left running"
    )
  })
})

// The task handler over the simulated master, on a store its lives share, as a disk is shared by a worker's restarts.
const Payload = Schema.Struct({ pgid: Schema.Number })
const simulatedConnection = MasterLink.layer({
  address: "master:9666",
  readiness: { probe: SimulatedNetwork.probe }
})
const shared = Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory)

// A task that records a process group (as `TaskProcess.start` does for a real one) and runs until stopped.
const recording = (task: TaskHandler.Task<typeof Payload.Type>) =>
  Effect.flatMap(TaskProcess.RunningTask, (running) => running.record({ pgid: task.payload.pgid, start: "100" })).pipe(
    Effect.zipRight(Effect.never)
  )

// Frozen: the process is dead, nothing more reaches its disk.
const disk = { frozen: false }
const freezable = Layer.effect(
  Outbox.OutboxStore,
  Effect.map(Outbox.OutboxStore, (inner) =>
    Outbox.OutboxStore.of({
      open: (owner) =>
        Effect.map(inner.open(owner), (records) => ({
          ...records,
          append: (added) => (disk.frozen ? Effect.void : records.append(added)),
          update: (record) => (disk.frozen ? Effect.void : records.update!(record)),
          remove: (sequences) => (disk.frozen ? Effect.void : records.remove(sequences))
        }))
    }))
)

const life = (os: Layer.Layer<never> | Layer.Layer<TaskProcess.ProcessGroups>) =>
  TaskHandler.layer({
    connection: MasterLink,
    payload: Payload,
    run: recording,
    drainGrace: "1 second",
    flushTimeout: "1 second"
  }).pipe(
    Layer.provide(os),
    Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provideMerge(simulatedConnection),
    Layer.provide(freezable)
  )

// The first life records the group and dies with the task running (nothing reaches the master any more);
// the second starts with `os`. Returns the task's history at the master.
const restart = (os: Layer.Layer<never> | Layer.Layer<TaskProcess.ProcessGroups>) =>
  Effect.gen(function*() {
    const master = yield* SimulatedMaster.SimulatedMaster
    const network = yield* SimulatedNetwork.SimulatedNetwork
    const id = yield* master.enqueue({ payload: JSON.stringify({ pgid: 4242 }) })
    const first = yield* Scope.make()
    yield* Layer.buildWithScope(life(Layer.empty), first)
    yield* TestClock.adjust("3 seconds")
    assert.strictEqual((yield* master.task(id)).status, "RUNNING")
    // The process dies: nothing it does from here reaches its disk or the master; the record of the group stays.
    disk.frozen = true
    yield* network.cut
    const closing = yield* Effect.fork(Scope.close(first, Exit.void))
    yield* TestClock.adjust("5 seconds")
    yield* Fiber.join(closing)
    disk.frozen = false
    yield* network.restore
    const second = yield* Scope.make()
    yield* Layer.buildWithScope(life(os), second)
    yield* TestClock.adjust("15 seconds")
    const after = yield* master.task(id)
    yield* Scope.close(second, Exit.void)
    return after
  })

describe("TaskHandler after a restart (virtual time)", () => {
  it.effect("the group an unfinished task left running is ended before its ERROR report, which names it", () => {
    const os = system([leader(4242, "100", "ignores")])
    return Effect.gen(function*() {
      const after = yield* restart(os.layer)
      assert.deepStrictEqual(after.history.map((c) => c.status), ["PENDING", "ASSIGNED", "RUNNING", "ERROR"])
      const error = after.history.at(-1)!
      assert.strictEqual(
        error.error,
        "the worker restarted while running this task; its processes (group 4242) were ended"
      )
      assert.deepStrictEqual(os.signals.map((s) => [s.pgid, s.signal]), [[4242, "SIGTERM"], [4242, "SIGKILL"]])
      assert.strictEqual(os.signals[1]!.at - os.signals[0]!.at, 2_000)
      assert.isAtLeast(error.at, os.signals[1]!.at, "reported after the group was ended")
      assert.strictEqual(os.alive.size, 0)
    }).pipe(Effect.provide(shared), Effect.withRandom(Random.fixed([0.5])))
  })

  it.effect("a recorded pid that another process has now (another start time) is not signalled: nothing was left running", () => {
    const os = system([leader(4242, "555", "ignores")])
    return Effect.gen(function*() {
      const after = yield* restart(os.layer)
      assert.strictEqual(
        after.history.at(-1)?.error,
        "the worker restarted while running this task; nothing it started was left running"
      )
      assert.deepStrictEqual(os.signals, [])
      assert.strictEqual(os.alive.size, 1)
    }).pipe(Effect.provide(shared), Effect.withRandom(Random.fixed([0.5])))
  })

  it.effect("without ProcessGroups in the task handler's context the groups are left alone, and the report says so", () =>
    Effect.gen(function*() {
      const after = yield* restart(Layer.empty)
      assert.strictEqual(
        after.history.at(-1)?.error,
        "the worker restarted while running this task; its processes (group 4242) were not checked: " +
          "the platform gave no start time, or the task handler has no ProcessGroups"
      )
    }).pipe(Effect.provide(shared), Effect.withRandom(Random.fixed([0.5]))))
})
