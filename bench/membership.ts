/**
 * Membership: how soon a worker is a member of its master again when the
 * master stops counting it as one, with the master in a process of its own
 * behind real nginx (`grpc_pass`) and the worker (the library's defaults) in
 * this process: the proxy ring of the end-to-end tests (`test/e2e/proxyRing.ts`).
 *
 * Three parts, on two rings (each: nginx, a master process, the worker):
 * 1. Forgets (20; quick: 3): the master forgets the node (`POST /forget`, as
 *    a master that expired it does) and a task is queued at once; measured,
 *    from the moment the forget was sent: the node registered again (its new
 *    `registeredAt`, the master's clock) and the task RUNNING. Each forget
 *    comes once the previous round's task has finished and 1 s more (quick: 0.5 s).
 * 2. Six forgets in a row from a fresh worker, spaced as in 1: every rejoin,
 *    the sixth against its target (a rejoin held back by the previous ones
 *    would grow). They run first on the forgets' ring; part 1's follow them.
 * 3. Restarts: the master killed (SIGKILL) and a new process, with empty
 *    memory, started on the same port while nginx and the worker's connection
 *    to it stay up; a task queued as soon as the new master answers its admin
 *    API. Measured from the new master's serving moment (its log line): the
 *    task RUNNING, and the worker's connection Ready again (when it left Ready).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { poll } from "../test/e2e/processes.js"
import { type Ring, type RingTask, startRing, type TaskView } from "../test/e2e/proxyRing.js"
import * as Nginx from "../test/fixtures/nginx.js"
import type { Bench, Result, Table, Target } from "./Bench.js"
import { bars, percentile } from "./plot.js"

interface Settings {
  /** Part 1: forgets, each measured. */
  readonly forgets: number
  /** Part 2: forgets in a row from a fresh worker, before part 1's on the same ring. */
  readonly inARow: number
  /** Part 3: master restarts (SIGKILL). */
  readonly restarts: number
  /** The pause between a round's task finishing and the next forget or restart. */
  readonly spacingMs: number
}

const settings = (quick: boolean): Settings =>
  quick
    // Quick: the spacing halved, to stay short on a loaded CI machine.
    ? { forgets: 3, inARow: 6, restarts: 1, spacingMs: 500 }
    : { forgets: 20, inARow: 6, restarts: 8, spacingMs: 1_000 }

/** The bounds of the waits: a rejoin or a task not seen within them breaks the benchmark (the ring's timeline is printed). */
const bounds = { registered: "15 seconds", finished: "20 seconds", part: "180 seconds" } as const

interface Forget {
  readonly round: number
  /** Epoch millis when `POST /forget` was sent. */
  readonly forgotAt: number
  /** How long the admin call took, ms. */
  readonly forgetCallMs: number
  /** From the forget to the node's new `registeredAt` (the master's clock), ms. */
  readonly registeredMs: number
  /** From the forget to the task queued right after it RUNNING, ms. */
  readonly runningMs: number
  /** From the forget to that task queued (PENDING), ms. */
  readonly queuedMs: number
}

interface Restart {
  readonly round: number
  /** From the kill to the new master serving, ms. */
  readonly downMs: number
  /** From the new master serving to the task queued (PENDING), ms. */
  readonly queuedMs: number
  /** From the new master serving to the task RUNNING, ms. */
  readonly runningMs: number
  /** From the task queued to it RUNNING, ms. */
  readonly runningFromQueuedMs: number
  /** When the worker's connection left Ready after the kill, ms from the kill; `undefined`: it stayed Ready. */
  readonly leftReadyMs: number | undefined
  /** From the new master serving to the worker's connection Ready again, ms; `undefined`: it never left Ready. */
  readonly readyAgainMs: number | undefined
}

const changedAt = (view: TaskView, status: string) => {
  const change = view.history.find((c) => c.status === status)
  if (change === undefined) throw new Error(`${view.id} has no ${status} in its history`)
  return change.at
}

const finished = (ring: Ring, task: RingTask, what: string) =>
  poll(ring.taskHistory(task), (view) => view.status === "FINISHED", bounds.finished, `${what}: ${task.id} FINISHED`)

