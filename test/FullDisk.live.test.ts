/**
 * A full disk, for real: a small tmpfs the test mounts, filled up to the last
 * page. `add` fails with a typed error naming the path and the cause; the
 * task handler holds the report, counts it, shows it on /readyz, fetches
 * nothing more, and stores and delivers it once there is room again.
 *
 * Needs root (mount); skipped with the reason otherwise, except under
 * `CI=true`, where that is a failure.
 */
import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { execFileSync } from "node:child_process"
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Health from "../src/Health.js"
import { NodeHealth } from "../src/node/index.js"
import * as NodeOutbox from "../src/node/NodeOutbox.js"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { stores } from "./fixtures/outboxStores.js"
import { eventually } from "./fixtures/poll.js"

const unavailable = (() => {
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "mounting a tmpfs needs root"
  const probe = mkdtempSync(join(tmpdir(), "tmpfs-probe-"))
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], { stdio: "pipe" })
    execFileSync("umount", [probe], { stdio: "pipe" })
    return undefined
  } catch (error) {
    return `cannot mount a tmpfs: ${error instanceof Error ? error.message : String(error)}`
  } finally {
    rmSync(probe, { recursive: true, force: true })
  }
})()
const underCi = process.env["CI"] === "true"
if (unavailable !== undefined && !underCi) console.warn(`skipping the full-disk tests: ${unavailable}`)

// A 1 MiB tmpfs for the test's scope.
const tmpfs = Effect.acquireRelease(
  Effect.sync(() => {
    const directory = mkdtempSync(join(tmpdir(), "full-disk-"))
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", directory])
    return directory
  }),
  (directory) =>
    Effect.sync(() => {
      execFileSync("umount", ["-l", directory])
      rmSync(directory, { recursive: true, force: true })
    })
)

// Fills the file system to its last byte with one file; removing it makes room again.
const fill = (directory: string) =>
  Effect.sync(() => {
    const filler = join(directory, "filler")
    const fd = openSync(filler, "w")
    const chunk = Buffer.alloc(4096, 1)
    try {
      for (;;) writeSync(fd, chunk)
    } catch (error) {
      if ((error as { code?: unknown }).code !== "ENOSPC") throw error
      // The last pages, a byte at a time.
      try {
        for (;;) writeSync(fd, chunk.subarray(0, 1))
      } catch {
        // Full.
      }
    } finally {
      closeSync(fd)
    }
    return () => rmSync(filler)
  })

const report = (taskId: string): TaskSource.StatusReport => ({
  key: `${taskId}:FINISHED`,
  taskId,
  status: "FINISHED",
  error: ""
})
const owner = { node: "n1", master: "127.0.0.1:9666" }

