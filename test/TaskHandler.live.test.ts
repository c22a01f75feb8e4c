import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as NodeOutbox from "../src/node/NodeOutbox.js"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as FaultProxy from "../src/testing/FaultProxy.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { eventually } from "./fixtures/poll.js"

const Payload = Schema.Struct({ n: Schema.Number })

class East extends Connection.Tag("test/East", TaskSource.services)<East>() {}
class West extends Connection.Tag("test/West", TaskSource.services)<West>() {}
// The app's own tags for its two task handlers, so it reaches each.
class EastTasks extends Context.Tag("test/EastTasks")<EastTasks, TaskHandler.TaskHandler>() {}
class WestTasks extends Context.Tag("test/WestTasks")<WestTasks, TaskHandler.TaskHandler>() {}

// A worker process's layers, against a master's address.
const worker = <R>(
  address: string,
  run: (task: TaskHandler.Task<typeof Payload.Type>) => Effect.Effect<unknown, unknown, R>,
  options: Partial<TaskHandler.Options<typeof Payload.Type, typeof Payload.Encoded, R>> = {},
  store: Layer.Layer<Outbox.OutboxStore, unknown> = Outbox.layerMemory
) =>
  TaskHandler.layer({ connection: MasterLink, payload: Payload, run, ...options }).pipe(
    Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provideMerge(MasterLink.layer({ address })),
    Layer.provide(GrpcChannel.layer),
    Layer.provide(store)
  )

// A worker in a scope of its own, which the test closes (and which closes with the test anyway).
const startWorker = <ROut, E>(layer: Layer.Layer<ROut, E>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope)
    return { scope, context }
  })

const ended = (t: Master.TaskInfo) => ["FINISHED", "ERROR", "CANCELLED"].includes(t.status)
const allEnded = (master: Master.Master, timeout: Duration.DurationInput) =>
  eventually(master.tasks, (tasks) => tasks.length > 0 && tasks.every(ended), timeout, "every task ended")