// A task that runs and finishes: the node has been served.
const served = (ring: Ring, what: string) => Effect.flatMap(ring.enqueue(), (task) => finished(ring, task, what))

// One forget: the node forgotten, a task queued at once, both measured from the forget.
const forgetOnce = (ring: Ring, round: number, what: string) =>
  Effect.gen(function*() {
    const forgotAt = Date.now()
    const { forgotten } = yield* ring.api<{ readonly forgotten: boolean }>("POST", "/forget", { node: ring.nodeKey })
    const forgetCallMs = Date.now() - forgotAt
    if (!forgotten) return yield* Effect.fail(new Error(`${what}: the master did not know the node when it forgot it`))
    const task = yield* ring.enqueue()
    const node = yield* poll(
      Effect.map(ring.nodes, (nodes) => nodes.find((node) => node.key === ring.nodeKey)),
      (node) => node !== undefined,
      bounds.registered,
      `${what}: registered again`
    )
    const view = yield* finished(ring, task, what)
    return {
      round,
      forgotAt,
      forgetCallMs,
      registeredMs: node!.registeredAt - forgotAt,
      runningMs: changedAt(view, "RUNNING") - forgotAt,
      queuedMs: changedAt(view, "PENDING") - forgotAt
    } satisfies Forget
  })

// `count` forgets on `ring`, each once the node has been served and `spacingMs` more.
const forgets = (ring: Ring, count: number, s: Settings, part: string) =>
  Effect.gen(function*() {
    const measured: Array<Forget> = []
    for (let round = 1; round <= count; round++) {
      yield* Effect.sleep(s.spacingMs)
      const forget = yield* forgetOnce(ring, round, `${part}: forget ${round}`)
      measured.push(forget)
      yield* Console.log(
        `  ${part} ${round}/${count}: registered again after ${forget.registeredMs} ms, ` +
          `the task RUNNING after ${forget.runningMs} ms`
      )
    }
    return measured
  })

// Parts 1 and 2 on one ring: first the forgets in a row from a fresh worker, then the forgets measured one by one.
const forgetting = (s: Settings) =>
  Effect.scoped(Effect.gen(function*() {
    const ring = yield* startRing({ nodeKey: "bench-forgets" })
    yield* served(ring, "forgets: warm-up")
    const row = yield* forgets(ring, s.inARow, s, "in a row")
    const one = yield* forgets(ring, s.forgets, s, "forget")
    return { row, one }
  }))

// The master killed and started again with empty memory, `count` times; a task queued as soon as it answers.
const restarts = (s: Settings) =>
  Effect.scoped(Effect.gen(function*() {
    const ring = yield* startRing({ nodeKey: "bench-restarts" })
    yield* served(ring, "restarts: warm-up")
    const measured: Array<Restart> = []
    for (let round = 1; round <= s.restarts; round++) {
      yield* Effect.sleep(s.spacingMs)
      const what = `restart ${round}`
      const { master, stoppedAt } = yield* ring.restartMaster({ signal: "SIGKILL" })
      const task = yield* ring.enqueue()
      const view = yield* finished(ring, task, what)
      yield* ring.joined(bounds.registered)
      const after = ring.states.filter(({ at }) => at >= stoppedAt)
      const left = after.find(({ state }) => state._tag !== "Ready")
      const readyAgain = left === undefined
        ? undefined
        : after.find(({ at, state }) => at >= left.at && state._tag === "Ready")
      const restart: Restart = {
        round,
        downMs: master.servingAt - stoppedAt,
        queuedMs: changedAt(view, "PENDING") - master.servingAt,
        runningMs: changedAt(view, "RUNNING") - master.servingAt,
        runningFromQueuedMs: changedAt(view, "RUNNING") - changedAt(view, "PENDING"),
        leftReadyMs: left === undefined ? undefined : left.at - stoppedAt,
        readyAgainMs: readyAgain === undefined ? undefined : readyAgain.at - master.servingAt
      }
      measured.push(restart)
      yield* Console.log(
        `  restart ${round}/${s.restarts}: the task RUNNING ${restart.runningMs} ms after the new master served, ` +
          `the worker Ready again at ${restart.readyAgainMs ?? "-"} ms`
      )
    }
    return measured
  }))