describe.skipIf(unavailable !== undefined && !underCi)("a full disk, for real", () => {
  for (const store of stores) {
    it.scopedLive(
      `${store.name}: add fails with Unwritable naming the path and the cause; nothing stored is lost; add works again once there is room`,
      () =>
        Effect.gen(function*() {
          if (unavailable !== undefined) {
            return yield* Effect.dieMessage(`under CI the full-disk tests must run: ${unavailable}`)
          }
          const mounted = yield* tmpfs
          const location = store.location(mounted)
          const stored: Array<string> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const outbox = yield* Outbox.make({ ...owner, deliver: () => Effect.never })
            for (const id of ["a", "b", "c"]) {
              yield* outbox.add(report(id))
              stored.push(id)
            }
            const freeRoom = yield* fill(mounted)
            let n = 0
            const error = yield* Effect.gen(function*() {
              for (; n < 5_000; n++) {
                yield* outbox.add(report(`more-${n}`))
                stored.push(`more-${n}`)
              }
            }).pipe(Effect.flip)
            assert.strictEqual(error._tag, "OutboxError")
            assert.strictEqual(error.reason, "Unwritable")
            assert.include(error.path, mounted)
            assert.match(error.message, /ENOSPC|no space left|SQLITE_FULL|database or disk is full/i)
            assert.strictEqual(yield* outbox.size, stored.length, "the failed report is not queued")
            freeRoom()
            yield* outbox.add(report("after"))
            stored.push("after")
          })).pipe(Effect.provide(store.layer(location)))
          if (store.name === "filesystem") {
            const left = readdirSync(location, { recursive: true, encoding: "utf8" }).filter((name) =>
              name.endsWith(".tmp")
            )
            assert.deepStrictEqual(left, [], "no temporary file left")
          }
          const again = yield* Effect.scoped(
            Effect.flatMap(Outbox.OutboxStore, (s) =>
              Effect.map(s.open(owner), (r) => r.initial.map((x) => x.report.taskId)))
          ).pipe(Effect.provide(store.layer(location)))
          assert.deepStrictEqual(again, stored)
        }),
      30_000
    )
  }

  it.scopedLive(
    "the task handler holds a report it cannot store, counts it, shows it on /readyz, fetches nothing more, and delivers it once there is room",
    () =>
      Effect.gen(function*() {
        if (unavailable !== undefined) {
          return yield* Effect.dieMessage(`under CI the full-disk tests must run: ${unavailable}`)
        }
        const mounted = yield* tmpfs
        // ReportStatus and ReportStatuses fail while `refusing`: reports pile up in the outbox, on the small disk.
        let refusing = true
        const refuseReports: grpc.ServerInterceptor = (method, call) =>
          new grpc.ServerInterceptingCall(call, {
            start: (next) =>
              next({
                onReceiveMetadata: (metadata, pass) =>
                  refusing && /\/ReportStatus(es)?$/.test(method.path)
                    ? call.sendStatus({ code: grpc.status.UNAVAILABLE, details: "refusing reports" })
                    : pass(metadata)
              })
          })
        const master = yield* Master.make({ serverOptions: { interceptors: [refuseReports] } })
        const worker = Layer.mergeAll(
          TaskHandler.layer({
            connection: MasterLink,
            payload: Schema.Struct({ n: Schema.Number }),
            run: () => Effect.sleep("10 millis"),
            maxRunners: 1,
            fetchInterval: "100 millis"
          }),
          NodeHealth.layer({ host: "127.0.0.1", port: 0, connection: MasterLink })
        ).pipe(
          Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey: "full-disk" })),
          Layer.provideMerge(
            MasterLink.layer({
              address: master.address,
              reconnectSchedule: Schedule.spaced("200 millis")
            })
          ),
          Layer.provide(GrpcChannel.layer),
          Layer.provide(NodeOutbox.layerFileSystem(join(mounted, "outbox")))
        )
        const context = yield* Layer.build(worker)
        const handler = Context.get(context, TaskHandler.TaskHandler)
        const health = Context.get(context, Health.Health)
        const readyz = Effect.promise(() =>
          fetch(`${health.url}/readyz`).then((r) => r.json() as Promise<{ unpersistedReports?: number }>)
        )

        const first = yield* master.enqueue({ payload: JSON.stringify({ n: 1 }) })
        yield* eventually(
          handler.outbox.pending,
          (p) => p.some((r) => r.key === `${first}:FINISHED`),
          "10 seconds",
          "the first task's FINISHED stored"
        )
        const freeRoom = yield* fill(mounted)
        const second = yield* master.enqueue({ payload: JSON.stringify({ n: 2 }) })
        // Its RUNNING cannot be stored: held in memory, counted, shown; the task does not run before it is stored.
        yield* eventually(handler.status, (s) => s.unpersisted === 1, "10 seconds", "one report held in memory")
        assert.strictEqual((yield* readyz).unpersistedReports, 1)
        const third = yield* master.enqueue({ payload: JSON.stringify({ n: 3 }) })
        yield* Effect.sleep("1 second")
        assert.strictEqual((yield* master.task(third)).status, "PENDING", "nothing fetched while a report is held")
        assert.strictEqual((yield* handler.status).finished, 1, "the second task waits for its RUNNING to be stored")

        freeRoom()
        refusing = false
        for (const id of [first, second, third]) {
          yield* eventually(master.task(id), (t) => t.status === "FINISHED", "20 seconds", `task ${id} finished`)
        }
        assert.strictEqual((yield* handler.status).unpersisted, 0)
        assert.isUndefined((yield* readyz).unpersistedReports)
        const tasks = yield* master.tasks
        assert.isTrue(
          tasks.every((t) => t.history.filter((h) => h.status === "FINISHED").length === 1 && t.handedOut === 1)
        )
      }),
    60_000
  )
})
