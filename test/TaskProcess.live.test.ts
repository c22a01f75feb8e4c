/**
 * A task's process groups on Node, with real processes: a command held until
 * its group is recorded, and never run when the worker dies first; a group
 * left running ended after a restart, and a recorded pid now another
 * process's left alone; what a task's scope leaves of its group ended.
 * Linux: start times come from /proc.
 */
import * as Command from "@effect/platform/Command"
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as NodeTaskProcess from "../src/node/NodeTaskProcess.js"
import * as TaskProcess from "../src/TaskProcess.js"
import { child, kill, line } from "./fixtures/outboxStores.js"
import { eventually } from "./fixtures/poll.js"

const temporary = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "task-process-"))),
  (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
)

// /proc/<pid>/stat's state and start time; none when the process is gone.
const stat = (pid: number) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return Option.some({ state: fields[0]!, group: Number(fields[2]), start: fields[19]! })
  } catch {
    return Option.none()
  }
}
const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()

// Running: there, and not a zombie (this machine's init may never reap an orphan).
const running = (pid: number) => Option.match(stat(pid), { onNone: () => false, onSome: (s) => s.state !== "Z" })

// A process started as a worker's task would have left it: `sleep 30` leading a group of its own.
const leftover = Effect.acquireRelease(
  Effect.sync(() => spawn("sleep", ["30"], { detached: true, stdio: "ignore" })),
  (p) => Effect.sync(() => p.kill("SIGKILL"))
)
const pidOf = (p: ChildProcess) => p.pid!

// A running task whose records are kept here; `gate`, when given, holds each record until it is done.
const recorder = (gate?: Deferred.Deferred<void>) => {
  const recorded: Array<TaskProcess.ProcessGroup> = []
  const asked = Deferred.unsafeMake<TaskProcess.ProcessGroup>(undefined as never)
  const task = TaskProcess.RunningTask.of({
    id: "t1",
    record: (group) =>
      Effect.gen(function*() {
        yield* Deferred.succeed(asked, group)
        if (gate !== undefined) yield* Deferred.await(gate)
        recorded.push(group)
      }),
    forget: () => Effect.void
  })
  return { recorded, asked, task }
}

