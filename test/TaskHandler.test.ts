import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { GrpcError } from "../src/GrpcError.js"
import * as Metrics from "../src/Metrics.js"
import * as Outbox from "../src/Outbox.js"
import * as Readiness from "../src/Readiness.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import type * as Master from "../src/testing/Master.js"
import * as SimulatedMaster from "../src/testing/SimulatedMaster.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { MasterLink } from "./fixtures/masterLink.js"

const Payload = Schema.Struct({ seconds: Schema.Number })

type Run = (task: TaskHandler.Task<typeof Payload.Type>) => Effect.Effect<unknown, unknown>

// The task runs for `seconds` of virtual time.
const sleeping: Run = (task) => Effect.sleep(`${task.payload.seconds} seconds`)

// The worker's connection over the simulated network, probed as the simulated master answers.
const simulatedConnection = MasterLink.layer({
  address: "master:9666",
  readiness: { probe: SimulatedNetwork.probe }
})

// A worker, its connection, a simulated network and a simulated master: all on TestClock.
const world = (
  options: Partial<TaskHandler.Options<typeof Payload.Type, typeof Payload.Encoded, never>> = {},
  network: SimulatedNetwork.Options = {}
) =>
  TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping, ...options }).pipe(
    Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provideMerge(simulatedConnection),
    Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(network), SimulatedMaster.layer(), Outbox.layerMemory))
  )

