/**
 * The example worker killed with SIGKILL while its task runs `sleep 30`, for
 * real, against the example master, and started again:
 *
 * - the sleep outlives the kill (nothing else ends it), and the restarted
 *   worker ends it before it reports the task ERROR, naming its group;
 * - when the pid recorded has another start time now (a pid reused), the
 *   process is left running, and the report says nothing was left running.
 *
 * The kill comes once the task's start record holds the sleep's process
 * group, read from the outbox's files: the record is durable when it is
 * there, so the scenario is made to happen, not hoped for.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Command from "@effect/platform/Command"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { line } from "../../src/internal/outbox/fileSystem.js"
import * as TaskHandler from "../../src/TaskHandler.js"
import { exampleMaster, poll, type Running, spawn, type TaskView, temporaryDirectory, tsx } from "./processes.js"

const temporary = temporaryDirectory("task-process-e2e-")

// /proc/<pid>/stat's state and start time, and the command line; undefined when the process is gone.
const proc = (pid: number) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "")
    return { state: fields[0]!, start: fields[19]!, command }
  } catch {
    return undefined
  }
}
// Running: there, and not a zombie (this machine's init may never reap an orphan).
const running = (pid: number) => {
  const found = proc(pid)
  return found !== undefined && found.state !== "Z"
}

interface Recorded {
  readonly file: string
  readonly pgid: number
  readonly start: string
  readonly boot: string | undefined
}

// The task's RUNNING record in the outbox directory, once it holds a process group.
const startRecord = (directory: string, taskId: string): Recorded | undefined => {
  if (!existsSync(directory)) return undefined
  for (const name of readdirSync(directory, { recursive: true, encoding: "utf8" })) {
    if (!/\d{16}\.records$/.test(name) || name.includes("damaged")) continue
    const file = join(directory, name)
    try {
      // One record a line: its JSON, a tab, its checksum.
      for (const line of readFileSync(file, "utf8").split("\n").filter((l) => l.length > 0)) {
        const record = JSON.parse(line.slice(0, line.lastIndexOf("\t"))) as {
          taskId?: string
          status?: string
          processes?: ReadonlyArray<{ pgid: number; start?: string; boot?: string }>
        }
        const group = record.processes?.[0]
        if (record.taskId === taskId && record.status === "RUNNING" && group?.start !== undefined) {
          return { file, pgid: group.pgid, start: group.start, boot: group.boot }
        }
      }
    } catch {
      // Removed meanwhile: read again on the next poll.
    }
  }
  return undefined
}

// A master, a `sleep 30` task, a worker that starts it and is killed with SIGKILL once the sleep's group is recorded,
// then `beforeRestart`, a second worker, and the task's ERROR at the master.
const crashWhileSleeping = (beforeRestart: (recorded: Recorded) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const directory = yield* temporary
    const outboxDir = join(directory, "outbox")
    // The task is not handed out again while the worker is down: it ends with the restart's report.
    const { address, api } = yield* exampleMaster(directory, { MASTER_REDELIVER_AFTER: "10 minutes" })
    const { id } = yield* api<{ id: string }>("POST", "/tasks", { payload: { command: "sleep", args: ["30"] } })
    const startWorker = spawn(Command.make(...tsx("examples/worker.ts")), {
      MASTER_ADDRESS: address,
      NODE_KEY: "task-process",
      OUTBOX_DIR: outboxDir,
      FETCH_INTERVAL: "200 millis",
      LOG_FORMAT: "json",
      // A task's "started" line is at Debug: the check counts them.
      LOG_LEVEL: "Debug"
    })

    const first: Running = yield* startWorker
    const recorded = yield* poll(
      Effect.sync(() => startRecord(outboxDir, id)),
      (found) => found !== undefined,
      "60 seconds",
      "the task's start record holding the sleep's process group"
    ).pipe(Effect.map((found) => found!))
    // The command runs once its group is recorded: the sleep itself, in the holder's place.
    const sleep = yield* poll(
      Effect.sync(() => proc(recorded.pgid)),
      (found) => found?.command[0] === "sleep",
      "10 seconds",
      "the recorded group's leader running sleep"
    )
    assert.strictEqual(sleep!.start, recorded.start, "the recorded start time is the sleep's")
    assert.strictEqual(recorded.boot, readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim())

    yield* first.kill("SIGKILL")
    yield* poll(first.running, (r) => !r, "10 seconds", "the killed worker gone")
    yield* Effect.sleep("500 millis")
    assert.isTrue(running(recorded.pgid), "the sleep outlived the killed worker")

    yield* beforeRestart(recorded)
    const restartedAt = Date.now()
    const second = yield* startWorker
    const task = yield* poll(
      api<ReadonlyArray<TaskView>>("GET", "/tasks"),
      (tasks) => tasks.find((t) => t.id === id)?.status === "ERROR",
      "60 seconds",
      "the task reported ERROR after the restart"
    ).pipe(Effect.map((tasks) => tasks.find((t) => t.id === id)!))
    // Read at once: what is ended is ended before the report is stored.
    const sleepRunsAtTheReport = running(recorded.pgid)
    console.log(
      `task ${id}: group ${recorded.pgid} recorded; ERROR at the master ${Date.now() - restartedAt} ms after the ` +
        `restart began, the sleep ${sleepRunsAtTheReport ? "still running" : "gone"}: ${task.history.at(-1)?.error}`
    )
    yield* second.kill("SIGTERM")
    yield* poll(second.running, (r) => !r, "20 seconds", "the second worker stopped")
    const starts = [...first.lines, ...second.lines].filter((l) => l.message === `task ${id} started`).length
    return { recorded, error: task.history.at(-1)?.error, sleepRunsAtTheReport, starts }
  }).pipe(Effect.provide(NodeContext.layer))

describe.skipIf(process.platform !== "linux")("a crashed task's processes (example worker, real SIGKILL)", () => {
  it.scopedLive(
    "the sleep a killed worker's task left running is ended by the restart, before its ERROR report names it",
    () =>
      Effect.gen(function*() {
        const outcome = yield* crashWhileSleeping(() => Effect.void)
        assert.isFalse(outcome.sleepRunsAtTheReport, "the sleep was gone when the ERROR reached the master")
        assert.isFalse(running(outcome.recorded.pgid))
        assert.strictEqual(
          outcome.error,
          `${TaskHandler.restartMessage}; its processes (group ${outcome.recorded.pgid}) were ended`
        )
        assert.strictEqual(outcome.starts, 1, "the task was not run again")
      }),
    150_000
  )

  it.scopedLive(
    "a recorded pid whose process has another start time now is not signalled: nothing was left running",
    () =>
      Effect.gen(function*() {
        let sleep = 0
        const outcome = yield* crashWhileSleeping((recorded) =>
          Effect.sync(() => {
            sleep = recorded.pgid
            // As if the sleep had ended and its pid gone to a new process: the record names an older start time.
            const older = String(Number(recorded.start) - 1)
            const lines = readFileSync(recorded.file, "utf8").split("\n").filter((l) => l.length > 0).map((l) => {
              const record = JSON.parse(l.slice(0, l.lastIndexOf("\t"))) as Record<string, unknown>
              return record["status"] !== "RUNNING" ? `${l}\n` : line(
                JSON.stringify({ ...record, processes: [{ pgid: recorded.pgid, start: older, boot: recorded.boot }] })
              )
            })
            writeFileSync(recorded.file, lines.join(""))
          })
        ).pipe(Effect.ensuring(Effect.sync(() => sleep > 0 && running(sleep) && process.kill(sleep, "SIGKILL"))))
        assert.isTrue(outcome.sleepRunsAtTheReport, "the process with the recorded pid was left running")
        assert.strictEqual(outcome.error, `${TaskHandler.restartMessage}; nothing it started was left running`)
      }),
    150_000
  )
})
