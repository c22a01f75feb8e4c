/**
 * Throughput benchmark: what a task costs the worker and the master as the
 * runners grow. 2,000 no-op tasks are queued at the embedded master, alone in
 * its own process, then one worker is started in another (each pinned to a
 * core of its own where it can be) and runs them all; a round ends when
 * every task has ended and every report is delivered. Rounds: 20 and 100
 * runners, the file-system outbox (every report durable before it is
 * delivered), and the SQLite and memory outboxes as references. Contenders, in one run:
 * the library's defaults, and the same code configured as 0.2 worked (one
 * task a fetch, fetches that do not wait, one report a call: see
 * `throughput/worker.ts`). Each round has fresh processes.
 */
import * as Effect from "effect/Effect"
import type { Bench, Result } from "./Bench.js"
import { pinning, start } from "./child.js"
import { bars } from "./plot.js"

const contenders = [
  { key: "0.3", name: "defaults (batched fetches and reports)" },
  { key: "0.2", name: "0.2 behaviour (one task a fetch, one report a call)" }
] as const

interface Round {
  readonly contender: (typeof contenders)[number]["key"]
  readonly outbox: "filesystem" | "sqlite" | "memory"
  readonly runners: number
}

interface Measure extends Round {
  readonly tasksPerSecond: number
  readonly workerCpuMsPerTask: number
  /** From the first task's start: the worker's own start (loading, connecting, registering) left out. */
  readonly runningTasksPerSecond: number
  readonly runningWorkerCpuMsPerTask: number
  /** The worker's start: wall time and CPU before its first task started. */
  readonly startMs: number
  readonly startCpuMs: number
  readonly masterCpuMsPerTask: number
  readonly seconds: number
  /** Hand-outs per task: above 1, tasks went out again (a RUNNING report later than the master's redelivery). */
  readonly handOuts: number
}

const runRound = (round: Round, count: number) =>
  Effect.scoped(Effect.gen(function*() {
    const master = yield* start(new URL("./master.ts", import.meta.url), {
      core: pinning.available ? 0 : undefined
    })
    const { port } = yield* master.ask<{ port: number }>({ cmd: "port" })
    yield* master.ask({ cmd: "enqueue", count })
    const worker = yield* start(new URL("./throughput/worker.ts", import.meta.url), {
      core: pinning.available ? 1 : undefined,
      quiet: true
    })
    const before = yield* master.ask<{ cpuMs: number }>({ cmd: "mark" })
    const run = yield* worker.ask<{ ms: number; cpuMs: number; startMs: number; startCpuMs: number }>({
      cmd: "run",
      address: `127.0.0.1:${port}`,
      count,
      runners: round.runners,
      outbox: round.outbox,
      contender: round.contender
    })
    const after = yield* master.ask<{ cpuMs: number }>({ cmd: "mark" })
    const { tasks } = yield* master.ask<{ tasks: ReadonlyArray<{ status: string; handedOut: number }> }>({
      cmd: "tasks"
    })
    const finished = tasks.filter((task) => task.status === "FINISHED").length
    const handedOut = tasks.reduce((sum, task) => sum + task.handedOut, 0)
    if (finished !== count) {
      return yield* Effect.fail(new Error(`throughput: ${finished} of ${count} tasks FINISHED at the master`))
    }
    yield* master.ask({ cmd: "close" })
    const measure: Measure = {
      ...round,
      seconds: run.ms / 1000,
      handOuts: handedOut / count,
      tasksPerSecond: count / (run.ms / 1000),
      workerCpuMsPerTask: run.cpuMs / count,
      runningTasksPerSecond: count / ((run.ms - run.startMs) / 1000),
      runningWorkerCpuMsPerTask: (run.cpuMs - run.startCpuMs) / count,
      startMs: run.startMs,
      startCpuMs: run.startCpuMs,
      masterCpuMsPerTask: (after.cpuMs - before.cpuMs) / count
    }
    yield* Effect.logInfo(
      `throughput ${round.contender} ${round.outbox} ${round.runners} runners: ${Math.round(measure.tasksPerSecond)}` +
        ` tasks/s (${Math.round(measure.runningTasksPerSecond)} from the first task), worker ` +
        `${measure.workerCpuMsPerTask.toFixed(2)} ms CPU/task (${
          measure.runningWorkerCpuMsPerTask.toFixed(2)
        }), master ` +
        `${measure.masterCpuMsPerTask.toFixed(2)} ms CPU/task, ${measure.handOuts.toFixed(2)} hand-outs a task`
    )
    return measure
  }))