const sec = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? "-" : `${(ms / 1000).toFixed(2)} s`)
const cell = (ms: number | undefined) => (ms === undefined ? "-" : (ms / 1000).toFixed(2))
const median = (values: ReadonlyArray<number>) => percentile(values, 50)
const max = (values: ReadonlyArray<number>) => (values.length === 0 ? Number.NaN : Math.max(...values))
const defined = (values: ReadonlyArray<number | undefined>) => values.filter((v): v is number => v !== undefined)

export const membership: Bench = ({ quick }) =>
  Effect.gen(function*() {
    if (Nginx.unavailable !== undefined) {
      return yield* Effect.fail(
        new Error(`membership needs nginx (install Debian's nginx-light, or set NGINX): ${Nginx.unavailable}`)
      )
    }
    const s = settings(quick)
    const within = <A, E, R>(effect: Effect.Effect<A, E, R>, part: string) =>
      Effect.timeoutFail(effect, {
        duration: bounds.part,
        onTimeout: () => new Error(`membership: ${part} did not end within ${bounds.part}`)
      })
    const { one, row } = yield* within(forgetting(s), "the forgets")
    const restarted = yield* within(restarts(s), "the restarts")

    const registered = one.map((f) => f.registeredMs)
    const running = one.map((f) => f.runningMs)
    const sixth = row.at(-1)!
    const restartRunning = restarted.map((r) => r.runningMs)
    const readyAgain = defined(restarted.map((r) => r.readyAgainMs))

    const targets: ReadonlyArray<Target> = [
      {
        name: "after a forget, registered again: p50",
        target: "<= 0.5 s",
        measured: `${sec(median(registered))} (${registered.length} forgets)`,
        met: median(registered) <= 500
      },
      {
        name: "after a forget, registered again: max",
        target: "<= 1 s",
        measured: sec(max(registered)),
        met: max(registered) <= 1_000
      },
      {
        name: `${s.inARow} forgets in a row: the ${s.inARow === 6 ? "sixth" : "last"} rejoin`,
        target: "<= 1 s",
        measured: `${sec(sixth.registeredMs)} (all: ${row.map((f) => cell(f.registeredMs)).join(", ")} s)`,
        met: sixth.registeredMs <= 1_000
      },
      {
        name: "master restarted behind nginx (SIGKILL): task RUNNING from the new master serving, p50",
        target: "<= 1.0 s",
        measured: `${sec(median(restartRunning))} (${restartRunning.length} restarts, max ${sec(max(restartRunning))})`,
        met: median(restartRunning) <= 1_000
      }
    ]

    const summary: Table = {
      title: "Summary (seconds)",
      columns: ["measure", "n", "p50", "max"],
      rows: [
        ["after a forget: registered again", registered.length, cell(median(registered)), cell(max(registered))],
        ["after a forget: the task queued at once RUNNING", running.length, cell(median(running)), cell(max(running))],
        [
          `${s.inARow} forgets in a row: registered again`,
          row.length,
          cell(median(row.map((f) => f.registeredMs))),
          cell(max(row.map((f) => f.registeredMs)))
        ],
        [
          "master restarted: task RUNNING from the new master serving",
          restartRunning.length,
          cell(median(restartRunning)),
          cell(max(restartRunning))
        ],
        [
          "master restarted: worker Ready again from the new master serving",
          readyAgain.length,
          cell(median(readyAgain)),
          cell(max(readyAgain))
        ]
      ]
    }
    const forgetTable = (title: string, measured: ReadonlyArray<Forget>): Table => ({
      title,
      columns: ["forget", "registered again (s)", "task queued (s)", "task RUNNING (s)", "forget call (s)"],
      rows: measured.map((f) => [
        f.round,
        cell(f.registeredMs),
        cell(f.queuedMs),
        cell(f.runningMs),
        cell(f.forgetCallMs)
      ])
    })
    const tables: ReadonlyArray<Table> = [
      summary,
      forgetTable(`Each forget, from the forget sent (${one.length}, after the ${s.inARow} in a row)`, one),
      forgetTable(`${s.inARow} forgets in a row from a fresh ring, from each forget sent`, row),
      {
        title: "Each restart (SIGKILL, then a new master with empty memory on the same port)",
        columns: [
          "restart",
          "down: kill to new master serving (s)",
          "worker left Ready, from the kill (s)",
          "task queued, from serving (s)",
          "worker Ready again, from serving (s)",
          "task RUNNING, from serving (s)",
          "task RUNNING, from queued (s)"
        ],
        rows: restarted.map((r) => [
          r.round,
          cell(r.downMs),
          cell(r.leftReadyMs),
          cell(r.queuedMs),
          cell(r.readyAgainMs),
          cell(r.runningMs),
          cell(r.runningFromQueuedMs)
        ])
      }
    ]

    const bar = (series: string, values: ReadonlyArray<number>) =>
      values.length === 0
        ? { series, value: 0, missing: "none" }
        : { series, value: median(values) / 1000, high: max(values) / 1000 }
    const svg = bars({
      title: "Membership: back to work after a forget or a restart, behind nginx",
      subtitle: "p50, whisker to the max; the master in its own process behind nginx (grpc_pass); lower is better",
      unit: "seconds",
      groups: [
        {
          label: `after a forget (${registered.length})`,
          bars: [bar("registered again", registered), bar("task RUNNING", running)]
        },
        {
          label: `${s.inARow} forgets in a row`,
          bars: [
            bar("registered again", row.map((f) => f.registeredMs)),
            bar("task RUNNING", row.map((f) => f.runningMs))
          ]
        },
        {
          label: `master restarted (${restarted.length}), from serving`,
          bars: [bar("worker Ready again", readyAgain), bar("task RUNNING", restartRunning)]
        }
      ]
    })

    const queued = restarted.map((r) => r.queuedMs)
    const queuedRange = cell(Math.min(...queued)) === cell(max(queued))
      ? cell(max(queued))
      : `${cell(Math.min(...queued))} to ${cell(max(queued))}`
    const stayedReady = restarted.filter((r) => r.readyAgainMs === undefined).length
    const notes: Array<string> = [
      "Times from a forget are measured from the moment the bench sent `POST /forget` (the admin call, over a Unix " +
      "socket, is included); `registeredAt` and the task's history are the master's clock, on the same machine.",
      "A restart's task is queued once the new master answers its admin API, after its serving line (here " +
      `${queuedRange} s after it): the restart table shows the task RUNNING both from serving and from queued.`
    ]
    if (stayedReady > 0) {
      notes.push(
        `In ${stayedReady} of ${restarted.length} restarts the worker's connection never left Ready (nginx kept it): ` +
          "no Ready-again time."
      )
    }

    const result: Result = {
      name: "membership",
      title: "Membership: a master that forgets or restarts, behind nginx",
      method: `The master (the package's master command) runs as a process of its own behind real nginx (grpc_pass, ` +
        `upstream keepalive 320, as ingress-nginx), the worker (the library's defaults) in the benchmark's process; ` +
        `forgets on one ring, restarts on another. (1) ${s.forgets} forgets (\`POST /forget\`), each once the ` +
        `previous round's task finished and ${s.spacingMs / 1000} s more, a task queued right after each: the node ` +
        `registered again (its new \`registeredAt\`) and the task RUNNING, from the forget. (2) ${s.inARow} forgets ` +
        `in a row, spaced as in (1), from a fresh ring (run before (1), on the same ring: (1)'s forgets follow ` +
        `them). (3) ${s.restarts} restarts of the master: SIGKILL, then a new process with ` +
        "empty memory on the same port, nginx and the worker's connection to it kept; a task queued as soon as the " +
        "new master answers its admin API, RUNNING measured from the new master's serving line; the worker's " +
        "Ready-again time from its connection's states.",
      tables,
      targets,
      svg,
      data: { settings: s, forgets: one, inARow: row, restarts: restarted },
      notes
    }
    return result
  }).pipe(Effect.provide(NodeContext.layer))
