/**
 * Crash: the example worker SIGKILLed while its shell task runs `sleep 30`,
 * for real, against the example master, and started again: what its restart
 * does with the processes the task left running (`TaskProcess`,
 * `NodeTaskProcess`), as `test/e2e/TaskProcess.e2e.test.ts` checks once.
 *
 * Per round (10; quick: 2), with one master process for all of them: a
 * `sleep 30` task queued, a worker of its own (its own node key and outbox
 * directory) started; once the task's start record holding the sleep's
 * process group is in the outbox's files (durable), the worker is killed with
 * SIGKILL, and the sleep must still run (the scenario; a round where it does
 * not breaks the benchmark). The worker is started again; when the task's
 * ERROR reaches the master, measured: whether any process of the group is
 * alive at that moment, the time from the restart to the report, and the
 * report's words (they name the group). Every process is ended when its round
 * ends, whatever happened: the workers by their scope, the group with SIGKILL.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Command from "@effect/platform/Command"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import * as TaskHandler from "../src/TaskHandler.js"
import {
  type ExampleMaster,
  exampleMaster,
  type LogLine,
  poll,
  type Running,
  spawn,
  type TaskView,
  temporaryDirectory,
  tsx
} from "../test/e2e/processes.js"
import type { Bench, Result, Table, Target } from "./Bench.js"
import { bars, percentile } from "./plot.js"

/** The bounds of the waits: one not met breaks the benchmark (every process is still ended). */
const bounds = {
  admin: "30 seconds",
  record: "60 seconds",
  sleep: "10 seconds",
  killed: "10 seconds",
  error: "60 seconds",
  stopped: "20 seconds",
  round: "150 seconds"
} as const

/** After the kill, before the sleep is checked: as the end-to-end test waits. */
const afterKillMs = 500

const temporary = temporaryDirectory("bench-crash-")

interface Proc {
  readonly pid: number
  readonly state: string
  readonly pgrp: number
  readonly start: string
  readonly command: ReadonlyArray<string>
}

// /proc/<pid>/stat's state, group and start time, and the command line; undefined when the process is gone.
const proc = (pid: number): Proc | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ")
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "")
    return { pid, state: fields[0]!, pgrp: Number(fields[2]), start: fields[19]!, command }
  } catch {
    return undefined
  }
}

// The processes of group `pgid` that run: there, and not zombies (this machine's init may never reap an orphan).
const groupAlive = (pgid: number): ReadonlyArray<Proc> => {
  const alive: Array<Proc> = []
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue
    const found = proc(Number(name))
    if (found !== undefined && found.pgrp === pgid && found.state !== "Z") alive.push(found)
  }
  return alive
}

const killGroup = (pgid: number) => {
  try {
    process.kill(-pgid, "SIGKILL")
  } catch {
    // Gone already.
  }
}

interface Recorded {
  readonly pgid: number
  readonly start: string
}

// The task's RUNNING record in the outbox directory, once it holds a process group (as the end-to-end test reads it).
const startRecord = (directory: string, taskId: string): Recorded | undefined => {
  if (!existsSync(directory)) return undefined
  for (const name of readdirSync(directory, { recursive: true, encoding: "utf8" })) {
    if (!/\d{16}\.records$/.test(name) || name.includes("damaged")) continue
    try {
      // One record a line: its JSON, a tab, its checksum.
      for (const line of readFileSync(join(directory, name), "utf8").split("\n").filter((l) => l.length > 0)) {
        const record = JSON.parse(line.slice(0, line.lastIndexOf("\t"))) as {
          taskId?: string
          status?: string
          processes?: ReadonlyArray<{ pgid: number; start?: string }>
        }
        const group = record.processes?.[0]
        if (record.taskId === taskId && record.status === "RUNNING" && group?.start !== undefined) {
          return { pgid: group.pgid, start: group.start }
        }
      }
    } catch {
      // Removed meanwhile: read again on the next poll.
    }
  }
  return undefined
}

