/**
 * The example worker and master as separate processes, through real faults:
 * the master killed and restarted, a blackholed link, a flapping link, a
 * master failing 30 % of calls. For each: every task created reaches exactly
 * one terminal status, none runs twice, and the worker is never restarted.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Command from "@effect/platform/Command"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as FaultProxy from "../../src/testing/FaultProxy.js"
import { admin, type LogLine, poll, type Running, spawn, type TaskView, tsx } from "./processes.js"

const terminal = ["FINISHED", "ERROR", "CANCELLED"]

const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address ? address.port : 0)))
  })
})

// A master process on `port`, with its admin API on a Unix socket in `directory`.
const startMaster = (directory: string, port: number) =>
  Effect.gen(function*() {
    const socket = join(directory, `admin-${port}-${Date.now()}.sock`)
    const process = yield* spawn(Command.make(...tsx("examples/master.ts")), {
      MASTER_PORT: String(port),
      ADMIN_SOCKET: socket,
      LOG_FORMAT: "json"
    })
    const api = <A>(method: "GET" | "POST", path: string, body?: unknown) => admin<A>(socket, method, path, body)
    yield* poll(api("GET", "/nodes"), () => true, "30 seconds", "the master's admin API")
    return { process, api }
  })

const startWorker = (directory: string, address: string) =>
  spawn(Command.make(...tsx("examples/worker.ts")), {
    MASTER_ADDRESS: address,
    NODE_KEY: "faulty",
    OUTBOX_DIR: join(directory, "outbox"),
    LOG_FORMAT: "json",
    // A task's "started" line is at Debug: the checks count them.
    LOG_LEVEL: "Debug"
  })

type Api = Effect.Effect.Success<ReturnType<typeof startMaster>>["api"]

const enqueue = (api: Api, n: number) =>
  Effect.map(
    api<{ id: string }>("POST", "/tasks", { payload: { command: "echo", args: ["task", String(n)] } }),
    ({ id }) => id
  )

// Every task ended once, and the worker started each once (in the log lines since `since`).
const checkExactlyOnce = (api: Api, worker: Running, ids: ReadonlyArray<string>, since = 0) =>
  Effect.gen(function*() {
    const tasks = yield* poll(
      api<ReadonlyArray<TaskView>>("GET", "/tasks"),
      (tasks) => ids.every((id) => terminal.includes(tasks.find((t) => t.id === id)?.status ?? "")),
      "60 seconds",
      "every task ended"
    )
    for (const id of ids) {
      const task = tasks.find((t) => t.id === id)!
      assert.strictEqual(
        task.history.filter((change) => terminal.includes(change.status)).length,
        1,
        `${id}: one terminal status`
      )
      assert.strictEqual(task.status, "FINISHED", `${id} finished`)
      const starts = worker.lines.filter((line: LogLine) => line.at >= since && line.message === `task ${id} started`)
      assert.strictEqual(starts.length, 1, `${id} started once`)
    }
  })

const setup = Effect.gen(function*() {
  const directory = mkdtempSync(join(tmpdir(), "faults-"))
  yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
  const port = yield* freePort
  return { directory, port }
})

describe("the example worker through real faults (separate processes)", () => {
  it.scopedLive("the master killed, and restarted on the same port 10 s later", () =>
    Effect.gen(function*() {
      const { directory, port } = yield* setup
      const first = yield* Scope.make()
      const before = yield* startMaster(directory, port).pipe(Scope.extend(first))
      const worker = yield* startWorker(directory, `127.0.0.1:${port}`)
      const early = yield* Effect.forEach([1, 2, 3], (n) => enqueue(before.api, n))
      yield* checkExactlyOnce(before.api, worker, early)

      yield* before.process.kill("SIGKILL")
      yield* Scope.close(first, Exit.void)
      yield* Effect.sleep("10 seconds")
      const restartedAt = Date.now()
      const after = yield* startMaster(directory, port)
      // A brand-new master process knows nothing: the worker registers again and fetches its tasks.
      const late = yield* Effect.forEach([4, 5, 6], (n) => enqueue(after.api, n))
      yield* checkExactlyOnce(after.api, worker, late, restartedAt)
      assert.isTrue(worker.lines.some((line) => line.message.startsWith("connection lost")), "the loss was seen")
      assert.isTrue(yield* worker.running, "the worker was never restarted")
    }).pipe(Effect.provide(NodeContext.layer)), 90_000)

  it.scopedLive(
    "a link blackholed for 30 s: found by keepalive or the probe, then recovered",
    () =>
      Effect.gen(function*() {
        const { directory, port } = yield* setup
        const master = yield* startMaster(directory, port)
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port } })
        const worker = yield* startWorker(directory, proxy.address)
        const ids: Array<string> = []
        ids.push(yield* enqueue(master.api, 0))
        yield* checkExactlyOnce(master.api, worker, ids)
        yield* proxy.blackhole
        for (let n = 1; n <= 6; n++) {
          yield* Effect.sleep("5 seconds")
          ids.push(yield* enqueue(master.api, n))
        }
        yield* proxy.pass
        yield* checkExactlyOnce(master.api, worker, ids)
        assert.isTrue(
          worker.lines.some((line) => line.message.startsWith("connection lost")),
          "the blackhole was found"
        )
        assert.isTrue(yield* worker.running, "the worker was never restarted")
      }).pipe(Effect.provide(NodeContext.layer)),
    120_000
  )

  it.scopedLive("a link flapping down and up every 1 to 3 s for 60 s", () =>
    Effect.gen(function*() {
      const { directory, port } = yield* setup
      const master = yield* startMaster(directory, port)
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port } })
      const worker = yield* startWorker(directory, proxy.address)
      yield* poll(
        master.api<ReadonlyArray<{ key: string; online: boolean }>>("GET", "/nodes"),
        (nodes) => nodes.some((n) => n.online),
        "30 seconds",
        "worker online"
      )
      const flapping = yield* proxy.flap({
        down: ["1 second", "3 seconds"],
        up: ["1 second", "3 seconds"],
        kind: "reset"
      })
      const ids: Array<string> = []
      for (let n = 1; n <= 30; n++) {
        ids.push(yield* enqueue(master.api, n))
        yield* Effect.sleep("2 seconds")
      }
      yield* Fiber.interrupt(flapping)
      yield* proxy.pass
      yield* checkExactlyOnce(master.api, worker, ids)
      assert.isTrue(yield* worker.running, "the worker was never restarted")
    }).pipe(Effect.provide(NodeContext.layer)), 150_000)

  it.scopedLive("a master failing 30 % of calls with UNAVAILABLE", () =>
    Effect.gen(function*() {
      const { directory, port } = yield* setup
      const master = yield* startMaster(directory, port)
      const worker = yield* startWorker(directory, `127.0.0.1:${port}`)
      yield* poll(
        master.api<ReadonlyArray<{ key: string; online: boolean }>>("GET", "/nodes"),
        (nodes) => nodes.some((n) => n.online),
        "30 seconds",
        "worker online"
      )
      yield* master.api("POST", "/failure-rate", { rate: 0.3 })
      const ids = yield* Effect.forEach(Array.from({ length: 30 }, (_, n) => n), (n) => enqueue(master.api, n))
      yield* checkExactlyOnce(master.api, worker, ids)
      assert.isTrue(yield* worker.running, "the worker was never restarted")
    }).pipe(Effect.provide(NodeContext.layer)), 90_000)
})