const fixed = (n: number, digits = 2) => n.toFixed(digits)

export const throughput: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const count = quick ? 100 : 2000
    const rounds: ReadonlyArray<Round> = contenders.flatMap(({ key }) =>
      (quick ? [["filesystem", 20], ["filesystem", 100]] as const : [
        ["filesystem", 20],
        ["filesystem", 100],
        ["sqlite", 100],
        ["memory", 20],
        ["memory", 100]
      ] as const).map(([outbox, runners]) => ({ contender: key, outbox, runners }))
    )
    const measures = yield* Effect.forEach(rounds, (round) => runRound(round, count))
    const find = (contender: string, outbox: string, runners: number) =>
      measures.find((m) => m.contender === contender && m.outbox === outbox && m.runners === runners)!
    const at100 = find("0.3", "filesystem", 100)
    const at20 = find("0.3", "filesystem", 20)
    const worstCpu = Math.max(at100.workerCpuMsPerTask, at20.workerCpuMsPerTask)
    const nameOf = (key: string) => contenders.find((c) => c.key === key)!.name

    const result: Result = {
      name: "throughput",
      title: "Throughput as runners grow",
      method: `${count} no-op tasks queued at the embedded master (its own process), then one worker (its own ` +
        `process) runs them all; a round ends when every task ended and every report is delivered. ` +
        `${pinning.available ? "Master and worker each pinned to a core. " : ""}` +
        "Contenders: the library's defaults, and the same code configured as 0.2 worked (one task a fetch, " +
        "fetches that do not wait, one report a call). CPU is each process's user + system time over the round. " +
        "Each figure is given for the whole round, from the worker's start, and, beside it, from its first task's " +
        "start on: the worker's own start (loading, connecting, registering) is paid once per process, not per " +
        "task, and is in its own columns. Fresh processes every round.",
      tables: [{
        title: "Tasks per second and CPU per task",
        columns: [
          "contender",
          "outbox",
          "runners",
          "tasks/s",
          "from the first task",
          "worker CPU ms/task",
          "from the first task",
          "master CPU ms/task",
          "worker start (ms, CPU ms)",
          "hand-outs/task",
          "seconds"
        ],
        rows: measures.map((m) => [
          nameOf(m.contender),
          m.outbox,
          m.runners,
          Math.round(m.tasksPerSecond),
          Math.round(m.runningTasksPerSecond),
          fixed(m.workerCpuMsPerTask),
          fixed(m.runningWorkerCpuMsPerTask),
          fixed(m.masterCpuMsPerTask),
          `${Math.round(m.startMs)}, ${Math.round(m.startCpuMs)}`,
          fixed(m.handOuts),
          fixed(m.seconds, 1)
        ])
      }],
      targets: [
        {
          name: "tasks/s with 100 runners, file-system outbox",
          target: ">= 1,000",
          measured: `${Math.round(at100.tasksPerSecond)} (${
            Math.round(at100.runningTasksPerSecond)
          } from the first task)`,
          met: at100.tasksPerSecond >= 1000
        },
        {
          name: "tasks/s with 100 runners against 20",
          target: "never fewer",
          measured: `${Math.round(at100.tasksPerSecond)} against ${Math.round(at20.tasksPerSecond)}`,
          met: at100.tasksPerSecond >= at20.tasksPerSecond
        },
        {
          name: "worker CPU per task, file-system outbox",
          target: "<= 1 ms",
          measured: `${fixed(worstCpu)} ms (${
            fixed(Math.max(at100.runningWorkerCpuMsPerTask, at20.runningWorkerCpuMsPerTask))
          } from the first task; master: ${fixed(at100.masterCpuMsPerTask)} ms at 100 runners)`,
          met: worstCpu <= 1
        }
      ],
      svg: bars({
        title: "Throughput as runners grow",
        subtitle: `${count} no-op tasks, one worker; tasks per second`,
        unit: "tasks/s",
        groups: rounds.filter((r) => r.contender === "0.3").map((r) => ({
          label: `${r.outbox}, ${r.runners} runners`,
          bars: contenders.map((c) => ({
            series: c.name,
            value: find(c.key, r.outbox, r.runners).tasksPerSecond
          }))
        }))
      }),
      data: { count, measures }
    }
    return result
  })