// Every log line with the virtual time it was written at.
const captureLogs = () => {
  const lines: Array<{ at: number; level: string; message: string }> = []
  const logger = Logger.make(({ date, logLevel, message }) => {
    lines.push({
      at: date.getTime(),
      level: logLevel.label,
      message: Array.isArray(message) ? message.join(" ") : String(message)
    })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const enqueue = (seconds: number) =>
  Effect.flatMap(SimulatedMaster.SimulatedMaster, (master) => master.enqueue({ payload: JSON.stringify({ seconds }) }))

const task = (id: string) => Effect.flatMap(SimulatedMaster.SimulatedMaster, (master) => master.task(id))

const at = (info: Master.TaskInfo, status: Master.TaskStatus) =>
  info.history.find((change) => change.status === status)?.at

describe("TaskHandler: CLS-001 in virtual time", () => {
  // The seed's timeline: worker ready; network cut for 20 s; a task created 9 s into the outage.
  const cls001 = (seed: number) => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* MasterLink
      yield* TestClock.adjust("6 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      yield* network.cut
      yield* TestClock.adjust("9 seconds")
      const id = yield* enqueue(2)
      yield* TestClock.adjust("11 seconds")
      const restoredAt = yield* TestClock.currentTimeMillis
      yield* network.restore
      const ready = yield* conn.changes.pipe(
        Stream.filter((state) => state._tag === "Ready"),
        Stream.runHead,
        Effect.flatten,
        Effect.fork
      )
      yield* TestClock.adjust("10 seconds")
      const state = yield* Fiber.join(ready)
      assert.strictEqual(state._tag, "Ready")
      const readyAt = state._tag === "Ready" ? state.since : Number.NaN
      const info = yield* task(id)
      assert.strictEqual(info.status, "FINISHED", `seed ${seed}: the task finished`)
      assert.strictEqual(info.handedOut, 1)
      const started = at(info, "RUNNING")!
      assert.isAtMost(started - readyAt, 1000, `seed ${seed}: fetched within 1 s of readiness`)
      assert.isAtMost(readyAt - restoredAt, 3000, `seed ${seed}: ready within a backoff of the restore`)
      assert.deepStrictEqual(info.history.map((change) => change.status), [
        "PENDING",
        "ASSIGNED",
        "RUNNING",
        "FINISHED"
      ])
      assert.deepStrictEqual(logs.lines.filter((line) => line.message.includes("ClientUnavailable")), [])
      assert.deepStrictEqual(logs.lines.filter((line) => line.message.includes("unavailable")), [])
    }).pipe(Effect.provide(world()), Effect.provide(logs.layer), Effect.withRandom(Random.make(seed)))
  }
  for (let seed = 1; seed <= 10; seed++) {
    it.effect(`a task created during a 20 s outage starts within 1 s of readiness and finishes (seed ${seed})`, () =>
      cls001(seed))
  }
})

describe("TaskHandler (virtual time)", () => {
  it.effect("a task source whose register, subscribe, heartbeat and fetch each die once: the worker goes on", () => {
    // Its one runner busy for 25 s with a first task, no fetch is made: a heartbeat is due after 15 s.
    const logs = captureLogs()
    // The simulated master's source, each of whose calls dies the first time it is made.
    const dyingOnce = Layer.effect(
      TaskSource.TaskSource,
      Effect.map(TaskSource.TaskSource, (inner): TaskSource.TaskSource => {
        const died = new Set<string>()
        const once = <A, E>(name: string, call: Effect.Effect<A, E>) =>
          Effect.suspend(() => died.has(name) ? call : (died.add(name), Effect.die(new Error(`${name} bug`))))
        return {
          ...inner,
          register: (generation) => once("register", inner.register(generation)),
          subscribe: (generation) => Stream.unwrap(once("subscribe", Effect.succeed(inner.subscribe(generation)))),
          heartbeat: (running) => once("heartbeat", inner.heartbeat(running)),
          fetch: (request) => once("fetch", inner.fetch(request))
        }
      })
    ).pipe(Layer.provide(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })))
    return Effect.gen(function*() {
      const first = yield* enqueue(25)
      yield* TestClock.adjust("40 seconds")
      assert.strictEqual((yield* task(first)).status, "FINISHED")
      const id = yield* enqueue(1)
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual((yield* task(id)).status, "FINISHED")
      for (const call of ["register", "subscribe", "heartbeat", "fetch"]) {
        assert.isTrue(
          logs.lines.some((line) => line.message.includes(`${call} bug`)),
          `${call} died, and it was logged`
        )
      }
      assert.deepStrictEqual(logs.lines.filter((line) => line.message.includes("loop failed")), [])
    }).pipe(
      Effect.provide(
        TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping, maxRunners: 1 }).pipe(
          Layer.provideMerge(dyingOnce),
          Layer.provideMerge(simulatedConnection),
          Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
        )
      ),
      Effect.provide(logs.layer),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it.effect("the simulated master's task source gives its runner cap to the task handler, as the real one does", () =>
    Effect.gen(function*() {
      yield* Effect.forEach([10, 10, 10, 10], enqueue)
      yield* TestClock.adjust("5 seconds")
      const handler = yield* TaskHandler.TaskHandler
      assert.strictEqual((yield* handler.status).running, 3)
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual((yield* handler.status).finished, 4)
    }).pipe(
      Effect.provide(
        TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping }).pipe(
          Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1", maxRunners: 3 })),
          Layer.provideMerge(simulatedConnection),
          Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
        )
      ),
      Effect.withRandom(Random.fixed([0.5]))
    ))

  it.effect("a fetch the master held for its whole wait is asked again at once: a task queued then starts at once", () =>
    Effect.gen(function*() {
      // Connected and registered within 100 ms; its first fetch is answered at once, the next held from then on
      // for 25 s. The master ends a long wait on a whole second, never before it: this one at 26 s. Were it ended
      // early (at 25 s), the worker would read the master's cap and pause for its fetch interval until 26 s.
      yield* TestClock.adjust("25500 millis")
      const id = yield* enqueue(0)
      const queuedAt = yield* TestClock.currentTimeMillis
      yield* TestClock.adjust("100 millis")
      const info = yield* task(id)
      assert.strictEqual(info.status, "FINISHED")
      assert.strictEqual(at(info, "RUNNING")! - queuedAt, 0)
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.effect("a master late by 10 s: fetching starts when the connection is ready", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const id = yield* enqueue(1)
      yield* TestClock.adjust("10 seconds")
      yield* network.restore
      yield* TestClock.adjust("5 seconds")
      const started = at(yield* task(id), "RUNNING")!
      const line = logs.lines.find((l) => l.message.includes("starting task handler"))!
      assert.strictEqual(line.message, "connection ready, starting task handler")
      assert.isAtLeast(started, 10_000)
      assert.isAtMost(started - line.at, 100)
    }).pipe(
      Effect.provide(world({}, { link: "down" })),
      Effect.provide(logs.layer),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it.effect("a master that is absent: the handler starts at 30 s with a warning naming the failing check", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      yield* TestClock.adjust("40 seconds")
      const line = logs.lines.find((l) => l.message.includes("starting task handler"))!
      assert.strictEqual(line.at, 30_000)
      assert.strictEqual(line.level, "WARN")
      assert.include(line.message, "waited 30s")
      assert.include(line.message, "channel")
    }).pipe(
      Effect.provide(world({}, { link: "down" })),
      Effect.provide(logs.layer),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it.effect("never runs more than maxRunners tasks, and fetches nothing while all are busy", () =>
    Effect.gen(function*() {
      const ids = yield* Effect.forEach([10, 10, 10, 10, 10], enqueue)
      yield* TestClock.adjust("5 seconds")
      const handler = yield* TaskHandler.TaskHandler
      assert.strictEqual((yield* handler.status).running, 2)
      assert.strictEqual((yield* handler.status).fetched, 2)
      const statuses = yield* Effect.forEach(ids, (id) => Effect.map(task(id), (t) => t.status))
      assert.deepStrictEqual(statuses, ["RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING"])
      yield* TestClock.adjust("6 seconds")
      assert.deepStrictEqual(
        yield* Effect.forEach(ids, (id) => Effect.map(task(id), (t) => t.status)),
        ["FINISHED", "FINISHED", "RUNNING", "RUNNING", "PENDING"]
      )
      // Under TestClock a test ends with no task running: the drain would wait out its grace in virtual time.
      yield* TestClock.adjust("20 seconds")
      assert.deepStrictEqual(
        (yield* SimulatedMaster.SimulatedMaster.pipe(Effect.flatMap((m) => m.tasks))).map((t) => t.status),
        [
          "FINISHED",
          "FINISHED",
          "FINISHED",
          "FINISHED",
          "FINISHED"
        ]
      )
    }).pipe(Effect.provide(world({ maxRunners: 2 })), Effect.withRandom(Random.fixed([0.5]))))

  it.effect("reports made during an outage arrive after it, in order, once each", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const id = yield* enqueue(5)
      yield* TestClock.adjust("2 seconds")
      yield* network.cut
      yield* TestClock.adjust("20 seconds")
      const during = yield* task(id)
      assert.strictEqual(during.status, "RUNNING")
      const handler = yield* TaskHandler.TaskHandler
      assert.deepStrictEqual((yield* handler.outbox.pending).map((r) => r.key), [`${id}:FINISHED`])
      yield* network.restore
      yield* TestClock.adjust("20 seconds")
      const after = yield* task(id)
      assert.deepStrictEqual(after.history.map((c) => c.status), ["PENDING", "ASSIGNED", "RUNNING", "FINISHED"])
      assert.isAtLeast(at(after, "FINISHED")!, 22_000)
      assert.deepStrictEqual(yield* handler.outbox.pending, [])
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.effect("a failing task, a defect and a malformed payload are reported ERROR, and the worker carries on", () =>
    Effect.gen(function*() {
      const master = yield* SimulatedMaster.SimulatedMaster
      const bad = yield* master.enqueue({ payload: "{\"seconds\": \"soon\"}" })
      const notJson = yield* master.enqueue({ payload: "not json" })
      const failing = yield* enqueue(-1)
      const throwing = yield* enqueue(-2)
      const good = yield* enqueue(1)
      yield* TestClock.adjust("5 seconds")
      const error = (id: string) => Effect.map(task(id), (t) => [t.status, t.history.at(-1)?.error])
      assert.deepStrictEqual(yield* error(bad), [
        "ERROR",
        "malformed task payload: seconds: Expected number, actual \"soon\""
      ])
      assert.strictEqual((yield* error(notJson))[0], "ERROR")
      assert.include((yield* error(notJson))[1], "malformed task payload")
      assert.deepStrictEqual(yield* error(failing), ["ERROR", "negative duration"])
      assert.deepStrictEqual(yield* error(throwing), ["ERROR", "defect: boom"])
      assert.strictEqual((yield* task(good)).status, "FINISHED")
      const status = yield* (yield* TaskHandler.TaskHandler).status
      assert.strictEqual(status.malformed, 2)
      assert.strictEqual(status.failed, 2)
    }).pipe(
      Effect.provide(world({
        run: (task) =>
          task.payload.seconds === -1
            ? Effect.fail(new TaskHandler.TaskError({ message: "negative duration" }))
            : task.payload.seconds === -2
            ? Effect.die(new Error("boom"))
            : sleeping(task)
      })),
      Effect.withRandom(Random.fixed([0.5]))
    ))

  it.effect("the master cancels a running task: it is interrupted and reported CANCELLED", () =>
    Effect.gen(function*() {
      const master = yield* SimulatedMaster.SimulatedMaster
      const id = yield* enqueue(60)
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* master.cancel(id), "Notified")
      yield* TestClock.adjust("1 second")
      const handler = yield* TaskHandler.TaskHandler
      assert.deepStrictEqual(yield* handler.running, [])
      assert.strictEqual((yield* handler.status).cancelled, 1)
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.effect("shutdown drains: running tasks finish within the grace, the rest are cancelled, the outbox is flushed", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(world({ drainGrace: "30 seconds" }), scope)
      const simulated = Context.get(context, SimulatedMaster.SimulatedMaster)
      const short = yield* simulated.enqueue({ payload: JSON.stringify({ seconds: 10 }) })
      const long = yield* simulated.enqueue({ payload: JSON.stringify({ seconds: 100 }) })
      yield* TestClock.adjust("2 seconds")
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual((yield* simulated.task(short)).status, "FINISHED")
      assert.strictEqual((yield* simulated.task(long)).status, "RUNNING")
      yield* TestClock.adjust("15 seconds")
      yield* Fiber.join(closing)
      const cancelled = yield* simulated.task(long)
      assert.strictEqual(cancelled.status, "CANCELLED")
      assert.strictEqual(at(cancelled, "CANCELLED"), 32_000)
      // Nothing was fetched after the close began.
      assert.strictEqual((yield* simulated.tasks).length, 2)
    }).pipe(Effect.withRandom(Random.fixed([0.5]))))

  // A task handler on a store shared with the test's other handlers, which the test can stop writing.
  const restartable = (run: Run, store: { frozen: boolean; full: boolean }) =>
    TaskHandler.layer({
      connection: MasterLink,
      payload: Payload,
      run,
      drainGrace: "1 second",
      flushTimeout: "1 second"
    }).pipe(
      Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
      Layer.provideMerge(simulatedConnection),
      Layer.provide(Layer.effect(
        Outbox.OutboxStore,
        Effect.map(Outbox.OutboxStore, (inner) =>
          Outbox.OutboxStore.of({
            open: (owner) =>
              Effect.map(inner.open(owner), (records) => ({
                ...records,
                // Frozen: the process is dead, nothing more reaches its disk. Full: every write fails.
                append: (added) =>
                  store.full
                    ? Effect.fail(
                      new Outbox.OutboxError({
                        reason: "Unwritable",
                        path: records.location,
                        operation: "cannot write",
                        cause: new Error("ENOSPC: no space left on device")
                      })
                    )
                    : store.frozen
                    ? Effect.void
                    : records.append(added),
                remove: (sequences) => (store.frozen ? Effect.void : records.remove(sequences))
              }))
          }))
      ))
    )
  const shared = Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory)

  it.effect("a task running when the worker died is reported ERROR once after the restart, and not run again", () => {
    const store = { frozen: false, full: false }
    let runs = 0
    const run: Run = (task) => Effect.zipRight(Effect.sync(() => void runs++), sleeping(task))
    return Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const id = yield* enqueue(600)
      const first = yield* Scope.make()
      yield* Layer.buildWithScope(restartable(run, store), first)
      yield* TestClock.adjust("3 seconds")
      assert.strictEqual((yield* task(id)).status, "RUNNING")
      // The process dies: nothing it does from here reaches its disk or the master.
      store.frozen = true
      yield* network.cut
      const closing = yield* Effect.fork(Scope.close(first, Exit.void))
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.join(closing)
      store.frozen = false
      yield* network.restore
      const second = yield* Scope.make()
      const context = yield* Layer.buildWithScope(restartable(run, store), second)
      yield* TestClock.adjust("10 seconds")
      const after = yield* task(id)
      assert.deepStrictEqual(after.history.map((c) => c.status), ["PENDING", "ASSIGNED", "RUNNING", "ERROR"])
      assert.strictEqual(after.history.at(-1)?.error, TaskHandler.restartMessage)
      assert.strictEqual(runs, 1, "run once, before the restart")
      const handler = Context.get(context, TaskHandler.TaskHandler)
      assert.strictEqual((yield* handler.status).failed, 1)
      assert.deepStrictEqual(handler.outbox.unfinished, [id])
      assert.isFalse(yield* handler.outbox.tracks(id), "ended")
      yield* Scope.close(second, Exit.void)
    }).pipe(Effect.provide(shared), Effect.withRandom(Random.fixed([0.5])))
  })

  // The task handler's series, labelled by its master and node.
  const unpersistedOf = (node: string) =>
    Metrics.outboxUnpersisted.pipe(Metric.tagged("address", "master:9666"), Metric.tagged("node", node))

  it.effect("a report the outbox cannot store is kept in memory, counted, and stored again until it is; no task is fetched meanwhile", () => {
    const store = { frozen: false, full: false }
    const logs = captureLogs()
    return Effect.gen(function*() {
      const first = yield* enqueue(2)
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(restartable(sleeping, store), scope)
      const handler = Context.get(context, TaskHandler.TaskHandler)
      yield* TestClock.adjust("1500 millis")
      assert.strictEqual((yield* task(first)).status, "RUNNING")
      store.full = true
      yield* TestClock.adjust("2 seconds")
      const second = yield* enqueue(1)
      yield* TestClock.adjust("2 seconds")
      // FINISHED of the first could not be stored: held, counted, and the second task is not fetched.
      assert.strictEqual((yield* handler.status).unpersisted, 1)
      assert.strictEqual(yield* Metric.value(unpersistedOf("w1")).pipe(Effect.map((s) => s.value)), 1)
      assert.strictEqual((yield* task(first)).status, "RUNNING")
      assert.strictEqual((yield* task(second)).status, "PENDING")
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual((yield* task(second)).status, "PENDING", "still nothing fetched while the disk is full")
      assert.isTrue(
        logs.lines.some((l) =>
          l.level === "ERROR" && l.message.includes(`report ${first}:FINISHED could not be stored`) &&
          l.message.includes("ENOSPC")
        )
      )
      store.full = false
      yield* TestClock.adjust("15 seconds")
      assert.strictEqual((yield* task(first)).status, "FINISHED")
      assert.strictEqual((yield* task(second)).status, "FINISHED")
      assert.strictEqual((yield* handler.status).unpersisted, 0)
      assert.strictEqual(yield* Metric.value(unpersistedOf("w1")).pipe(Effect.map((s) => s.value)), 0)
      yield* Scope.close(scope, Exit.void)
    }).pipe(Effect.provide(shared), Effect.provide(logs.layer), Effect.withRandom(Random.fixed([0.5])))
  })
})