// The example master for all the rounds, for as long as the scope. The task is not handed out again while the
// worker is down: it ends with the restart's report.
const startMaster = (directory: string) =>
  exampleMaster(directory, { MASTER_REDELIVER_AFTER: "10 minutes" }, bounds.admin)

interface Round {
  readonly round: number
  readonly taskId: string
  readonly pgid: number
  /** From the first worker's start to the start record holding the group in the outbox's files, ms. */
  readonly recordMs: number
  /** Processes of the group running after the kill (and `afterKillMs`). */
  readonly aliveAfterKill: number
  /** Pids of the group running when the ERROR was seen at the master. */
  readonly aliveAtReport: ReadonlyArray<number>
  /** From the restart (the second worker started) to its first log line, ms. */
  readonly workerUpMs: number | undefined
  /** From the restart to the worker's line saying what it found of the group, ms. */
  readonly groupEndedMs: number | undefined
  /** That line, as the worker logged it. */
  readonly groupLine: string | undefined
  /** From the restart to the ERROR in the task's history at the master (the master's clock, same machine), ms. */
  readonly errorMs: number
  /** From the restart to the ERROR seen through the admin API, ms. */
  readonly seenMs: number
  readonly error: string
  readonly namesGroup: boolean
  /** Times the task was started, both workers together. */
  readonly starts: number
}

const lineAt = (lines: ReadonlyArray<LogLine>, from: number, test: (line: LogLine) => boolean) => {
  const line = lines.find(test)
  return line === undefined ? undefined : { at: line.at - from, message: line.message }
}

// One round: a worker killed while its task runs `sleep 30`, started again, and the task's ERROR at the master.
const crashOnce = (master: ExampleMaster, directory: string, round: number) =>
  Effect.gen(function*() {
    const what = `round ${round}`
    const outboxDir = join(directory, `outbox-${round}`)
    const { id } = yield* master.api<{ id: string }>("POST", "/tasks", {
      payload: { command: "sleep", args: ["30"] }
    })
    let pgid = 0
    // Last to run: whatever is left of the group is killed, however the round ended.
    yield* Effect.addFinalizer(() => Effect.sync(() => pgid > 0 && killGroup(pgid)))
    const startWorker = spawn(Command.make(...tsx("examples/worker.ts")), {
      MASTER_ADDRESS: master.address,
      NODE_KEY: `bench-crash-${round}`,
      OUTBOX_DIR: outboxDir,
      FETCH_INTERVAL: "200 millis",
      LOG_FORMAT: "json"
    })

    const startedAt = Date.now()
    const first: Running = yield* startWorker
    const recorded = yield* poll(
      Effect.sync(() => startRecord(outboxDir, id)),
      (found) => found !== undefined,
      bounds.record,
      `${what}: the task's start record holding the sleep's process group`
    ).pipe(Effect.map((found) => found!))
    pgid = recorded.pgid
    const recordMs = Date.now() - startedAt
    // The command runs once its group is recorded: the sleep itself, in the holder's place.
    yield* poll(
      Effect.sync(() => proc(recorded.pgid)),
      (found) => found?.command[0] === "sleep" && found.start === recorded.start,
      bounds.sleep,
      `${what}: the recorded group's leader running sleep`
    )

    yield* first.kill("SIGKILL")
    yield* poll(first.running, (r) => !r, bounds.killed, `${what}: the killed worker gone`)
    yield* Effect.sleep(afterKillMs)
    const afterKill = groupAlive(recorded.pgid)
    if (!afterKill.some((p) => p.pid === recorded.pgid && p.command[0] === "sleep")) {
      return yield* Effect.fail(
        new Error(`${what}: the sleep (group ${recorded.pgid}) did not outlive the killed worker: no scenario`)
      )
    }

    const restartedAt = Date.now()
    const second = yield* startWorker
    const task = yield* poll(
      master.api<ReadonlyArray<TaskView>>("GET", "/tasks"),
      (tasks) => tasks.find((t) => t.id === id)?.status === "ERROR",
      bounds.error,
      `${what}: the task reported ERROR after the restart`
    ).pipe(Effect.map((tasks) => tasks.find((t) => t.id === id)!))
    // Read at once: what is ended is ended before the report is stored.
    const aliveAtReport = groupAlive(recorded.pgid).map((p) => p.pid)
    const seenMs = Date.now() - restartedAt
    const change = [...task.history].reverse().find((c) => c.status === "ERROR")!
    const error = change.error ?? ""

    yield* second.kill("SIGTERM")
    yield* poll(second.running, (r) => !r, bounds.stopped, `${what}: the restarted worker stopped`)
    const up = second.lines[0]
    const groupLine = lineAt(second.lines, restartedAt, (l) => l.message.startsWith(`process group ${recorded.pgid} `))
    const starts = [...first.lines, ...second.lines].filter((l) => l.message === `task ${id} started`).length
    return {
      round,
      taskId: id,
      pgid: recorded.pgid,
      recordMs,
      aliveAfterKill: afterKill.length,
      aliveAtReport,
      workerUpMs: up === undefined ? undefined : up.at - restartedAt,
      groupEndedMs: groupLine?.at,
      groupLine: groupLine?.message,
      errorMs: change.at - restartedAt,
      seenMs,
      error,
      namesGroup: error.includes(`(group ${recorded.pgid})`),
      starts
    } satisfies Round
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({
      duration: bounds.round,
      onTimeout: () => new Error(`crash: round ${round} did not end within ${bounds.round}`)
    })
  )

const cell = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? "-" : (ms / 1000).toFixed(2))
const bar = (series: string, ms: number | undefined) =>
  ms === undefined ? { series, value: 0, missing: "no line" } : { series, value: ms / 1000 }
