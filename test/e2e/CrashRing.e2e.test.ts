/**
 * The crash ring: real processes killed with SIGKILL at random moments, and
 * restarted.
 *
 * - The example worker, with many fast tasks queued, while the master is down
 *   or fails ReportStatus (always, or half the time), killed and restarted
 *   30 times; then with the master back: every task has exactly one terminal
 *   status, no status applied twice, none left RUNNING, nothing set aside,
 *   no task started twice, and the outbox empty.
 * - The outbox alone, for each store: a process adding from four fibers
 *   (delivering, or not), killed 30 times; no report whose `add` returned is
 *   lost, each stream is delivered in the order of add, a task whose final
 *   report was stored is never called unfinished, nothing set aside.
 *
 * `CRASH_RING_ROUNDS` (default 30) and `CRASH_RING_SEED` (default: the time)
 * change the run; the seed is printed.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Command from "@effect/platform/Command"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import * as TaskHandler from "../../src/TaskHandler.js"
import { type Child, child, kill, line, stores, type StoreUnderTest } from "../fixtures/outboxStores.js"
import {
  exampleMaster,
  type LogLine,
  poll,
  type Running,
  spawn,
  type TaskView,
  temporaryDirectory,
  tsx
} from "./processes.js"

const rounds = Number(process.env["CRASH_RING_ROUNDS"] ?? 30)
const seed = Number(process.env["CRASH_RING_SEED"] ?? Date.now() % 1_000_000)

// mulberry32: a seeded random, so a failing run can be replayed with its seed.
const seeded = (start: number) => {
  let state = start >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const terminal = ["FINISHED", "ERROR", "CANCELLED"]

const temporary = temporaryDirectory("crash-ring-")

// Every file under `directory` whose name says it is an outbox record, damaged ones included.
const records = (directory: string) =>
  existsSync(directory)
    ? readdirSync(directory, { recursive: true, encoding: "utf8" }).filter((name) =>
      /\d{16}\.(json|records)/.test(name)
    )
    : []

const killNow = (worker: Running) =>
  Effect.gen(function*() {
    yield* worker.kill("SIGKILL")
    yield* poll(worker.running, (running) => !running, "10 seconds", "the killed worker gone")
  })

// The pid the outbox's lock file names, if there is one that parses.
const lockHolder = (outboxDir: string): number | undefined => {
  try {
    return (JSON.parse(readFileSync(join(outboxDir, "outbox.lock"), "utf8")) as { readonly pid?: number }).pid
  } catch {
    return undefined
  }
}

describe("crash ring", () => {
  it.scopedLive(
    `the example worker killed ${rounds} times while the master is down or fails ReportStatus: every task ends exactly once`,
    () =>
      Effect.gen(function*() {
        const random = seeded(seed)
        console.log(`crash ring (worker): seed ${seed}, ${rounds} rounds`)
        const directory = yield* temporary
        const outboxDir = join(directory, "outbox")
        const { address, api } = yield* exampleMaster(directory, {
          // A hand-out lost with a killed worker goes out again soon; the master never gives a task up itself.
          MASTER_REDELIVER_AFTER: "2 seconds",
          MASTER_MAX_HAND_OUTS: "100000"
        })

        const count = 150
        const ids: Array<string> = []
        for (let n = 0; n < count; n++) {
          ids.push((yield* api<{ id: string }>("POST", "/tasks", { payload: { command: "sleep", args: ["0.05"] } })).id)
        }
        const workers: Array<Running> = []
        const startWorker = Effect.gen(function*() {
          const worker = yield* spawn(Command.make(...tsx("examples/worker.ts")), {
            MASTER_ADDRESS: address,
            NODE_KEY: "crash-ring",
            OUTBOX_DIR: outboxDir,
            MAX_RUNNERS: "4",
            FETCH_INTERVAL: "200 millis",
            LOG_FORMAT: "json",
            // A task's "started" line is at Debug: the check counts them.
            LOG_LEVEL: "Debug"
          })
          workers.push(worker)
          return worker
        })

        let down = false
        const modes = { down: 0, refusing: 0, flaky: 0 }
        for (let round = 1; round <= rounds; round++) {
          const mode = round % 3 === 0 ? "down" : round % 3 === 1 ? "refusing" : "flaky"
          modes[mode] += 1
          if (mode === "down" && !down) yield* api("POST", "/stop")
          if (mode !== "down" && down) yield* api("POST", "/restart")
          down = mode === "down"
          yield* api("POST", "/failure-rate", {
            rate: mode === "refusing" ? 1 : 0.5,
            only: ["ReportStatus", "ReportStatuses"]
          })
          const worker = yield* startWorker
          // Every third round the kill waits until the worker holds the outbox's lock: its successor has a stale
          // lock to take over, however slowly a loaded machine starts workers.
          if (round % 3 === 1) {
            yield* poll(
              Effect.sync(() => lockHolder(outboxDir)),
              (pid) => pid === worker.pid,
              "60 seconds",
              `worker ${round} holds the outbox's lock`
            )
          }
          // The worker is up in about a second: a few kills land while it starts, most while it works.
          yield* Effect.sleep(Math.round(700 + random() * 2300))
          yield* killNow(worker)
        }

        // The master back, healthy: one more worker delivers what is left and ends what was cut off.
        if (down) yield* api("POST", "/restart")
        yield* api("POST", "/failure-rate", { rate: 0 })
        const last = yield* startWorker
        const tasks = yield* poll(
          api<ReadonlyArray<TaskView>>("GET", "/tasks"),
          (tasks) => tasks.every((t) => terminal.includes(t.status)),
          "90 seconds",
          "every task ended"
        )
        // Ended at the master, but the last reports may still be on their way out of the outbox.
        yield* poll(
          Effect.sync(() => records(join(outboxDir)).filter((name) => !name.includes("damaged"))),
          (left) => left.length === 0,
          "30 seconds",
          "the outbox empty"
        )
        yield* last.kill("SIGTERM")
        yield* poll(last.running, (running) => !running, "20 seconds", "the last worker stopped")

        const lines: ReadonlyArray<LogLine> = workers.flatMap((w) => w.lines)
        const outcome = { finished: 0, errorAfterRestart: 0, processesEnded: 0, otherError: 0, cancelled: 0 }
        for (const task of tasks) {
          const ends = task.history.filter((change) => terminal.includes(change.status))
          assert.strictEqual(
            ends.length,
            1,
            `${task.id}: exactly one terminal status (${JSON.stringify(task.history)})`
          )
          const statuses = task.history.map((change) => change.status)
          assert.strictEqual(
            new Set(statuses).size,
            statuses.length,
            `${task.id}: no status applied twice (${statuses.join(", ")})`
          )
          const starts = lines.filter((l) => l.message === `task ${task.id} started`).length
          assert.isAtMost(starts, 1, `${task.id}: started at most once across the restarts`)
          const end = ends[0]!
          if (end.status === "FINISHED") outcome.finished += 1
          else if (end.status === "CANCELLED") outcome.cancelled += 1
          else if (end.error?.startsWith(TaskHandler.restartMessage)) {
            // The message goes on to say what was done with the command the task had started, if it had.
            outcome.errorAfterRestart += 1
            if (end.error.endsWith("were ended")) outcome.processesEnded += 1
          } else outcome.otherError += 1
        }
        assert.strictEqual(tasks.length, count)
        assert.deepStrictEqual(
          tasks.filter((t) => !terminal.includes(t.status)).map((t) => t.id),
          [],
          "none left RUNNING or ASSIGNED"
        )
        assert.deepStrictEqual(records(outboxDir), [], "nothing left in the outbox, nothing set aside")
        assert.deepStrictEqual(
          lines.filter((l) => /damaged|set aside/.test(l.message)).map((l) => l.message),
          [],
          "no record set aside"
        )
        assert.strictEqual(
          outcome.otherError + outcome.cancelled,
          0,
          `every task finished or was cut off by a kill: ${JSON.stringify(outcome)}`
        )
        assert.isTrue(lines.some((l) => l.message.includes("connected to")), "the workers' logs were read")
        const kills = rounds
        const restartedWhileRunning = lines.filter((l) =>
          l.message.includes("was running when the worker stopped")
        ).length
        const locksTakenOver = lines.filter((l) => l.message.includes("taking over the lock")).length
        assert.isAtLeast(locksTakenOver, 1, "a killed worker's lock was taken over by its successor")
        console.log(
          `crash ring (worker), seed ${seed}: ${kills} kills (${JSON.stringify(modes)}), ${count} tasks: ${
            JSON.stringify(outcome)
          }, ` +
            `${restartedWhileRunning} cut off by a kill and reported ERROR after the restart, ` +
            `${
              lines.filter((l) => l.message.includes("reports to deliver from before")).length
            } restarts with reports owed, ` +
            `${locksTakenOver} stale locks taken over`
        )
      }).pipe(Effect.provide(NodeContext.layer)),
    // Thirty kills and restarts of a worker under tsx: 165 s once on a loaded machine.
    300_000
  )

  it.scopedLive(
    `the outbox alone, killed ${rounds} times, for each store: no stored report lost, the order of add kept`,
    () =>
      Effect.gen(function*() {
        console.log(`crash ring (outbox alone): seed ${seed}, ${rounds} rounds`)
        const directory = yield* temporary
        const results = yield* Effect.forEach(stores, (store, index) =>
          ring(store, store.location(directory), seeded(seed + index + 1)), {
          concurrency: "unbounded"
        })
        for (const result of results) {
          console.log(`crash ring (outbox alone), ${result.store}: ${JSON.stringify(result)}`)
        }
      }),
    // Sixty child processes started one after another: a loaded machine starts each in seconds, not one.
    300_000
  )
})

interface Incarnation {
  readonly lines: ReadonlyArray<string>
}

// One store through the kill loop; the checks are made here, the counts returned.
const ring = (store: StoreUnderTest, location: string, random: () => number) =>
  Effect.gen(function*() {
    const lives: Array<Incarnation> = []
    let killedEarly = 0
    for (let round = 1; round <= rounds; round++) {
      const deliver = random() < 0.5 ? "1" : "0"
      const writer: Child = child([store.name, location, "write", String(round), deliver])
      if (random() < 0.2) {
        // Killed while it opens: loading, cleaning up, ending the unfinished.
        killedEarly += 1
        yield* Effect.sleep(Math.round(random() * 900))
      } else {
        yield* line(writer, (l) => l.startsWith("P "))
        yield* Effect.sleep(Math.round(random() * 400))
      }
      yield* kill(writer)
      lives.push({ lines: [...writer.lines] })
    }
    const drain = child([store.name, location, "drain"])
    yield* line(drain, (l) => l === "done", 60_000)
    yield* Effect.promise(() => drain.ended)
    lives.push({ lines: [...drain.lines] })
    const after = child([store.name, location, "drain"])
    yield* line(after, (l) => l === "done")
    yield* Effect.promise(() => after.ended)

    const acked = new Set<string>()
    const delivered = new Map<string, number>()
    const firstDeliveries: Array<string> = []
    let setAside = 0
    for (const [index, life] of lives.entries()) {
      for (const l of life.lines) {
        const [kind, value = ""] = l.split(" ")
        if (kind === "A") acked.add(value)
        if (kind === "S") setAside += Number(value)
        if (kind === "D") {
          if (!delivered.has(value)) firstDeliveries.push(value)
          delivered.set(value, (delivered.get(value) ?? 0) + 1)
        }
        // A task whose final report was stored in an earlier life is never called unfinished.
        if (kind === "U") {
          const earlier = lives.slice(0, index).some((e) =>
            e.lines.includes(`A ${value}:FINISHED`) || e.lines.includes(`A ${value}:ERROR`)
          )
          assert.isFalse(earlier, `${store.name}: ${value} called unfinished after its final report was stored`)
        }
      }
    }
    const lost = [...acked].filter((key) => !delivered.has(key))
    assert.deepStrictEqual(lost, [], `${store.name}: every report whose add returned was delivered`)
    assert.strictEqual(setAside, 0, `${store.name}: nothing set aside`)
    assert.deepStrictEqual(
      after.lines.filter((l) => !["S 0", "P 0", "done"].includes(l)),
      [],
      `${store.name}: nothing left after the drain`
    )
    // Per writer stream, first deliveries come in the order of add: RUNNING n, FINISHED n, RUNNING n + 1, ...
    const streams = new Map<string, Array<[number, number]>>()
    for (const key of firstDeliveries) {
      const match = /^r(\d+)-w(\d+)-(\d+):(RUNNING|FINISHED)$/.exec(key)
      if (match === null) continue
      const stream = `${match[1]}-${match[2]}`
      const position: [number, number] = [Number(match[3]), match[4] === "RUNNING" ? 0 : 1]
      streams.set(stream, [...(streams.get(stream) ?? []), position])
    }
    for (const [stream, positions] of streams) {
      for (let i = 1; i < positions.length; i++) {
        const [n0, s0] = positions[i - 1]!
        const [n1, s1] = positions[i]!
        assert.isTrue(
          n1 > n0 || (n1 === n0 && s1 > s0),
          `${store.name}: stream ${stream} delivered out of order at ${n1}`
        )
      }
    }
    const redelivered = [...delivered.values()].filter((n) => n > 1).length
    return {
      store: store.name,
      kills: rounds,
      killedWhileOpening: killedEarly,
      reportsStored: acked.size,
      delivered: delivered.size,
      deliveredAgainAfterAKill: redelivered,
      unfinishedEnded: lives.flatMap((l) => l.lines).filter((l) => l.startsWith("U ")).length,
      lost: lost.length,
      setAside
    }
  })