describe("TaskHandler: membership (virtual time)", () => {
  const master = SimulatedMaster.SimulatedMaster
  const registeredAt = Effect.flatMap(master, (m) => Effect.map(m.nodes, (nodes) => nodes[0]?.registeredAt))

  // Every readiness status, as it changes.
  const watchReadiness = Effect.gen(function*() {
    const seen: Array<Readiness.ReadinessStatus> = []
    const conn = yield* MasterLink
    yield* Effect.forkScoped(Stream.runForEach(conn.readiness.changes, (s) => Effect.sync(() => void seen.push(s))))
    return seen
  })

  it.scoped("a master that forgets the node: it registers again at once, runs the task queued meanwhile, hears the cancel", () =>
    Effect.gen(function*() {
      const seen = yield* watchReadiness
      const conn = yield* MasterLink
      const handler = yield* TaskHandler.TaskHandler
      yield* TestClock.adjust("6 seconds")
      assert.isTrue((yield* conn.readiness.status).ready)
      const joinedAt = yield* registeredAt
      const forgotAt = yield* TestClock.currentTimeMillis
      seen.length = 0
      assert.isTrue(yield* (yield* master).forget("w1"))
      const id = yield* enqueue(100)
      yield* TestClock.adjust("1 second")
      // Registered again at the instant of the forget: the node had been served, so no backoff.
      assert.strictEqual(yield* registeredAt, forgotAt)
      assert.notStrictEqual(joinedAt, forgotAt)
      const running = at(yield* task(id), "RUNNING")!
      assert.isAtMost(running - forgotAt, 1000)
      // Not ready while it was no member, ready again after.
      const notMember = seen.find((s) => !s.ready && Readiness.failingCheck(s.report) === "member")
      assert.isDefined(notMember)
      assert.include(Readiness.describeFailure(notMember!.report), "member: the master does not know this node")
      assert.isTrue((yield* conn.readiness.status).ready)
      // The master's cancel reaches the new subscription.
      assert.strictEqual(yield* (yield* master).cancel(id), "Notified")
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* handler.status).cancelled, 1)
      assert.deepStrictEqual(yield* handler.running, [])
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a failing report lists only the current generation's checks: none passed long ago", () =>
    Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const conn = yield* MasterLink
      yield* TestClock.adjust("6 seconds")
      assert.isTrue((yield* conn.readiness.status).ready)
      yield* network.cut
      yield* TestClock.adjust("5 seconds")
      const { ready, report } = yield* conn.readiness.status
      assert.isFalse(ready)
      assert.strictEqual(report.generation, 2, "the generation being established")
      assert.strictEqual(report.checks.channel._tag, "Failed")
      assert.deepStrictEqual(
        [report.checks.registered._tag, report.checks.probe._tag, report.checks.member?._tag],
        ["Pending", "Pending", "Pending"]
      )
      assert.strictEqual(report.checks.tasks?._tag, "Passed")
      yield* network.restore
      yield* TestClock.adjust("5 seconds")
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("six forgets in a row, 12 s apart: the sixth rejoin is as quick as the first", () =>
    Effect.gen(function*() {
      const handler = yield* TaskHandler.TaskHandler
      yield* TestClock.adjust("6 seconds")
      const waits: Array<number> = []
      for (let i = 0; i < 6; i++) {
        yield* TestClock.adjust("12 seconds")
        const forgotAt = yield* TestClock.currentTimeMillis
        yield* (yield* master).forget("w1")
        const id = yield* enqueue(1)
        yield* TestClock.adjust("1 second")
        waits.push((yield* registeredAt)! - forgotAt)
        assert.isAtMost(at(yield* task(id), "RUNNING")! - forgotAt, 1000, `forget ${i + 1}: its task ran`)
      }
      assert.deepStrictEqual(waits, [0, 0, 0, 0, 0, 0])
      assert.strictEqual((yield* handler.status).finished, 6)
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("a generation's first fetch waits for its Register: no fetch is refused across ten reconnections", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const handler = yield* TaskHandler.TaskHandler
      yield* TestClock.adjust("6 seconds")
      const ids: Array<string> = []
      for (let i = 0; i < 10; i++) {
        yield* network.cut
        yield* TestClock.adjust("5 seconds")
        ids.push(yield* enqueue(1))
        yield* network.restore
        yield* TestClock.adjust("10 seconds")
      }
      for (const id of ids) assert.strictEqual((yield* task(id)).status, "FINISHED")
      assert.deepStrictEqual(logs.lines.filter((l) => l.message.includes("not registered")), [])
      assert.strictEqual((yield* handler.status).fetchFailures, 0)
    }).pipe(Effect.provide(world()), Effect.provide(logs.layer), Effect.withRandom(Random.fixed([0.5])))
  })

  // The simulated master's task source with one of its answers changed.
  const altered = (change: (source: TaskSource.TaskSource) => Partial<TaskSource.TaskSource>) =>
    Layer.effect(
      TaskSource.TaskSource,
      Effect.map(TaskSource.TaskSource, (source) => ({ ...source, ...change(source) }))
    )
  const alteredWorld = (change: (source: TaskSource.TaskSource) => Partial<TaskSource.TaskSource>) =>
    TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping }).pipe(
      Layer.provideMerge(altered(change)),
      Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
      Layer.provideMerge(simulatedConnection),
      Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
    )

  // A master that answers fetches at once, as one that predates waiting fetches does: it hears the node through
  // heartbeats only.
  const answersAtOnce = (source: TaskSource.TaskSource): Partial<TaskSource.TaskSource> => ({
    fetch: (request) =>
      Effect.map(source.fetch({ ...request, wait: Duration.zero }), (fetched) => ({ ...fetched, waits: false }))
  })

  it.scoped("a heartbeat that answers another incarnation has the node register again", () => {
    const logs = captureLogs()
    let incarnation = "first"
    return Effect.gen(function*() {
      yield* TestClock.adjust("6 seconds")
      const joinedAt = yield* registeredAt
      incarnation = "second"
      // The next heartbeat is due 15 s after the node registered (at 50 ms).
      yield* TestClock.adjust("15 seconds")
      assert.isAbove((yield* registeredAt)!, joinedAt!)
      assert.isTrue(logs.lines.some((l) => l.message.includes("the master restarted (incarnation second, was first)")))
    }).pipe(
      Effect.provide(alteredWorld((source) => ({
        ...answersAtOnce(source),
        register: (generation) => Effect.as(source.register(generation), { incarnation }),
        heartbeat: (running) => Effect.as(source.heartbeat(running), { member: true, incarnation })
      }))),
      Effect.provide(logs.layer),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it.scoped("a heartbeat answered NOT_MEMBER, its stream still open: the node registers again at once", () => {
    const logs = captureLogs()
    let member = true
    return Effect.gen(function*() {
      yield* TestClock.adjust("6 seconds")
      const joinedAt = yield* registeredAt
      member = false
      yield* TestClock.adjust("15 seconds")
      const again = (yield* registeredAt)!
      assert.isAbove(again, joinedAt!)
      assert.isTrue(logs.lines.some((l) => l.message.includes("the master answered the heartbeat NOT_MEMBER")))
      // At the first heartbeat (15 s after the node registered, at 50 ms): the node had been served, so no backoff.
      assert.strictEqual(again, 15_050)
    }).pipe(
      Effect.provide(alteredWorld((source) => ({
        ...answersAtOnce(source),
        heartbeat: (running) =>
          Effect.map(source.heartbeat(running), (answer) => ({ ...answer, member: member ? answer.member : false }))
      }))),
      Effect.provide(logs.layer),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it("a report refused because the node is no member is kept and delivered again; other refusals are final", () => {
    const refusal = (errorInfo?: typeof TaskSource.notRegistered) =>
      new GrpcError({
        code: 9,
        details: "node not registered",
        service: "task",
        method: "ReportStatus",
        errorInfo: errorInfo === undefined ? undefined : { ...errorInfo, metadata: {} }
      })
    assert.isTrue(Outbox.tryAgain(refusal(TaskSource.notRegistered)))
    assert.isFalse(Outbox.tryAgain(refusal()))
  })

  it.scoped("a master that predates the signal refuses fetches FAILED_PRECONDITION: the node registers again, at most once in 30 s", () => {
    let registers = 0
    const refused = new GrpcError({ code: 9, details: "node not registered", service: "task", method: "FetchTask" })
    return Effect.gen(function*() {
      yield* TestClock.adjust("95 seconds")
      // The first join, then one more at 5 s (the first refusal) and every 30 s after: 5, 35, 65, 95.
      assert.strictEqual(registers, 5)
      assert.strictEqual(TaskSource.membershipOf(refused), "MaybeNotMember")
    }).pipe(
      Effect.provide(alteredWorld((source) => ({
        register: (generation) => Effect.zipLeft(source.register(generation), Effect.sync(() => registers++)),
        fetch: () => Effect.fail(refused)
      }))),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })

  it.scoped("readiness is held back while the task handler has not started: an outbox that never opens", () =>
    Effect.gen(function*() {
      const hung = Layer.succeed(Outbox.OutboxStore, { open: () => Effect.never })
      const connection = simulatedConnection.pipe(
        Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer()))
      )
      const context = yield* Layer.build(connection)
      const conn = Context.get(context, MasterLink)
      const starting = yield* Effect.forkScoped(
        Layer.build(
          TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping }).pipe(
            Layer.provide(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
            Layer.provide(hung)
          )
        ).pipe(Effect.provide(context))
      )
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* conn.state)._tag, "Ready")
      const status = yield* conn.readiness.status
      assert.isFalse(status.ready)
      assert.strictEqual(Readiness.failingCheck(status.report), "tasks")
      assert.include(Readiness.describeFailure(status.report), "outbox is not open")
      assert.isTrue(Option.isNone(yield* Fiber.poll(starting)), "the task handler is still starting")
    }).pipe(Effect.withRandom(Random.fixed([0.5]))))
})

describe("TaskHandler: waiting fetches (virtual time)", () => {
  // The simulated master's task source, every call counted by method.
  const counting = (calls: Record<string, number>) =>
    Layer.effect(
      TaskSource.TaskSource,
      Effect.map(TaskSource.TaskSource, (source): TaskSource.TaskSource => {
        const counted = <A, E>(method: string, effect: Effect.Effect<A, E>) =>
          Effect.zipRight(Effect.sync(() => void (calls[method] = (calls[method] ?? 0) + 1)), effect)
        return {
          ...source,
          fetch: (request) => counted("FetchTask", source.fetch(request)),
          heartbeat: (running) => counted("SendHeartbeat", source.heartbeat(running)),
          register: (generation) => counted("Register", source.register(generation))
        }
      })
    )
  const countedWorld = (
    calls: Record<string, number>,
    options: Partial<TaskHandler.Options<typeof Payload.Type, typeof Payload.Encoded, never>> = {}
  ) =>
    TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping, ...options }).pipe(
      Layer.provideMerge(counting(calls)),
      Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
      Layer.provideMerge(simulatedConnection),
      Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
    )

  it.scoped("an idle worker: one fetch held at a time, no heartbeat, online at the master all along", () => {
    const calls: Record<string, number> = {}
    return Effect.gen(function*() {
      const master = yield* SimulatedMaster.SimulatedMaster
      yield* TestClock.adjust("6 seconds")
      const before = { ...calls }
      for (let minute = 0; minute < 10; minute++) {
        yield* TestClock.adjust("1 minute")
        const [node] = yield* master.nodes
        assert.isTrue(node?.online, `online after ${minute + 1} minutes`)
      }
      const fetches = (calls.FetchTask ?? 0) - (before.FetchTask ?? 0)
      // A fetch held for its 25 s wait, then the next: 600 s / 25 s.
      assert.isAtMost(fetches, 25)
      assert.isAtLeast(fetches, 23)
      assert.strictEqual((calls.SendHeartbeat ?? 0) - (before.SendHeartbeat ?? 0), 0, "no heartbeat")
    }).pipe(Effect.provide(countedWorld(calls)), Effect.withRandom(Random.fixed([0.5])))
  })

  it.scoped("a task queued for an idle worker runs at once: the held fetch brings it", () =>
    Effect.gen(function*() {
      yield* TestClock.adjust("30 seconds")
      const id = yield* enqueue(0)
      yield* TestClock.adjust("1 second")
      const info = yield* task(id)
      assert.strictEqual(at(info, "RUNNING"), at(info, "PENDING"))
    }).pipe(Effect.provide(world()), Effect.withRandom(Random.fixed([0.5]))))

  it.scoped("free runners take several tasks in one fetch", () => {
    const calls: Record<string, number> = {}
    return Effect.gen(function*() {
      const master = yield* SimulatedMaster.SimulatedMaster
      yield* TestClock.adjust("6 seconds")
      const before = calls.FetchTask ?? 0
      // Queued while no fetch is held: the worker's runners are all busy.
      const busy = yield* Effect.all(Array.from({ length: 4 }, () => enqueue(10)))
      yield* TestClock.adjust("1 second")
      const queued = yield* Effect.all(Array.from({ length: 4 }, () => enqueue(1)))
      yield* TestClock.adjust("10 seconds")
      for (const id of [...busy, ...queued]) assert.notStrictEqual((yield* task(id)).status, "PENDING")
      // The four queued while all runners were busy came in one fetch, when the runners freed.
      const handedOut = (yield* master.tasks).filter((t) => queued.includes(t.id)).map((t) => at(t, "ASSIGNED"))
      assert.strictEqual(new Set(handedOut).size, 1)
      // Each busy task was queued while a fetch was held, and came in it: four fetches, and one for the four after.
      assert.isAtMost((calls.FetchTask ?? 0) - before, 5)
    }).pipe(Effect.provide(countedWorld(calls, { maxRunners: 4 })), Effect.withRandom(Random.fixed([0.5])))
  })

  it.scoped("a master that answers at once is asked on the interval, and hears heartbeats", () => {
    const calls: Record<string, number> = {}
    return Effect.gen(function*() {
      yield* TestClock.adjust("6 seconds")
      const before = { ...calls }
      yield* TestClock.adjust("1 minute")
      const fetches = (calls.FetchTask ?? 0) - (before.FetchTask ?? 0)
      assert.isAtLeast(fetches, 55)
      assert.isAtMost(fetches, 61)
      assert.isAtLeast((calls.SendHeartbeat ?? 0) - (before.SendHeartbeat ?? 0), 3)
    }).pipe(
      Effect.provide(
        TaskHandler.layer({ connection: MasterLink, payload: Payload, run: sleeping }).pipe(
          Layer.provideMerge(
            Layer.effect(
              TaskSource.TaskSource,
              Effect.map(TaskSource.TaskSource, (source): TaskSource.TaskSource => ({
                ...source,
                fetch: (request) =>
                  Effect.sync(() => void (calls.FetchTask = (calls.FetchTask ?? 0) + 1)).pipe(
                    Effect.zipRight(source.fetch({ ...request, wait: Duration.zero })),
                    Effect.map((fetched) => ({ ...fetched, waits: false }))
                  ),
                heartbeat: (running) =>
                  Effect.zipRight(
                    Effect.sync(() => void (calls.SendHeartbeat = (calls.SendHeartbeat ?? 0) + 1)),
                    source.heartbeat(running)
                  )
              }))
            )
          ),
          Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
          Layer.provideMerge(simulatedConnection),
          Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
        )
      ),
      Effect.withRandom(Random.fixed([0.5]))
    )
  })
})