describe("TaskHandler (live loopback, embedded master)", () => {
  it.scopedLive("100 tasks all finish exactly once with 4 runners", () =>
    Effect.gen(function*() {
      const master = yield* Master.make()
      const running = yield* Ref.make(0)
      const peak = yield* Ref.make(0)
      const run = () =>
        Effect.gen(function*() {
          const now = yield* Ref.updateAndGet(running, (n) => n + 1)
          yield* Ref.update(peak, (p) => Math.max(p, now))
          yield* Effect.sleep(`${yield* Random.nextIntBetween(20, 60)} millis`)
        }).pipe(Effect.ensuring(Ref.update(running, (n) => n - 1)))
      for (let n = 0; n < 100; n++) yield* master.enqueue({ payload: JSON.stringify({ n }) })
      const { scope } = yield* startWorker(worker(master.address, run, { maxRunners: 4 }))
      const tasks = yield* allEnded(master, "20 seconds")
      assert.strictEqual(tasks.length, 100)
      assert.isTrue(
        tasks.every((t) => t.status === "FINISHED" && t.handedOut === 1),
        "every task finished, handed out once"
      )
      assert.isTrue(tasks.every((t) => t.history.filter((h) => h.status === "FINISHED").length === 1))
      // The cap is exact (the virtual-time test shows it); here: never above it, and really concurrent.
      assert.isAtMost(yield* Ref.get(peak), 4)
      assert.isAtLeast(yield* Ref.get(peak), 2)
      yield* Scope.close(scope, Exit.void)
    }), 30_000)

  it.scopedLive("a master restarted mid-run loses no task and no report", () =>
    Effect.gen(function*() {
      const master = yield* Master.make()
      for (let n = 0; n < 40; n++) yield* master.enqueue({ payload: JSON.stringify({ n }) })
      const { scope } = yield* startWorker(worker(master.address, () => Effect.sleep("25 millis"), { maxRunners: 4 }))
      yield* eventually(
        master.tasks,
        (ts) => ts.filter((t) => t.status === "FINISHED").length >= 10,
        "10 seconds",
        "10 tasks finished"
      )
      yield* master.stop
      yield* Effect.sleep("1 second")
      yield* master.restart
      const tasks = yield* allEnded(master, "20 seconds")
      assert.strictEqual(tasks.length, 40)
      assert.isTrue(tasks.every((t) => t.status === "FINISHED"), "every task finished")
      assert.isTrue(tasks.every((t) => t.handedOut === 1), "no task handed out twice")
      yield* Scope.close(scope, Exit.void)
    }), 30_000)

  it.scopedLive("a worker restarted with a durable outbox delivers the report it owed", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(join(tmpdir(), "outbox-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
      const master = yield* Master.make()
      const id = yield* master.enqueue({ payload: JSON.stringify({ n: 1 }) })
      const gate = yield* Deferred.make<void>()
      const first = yield* startWorker(
        worker(
          master.address,
          () => Deferred.await(gate),
          { flushTimeout: "200 millis" },
          NodeOutbox.layerFileSystem(directory)
        )
      )
      yield* eventually(master.task(id), (t) => t.status === "RUNNING", "10 seconds", "the task running")
      // The master goes away; the task finishes; its report cannot be delivered before the worker stops.
      yield* master.stop
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.sleep("100 millis")
      yield* Scope.close(first.scope, Exit.void)
      const records = readdirSync(directory, { recursive: true, encoding: "utf8" }).filter((name) =>
        /\d{16}\.records$/.test(name)
      )
      assert.isTrue(
        records.some((name) => readFileSync(join(directory, name), "utf8").includes(`${id}:FINISHED`)),
        "the report is on disk"
      )
      assert.strictEqual((yield* master.task(id)).status, "RUNNING")

      yield* master.restart
      const second = yield* startWorker(
        worker(master.address, () => Effect.void, {}, NodeOutbox.layerFileSystem(directory))
      )
      const task = yield* eventually(
        master.task(id),
        (t) => t.status === "FINISHED",
        "10 seconds",
        "the owed report arrived"
      )
      assert.strictEqual(task.handedOut, 1)
      yield* Scope.close(second.scope, Exit.void)
    }), 30_000)

  it.scopedLive(
    "two task handlers on two masters in one app: each its own tasks, log lines and outbox records",
    () =>
      Effect.gen(function*() {
        const [east, west] = [yield* Master.make(), yield* Master.make()]
        // One outbox store for the whole app, kept across the worker's restart.
        const store = Layer.succeedContext(yield* Layer.build(Outbox.layerMemory))
        const lines = yield* Ref.make<ReadonlyArray<{ message: string; address: unknown; node: unknown }>>([])
        const capture = Logger.replace(
          Logger.defaultLogger,
          Logger.make(({ annotations, message }) => {
            const text = Array.isArray(message) ? message.join(" ") : String(message)
            const entry = {
              message: text,
              address: HashMap.get(annotations, "address").pipe(Option.getOrUndefined),
              node: HashMap.get(annotations, "node").pipe(Option.getOrUndefined)
            }
            Effect.runSync(Ref.update(lines, (all) => [...all, entry]))
          })
        )
        const gate = yield* Deferred.make<void>()
        const app = (run: () => Effect.Effect<unknown>) =>
          Layer.mergeAll(
            Layer.scoped(
              EastTasks,
              TaskHandler.make({
                connection: East,
                payload: Payload,
                run,
                flushTimeout: "200 millis"
              })
            ).pipe(Layer.provide(TaskSource.layer({ connection: East, nodeKey: "w1" }))),
            Layer.scoped(
              WestTasks,
              TaskHandler.make({ connection: West, payload: Payload, run: () => Effect.void })
            )
              .pipe(Layer.provide(TaskSource.layer({ connection: West, nodeKey: "w1" })))
          ).pipe(
            Layer.provide(East.layer({ address: east.address })),
            Layer.provide(West.layer({ address: west.address })),
            Layer.provide(GrpcChannel.layer),
            Layer.provide(store),
            Layer.provide(capture)
          )

        // East's task finishes while its master is away: its report waits in the outbox while West works.
        const eastTask = yield* east.enqueue({ payload: JSON.stringify({ n: 1 }) })
        const first = yield* startWorker(app(() => Deferred.await(gate)))
        yield* eventually(east.task(eastTask), (t) => t.status === "RUNNING", "10 seconds", "east's task running")
        yield* east.stop
        yield* Deferred.succeed(gate, undefined)
        const westTasks = yield* Effect.forEach([1, 2, 3], (n) => west.enqueue({ payload: JSON.stringify({ n }) }))
        yield* allEnded(west, "10 seconds")
        // The app reaches each task handler under its own tag: East's one task, West's three.
        const finishedBy = (handler: TaskHandler.TaskHandler) => Effect.map(handler.status, (status) => status.finished)
        const [eastHandler, westHandler] = [
          Context.get(first.context, EastTasks),
          Context.get(first.context, WestTasks)
        ]
        yield* eventually(finishedBy(westHandler), (n) => n === 3, "5 seconds", "West's handler counts its 3 tasks")
        assert.strictEqual(yield* finishedBy(eastHandler), 1)
        yield* Scope.close(first.scope, Exit.void)

        // After the restart East's owed report is delivered: West's records never replaced it.
        yield* east.restart
        const second = yield* startWorker(app(() => Effect.void))
        yield* eventually(
          east.task(eastTask),
          (t) => t.status === "FINISHED",
          "10 seconds",
          "east's owed report arrived"
        )
        assert.deepStrictEqual((yield* west.tasks).map((t) => t.status), ["FINISHED", "FINISHED", "FINISHED"])
        yield* Scope.close(second.scope, Exit.void)

        // Every "finished" line (a task's one line at Info) names the master its task came from and the node.
        const finished = (yield* Ref.get(lines)).filter((line) => /^task \S+ finished$/.test(line.message))
        const byMaster = (address: string) =>
          finished.filter((line) => line.address === address).map((line) => line.message)
        assert.deepStrictEqual(byMaster(east.address), [`task ${eastTask} finished`])
        assert.deepStrictEqual(byMaster(west.address).sort(), westTasks.map((id) => `task ${id} finished`).sort())
        assert.isTrue(finished.every((line) => line.node === "w1"))
      }),
    40_000
  )

  it.scopedLive(
    "an idle worker behind a blackhole: the silence of its stream, not a fetch's deadline, tells it the link is dead",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: master.port } })
        const lines = yield* Ref.make<Array<string>>([])
        const capture = Logger.make(({ message }) =>
          Effect.runSync(
            Ref.update(lines, (all) => [...all, Array.isArray(message) ? message.join(" ") : String(message)])
          )
        )
        const { context } = yield* startWorker(
          worker(proxy.address, () => Effect.void).pipe(Layer.provide(Logger.replace(Logger.defaultLogger, capture)))
        )
        const conn = yield* Effect.provide(MasterLink, context)
        yield* conn.readiness.await
        // Idle: its fetch is held at the master, answered only after 25 s.
        yield* Effect.sleep("1 second")
        yield* proxy.blackhole
        yield* eventually(conn.state, (state) => state._tag !== "Ready", "15 seconds", "the worker noticed")
        const said = (yield* Ref.get(lines)).find((line) => line.includes("silent"))
        assert.isDefined(said, "the stream's silence is named")
        assert.include(said!, "the master promised a keepalive every 2000 ms")
        // The link comes back: a task queued meanwhile runs.
        const id = yield* master.enqueue({ payload: JSON.stringify({ n: 1 }) })
        yield* proxy.pass
        yield* eventually(
          master.task(id),
          (t) => t.status === "FINISHED",
          "15 seconds",
          "the task ran after the blackhole"
        )
      }),
    40_000
  )
})