const max = (values: ReadonlyArray<number>) => (values.length === 0 ? Number.NaN : Math.max(...values))
const defined = (values: ReadonlyArray<number | undefined>) => values.filter((v): v is number => v !== undefined)

export const crash: Bench = ({ quick }) =>
  Effect.gen(function*() {
    if (process.platform !== "linux") {
      return yield* Effect.fail(new Error("crash reads /proc: it runs on Linux only"))
    }
    const count = quick ? 2 : 10
    const rounds = yield* Effect.scoped(Effect.gen(function*() {
      const directory = yield* temporary
      const master = yield* startMaster(directory)
      const measured: Array<Round> = []
      for (let round = 1; round <= count; round++) {
        const r = yield* crashOnce(master, directory, round)
        measured.push(r)
        yield* Console.log(
          `  round ${round}/${count}: group ${r.pgid}, ${r.aliveAfterKill} running after the kill, ` +
            `${r.aliveAtReport.length} at the ERROR, ${r.errorMs} ms after the restart: ${r.error}`
        )
      }
      return measured
    })).pipe(Effect.provide(NodeContext.layer))

    const aliveRounds = rounds.filter((r) => r.aliveAtReport.length > 0)
    const named = rounds.filter((r) => r.namesGroup)
    const errors = rounds.map((r) => r.errorMs)
    const ups = defined(rounds.map((r) => r.workerUpMs))
    const tails = defined(rounds.map((r) => r.groupEndedMs === undefined ? undefined : r.errorMs - r.groupEndedMs))
    const expected = (pgid: number) => `${TaskHandler.restartMessage}; its processes (group ${pgid}) were ended`
    const exact = rounds.filter((r) => r.error === expected(r.pgid)).length

    const targets: ReadonlyArray<Target> = [
      {
        name: "a process of the task's group alive when its ERROR reaches the master",
        target: "none alive, in every round (before: 5/5 alive)",
        measured: `${aliveRounds.length}/${rounds.length} rounds with one alive`,
        met: aliveRounds.length === 0
      },
      {
        name: "the ERROR report names the task's group as ended",
        target: "in every round",
        measured: `${named.length}/${rounds.length} rounds`,
        met: named.length === rounds.length
      }
    ]

    const perRound: Table = {
      title: "Per round (seconds from the restart)",
      columns: [
        "round",
        "group",
        "running after the kill",
        "alive at the ERROR",
        "worker's first line",
        "group ended (worker's line)",
        "ERROR at the master",
        "task started",
        "the ERROR's words"
      ],
      rows: rounds.map((r) => [
        r.round,
        r.pgid,
        r.aliveAfterKill,
        r.aliveAtReport.length === 0 ? "none" : r.aliveAtReport.join(", "),
        cell(r.workerUpMs),
        cell(r.groupEndedMs),
        cell(r.errorMs),
        `${r.starts}x`,
        r.error
      ])
    }
    const summaryRow = (measure: string, values: ReadonlyArray<number>) => [
      measure,
      values.length,
      cell(percentile(values, 50)),
      cell(max(values))
    ]
    const summary: Table = {
      title: "Summary (seconds)",
      columns: ["measure", "n", "p50", "max"],
      rows: [
        summaryRow("first worker started: the start record with the group durable", rounds.map((r) => r.recordMs)),
        summaryRow("restart: the worker's first log line", ups),
        summaryRow("restart: the worker's line on the group", defined(rounds.map((r) => r.groupEndedMs))),
        summaryRow("restart: ERROR at the master", errors),
        summaryRow("restart: ERROR seen through the admin API", rounds.map((r) => r.seenMs))
      ]
    }

    const result: Result = {
      name: "crash",
      title: "Crash: a worker SIGKILLed mid-task",
      method: `${count} rounds against one example master process (examples/master.ts, tasks not handed out again ` +
        "for 10 minutes). Per round: a `sleep 30` shell task queued, an example worker process (examples/worker.ts, " +
        "a node key and outbox directory of its own, fetch every 200 ms) started; once the task's start record " +
        "holding the sleep's process group is in the outbox's files (durable), the worker is killed with SIGKILL, " +
        `and ${afterKillMs} ms later the sleep must still run (it does in every round, or the benchmark breaks). ` +
        "The worker is started again (the restart); when the task's ERROR is seen at the master (admin API, polled " +
        "every 50 ms), the processes of the group still running are read from /proc at once (zombies not counted). " +
        "Times are from the restart: the new worker's first log line, its line on what it found of the group, and " +
        "the ERROR in the task's history at the master. Every process is ended when its round ends, whatever happened.",
      tables: [summary, perRound],
      targets,
      notes: [
        `The ERROR's words are exactly "${TaskHandler.restartMessage}; its processes (group <pgid>) were ended" ` +
        `in ${exact} of ${rounds.length} rounds.`,
        `Of the p50 ${cell(percentile(errors, 50))} s from the restart to the ERROR at the master, ` +
        `${cell(percentile(ups, 50))} s (p50) pass before the new worker logs anything (node and tsx loading it); ` +
        `from its line on the group to the ERROR at the master: p50 ${cell(percentile(tails, 50))} s.`
      ],
      svg: bars({
        title: "Crash: a worker SIGKILLed mid-task, then restarted",
        subtitle: `seconds from the restart, per round; ${aliveRounds.length}/${rounds.length} rounds with ` +
          "a process of the task's group alive at the ERROR",
        unit: "seconds from the restart",
        groups: rounds.map((r) => ({
          label: `round ${r.round}`,
          bars: [
            bar("worker's first log line", r.workerUpMs),
            bar("group ended (worker's line)", r.groupEndedMs),
            bar("ERROR at the master", r.errorMs)
          ]
        }))
      }),
      data: { rounds: count, bounds, afterKillMs, measured: rounds }
    }
    return result
  })