describe.skipIf(process.platform !== "linux")("TaskProcess on Node (live)", () => {
  it.scopedLive("start holds the command until its group is recorded; the group is its pid and its start time", () =>
    Effect.gen(function*() {
      const directory = yield* temporary
      const marker = join(directory, "ran")
      const gate = yield* Deferred.make<void>()
      const { asked, recorded, task } = recorder(gate)
      const fiber = yield* Effect.fork(
        TaskProcess.start(Command.make("sh", "-c", `touch ${marker}; echo $$`)).pipe(
          Effect.flatMap((process) => Stream.runCollect(Stream.decodeText(process.stdout))),
          Effect.map((chunks) => Number(Array.from(chunks).join("").trim())),
          Effect.scoped,
          Effect.provideService(TaskProcess.RunningTask, task)
        )
      )
      const group = yield* Deferred.await(asked).pipe(Effect.timeout("10 seconds"))
      // Held: the holder runs, in a group of its own, and the command has not run.
      yield* Effect.sleep("300 millis")
      assert.isFalse(existsSync(marker), "the command did not run before its group was recorded")
      const held = Option.getOrThrow(stat(group.pgid))
      assert.deepStrictEqual([held.group, held.start, boot], [group.pgid, group.start, group.boot])
      yield* Deferred.succeed(gate, undefined)
      const pid = yield* Fiber.join(fiber).pipe(Effect.timeout("10 seconds"))
      assert.isTrue(existsSync(marker), "the command ran once its group was recorded")
      assert.strictEqual(pid, group.pgid, "the command runs in the holder's place: same pid, same start time")
      assert.deepStrictEqual(recorded, [group])
    }).pipe(Effect.provide(NodeTaskProcess.layer)))

  it.scopedLive(
    "a worker killed while the group is being recorded leaves the command never run",
    () =>
      Effect.gen(function*() {
        const directory = yield* temporary
        const marker = join(directory, "ran")
        const worker = yield* Effect.acquireRelease(
          Effect.sync(() => child([marker], fileURLToPath(new URL("./fixtures/heldProcess.ts", import.meta.url)))),
          (c) => Effect.sync(() => c.process.kill("SIGKILL"))
        )
        // A node process started with tsx: seconds on a loaded machine.
        const pgid = Number((yield* line(worker, (l) => l.startsWith("held "), 60_000)).split(" ")[1])
        assert.isTrue(running(pgid), "held, before the kill")
        yield* kill(worker)
        yield* eventually(Effect.sync(() => running(pgid)), (r) => !r, "10 seconds", "the held command gone")
        yield* Effect.sleep("300 millis")
        assert.isFalse(existsSync(marker), "the command never ran")
      }),
    90_000
  )

  it.scopedLive("after a restart a recorded group still led by its process is ended; one whose pid has another start time is left running", () =>
    Effect.gen(function*() {
      const sleep = yield* leftover
      const pid = pidOf(sleep)
      const start = Option.getOrThrow(stat(pid)).start
      // The pid of a process recorded before, given to another process since: the start times differ.
      const reused = yield* TaskProcess.endLeftBehind([{ pgid: pid, start: String(Number(start) - 1), boot }])
      assert.deepStrictEqual(reused, Option.some("nothing it started was left running"))
      assert.isTrue(running(pid), "another process's pid is not signalled")
      // The same pid and start time, recorded in another boot: not this process either.
      const before = yield* TaskProcess.endLeftBehind([{ pgid: pid, start, boot: "0-before-the-reboot" }])
      assert.deepStrictEqual(before, Option.some("nothing it started was left running"))
      assert.isTrue(running(pid), "a process of another boot's pid is not signalled")
      const ended = yield* TaskProcess.endLeftBehind([{ pgid: pid, start, boot }])
      assert.deepStrictEqual(ended, Option.some(`its processes (group ${pid}) were ended`))
      assert.isFalse(running(pid), "the group is gone once it is reported ended")
      const gone = yield* TaskProcess.endLeftBehind([{ pgid: pid, start }])
      assert.deepStrictEqual(gone, Option.some("nothing it started was left running"))
    }).pipe(Effect.provide(NodeTaskProcess.layer)))

  it.scopedLive("when the task's scope closes, what is left of its group is ended, a child in the background too", () =>
    Effect.gen(function*() {
      const { task } = recorder()
      const background = yield* TaskProcess.start(Command.make("sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!")).pipe(
        Effect.flatMap((process) =>
          Effect.zipLeft(Stream.runCollect(Stream.decodeText(process.stdout)), process.exitCode)
        ),
        Effect.map((chunks) => Number(Array.from(chunks).join("").trim())),
        Effect.scoped,
        Effect.provideService(TaskProcess.RunningTask, task)
      )
      assert.isFalse(running(background), `the background sleep ${background} ended with the scope`)
    }).pipe(Effect.provide(NodeTaskProcess.layer)))

  it.scopedLive("record: a process leading its own group is recorded with its start time; one in another's group is refused", () =>
    Effect.gen(function*() {
      const { recorded, task } = recorder()
      const leader = pidOf(yield* leftover)
      const group = yield* TaskProcess.record(leader).pipe(Effect.provideService(TaskProcess.RunningTask, task))
      assert.deepStrictEqual(group, { pgid: leader, start: Option.getOrThrow(stat(leader)).start, boot })
      assert.deepStrictEqual(recorded, [group])
      const inOurs = yield* Effect.acquireRelease(
        Effect.sync(() => spawn("sleep", ["30"], { stdio: "ignore" })),
        (p) => Effect.sync(() => p.kill("SIGKILL"))
      )
      const refused = yield* Effect.flip(
        TaskProcess.record(pidOf(inOurs)).pipe(Effect.provideService(TaskProcess.RunningTask, task))
      )
      assert.strictEqual(refused._tag === "ProcessGroupError" ? refused.reason : refused._tag, "NotLeader")
      assert.deepStrictEqual(recorded, [group])
    }).pipe(Effect.provide(NodeTaskProcess.layer)))
})
