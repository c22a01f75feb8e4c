/**
 * CLS-001 for real: the example master and the example worker as separate
 * processes in two network namespaces joined by a veth pair; the worker's end
 * of the link is taken down for 10 s while a task is created, then restored.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Partition from "../../src/testing/Partition.js"
import { admin, poll, spawn, type TaskView, tsx } from "./processes.js"

// Checked up front, so the suite can be skipped with a reason (and, under CI, fail instead).
const unavailable = (() => {
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "network namespaces need root"
  const ip = spawnSync("ip", ["netns", "list"], { encoding: "utf8" })
  return ip.status === 0 ? undefined : `iproute2 is missing or refused: ${ip.error?.message ?? ip.stderr}`
})()
const underCi = process.env["CI"] === "true"
if (unavailable !== undefined && !underCi) console.warn(`skipping the network-namespace tests: ${unavailable}`)

const runs = Number(process.env["CLS001_RUNS"] ?? 10)
const outage = 10_000
const createdAfter = 3_000

describe.skipIf(unavailable !== undefined && !underCi)("CLS-001 across a real network partition", () => {
  it.scopedLive(
    `${runs} runs: a task created during a 10 s cut runs within 5 s of the restore and finishes`,
    () =>
      Effect.gen(function*() {
        if (unavailable !== undefined) {
          return yield* Effect.dieMessage(`under CI the partition tests must run: ${unavailable}`)
        }
        const directory = mkdtempSync(join(tmpdir(), "cls001-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
        const partition = yield* Partition.make
        const socket = join(directory, "admin.sock")

        const masterProcess = yield* spawn(partition.command("master", ...tsx("examples/master.ts")), {
          LOG_LEVEL: process.env["E2E_LOG"] ? "Debug" : "Info",
          MASTER_HOST: partition.masterHost,
          MASTER_PORT: "9666",
          ADMIN_SOCKET: socket,
          LOG_FORMAT: "json"
        })
        const api = <A>(method: "GET" | "POST", path: string, body?: unknown) => admin<A>(socket, method, path, body)
        yield* poll(api("GET", "/nodes"), () => true, "30 seconds", "the master's admin API")

        const worker = yield* spawn(partition.command("worker", ...tsx("examples/worker.ts")), {
          MASTER_ADDRESS: `${partition.masterHost}:9666`,
          NODE_KEY: "cls-001",
          OUTBOX_DIR: join(directory, "outbox"),
          LOG_FORMAT: "json"
        })
        const online = (nodes: ReadonlyArray<{ key: string; online: boolean }>) =>
          nodes.some((node) => node.key === "cls-001" && node.online)
        yield* poll(
          api<ReadonlyArray<{ key: string; online: boolean }>>("GET", "/nodes"),
          online,
          "30 seconds",
          "the worker online"
        )

        const results: Array<{ run: number; restoreToRunning: number; restoreToFinished: number }> = []
        for (let run = 1; run <= runs; run++) {
          yield* partition.cut
          const cutAt = Date.now()
          yield* Effect.sleep(createdAfter)
          const { id } = yield* api<{ id: string }>("POST", "/tasks", {
            payload: { command: "echo", args: ["CLS-001", `run ${run}`] }
          })
          yield* Effect.sleep(cutAt + outage - Date.now())
          yield* partition.restore
          const restoredAt = Date.now()
          const task = (view: ReadonlyArray<TaskView>) => view.find((t) => t.id === id)
          const finished = yield* poll(
            api<ReadonlyArray<TaskView>>("GET", "/tasks"),
            (tasks) => task(tasks)?.status === "FINISHED",
            "20 seconds",
            `run ${run}: task ${id} finished`
          ).pipe(Effect.map((tasks) => task(tasks)!))
          const at = (status: string) => finished.history.find((change) => change.status === status)?.at ?? Number.NaN
          results.push({
            run,
            restoreToRunning: at("RUNNING") - restoredAt,
            restoreToFinished: at("FINISHED") - restoredAt
          })
          if (process.env["E2E_LOG"]) console.log(JSON.stringify({ run, restoredAt, cutAt, finished }))
        }
        if (process.env["E2E_LOG"]) {
          const { writeFileSync } = yield* Effect.promise(() => import("node:fs"))
          const lines = [
            ...worker.lines.map((line) => ({ ...line, who: "worker" })),
            ...masterProcess.lines.map((line) => ({ ...line, who: "master" }))
          ]
          lines.sort((a, b) => a.at - b.at)
          writeFileSync(
            process.env["E2E_LOG"],
            lines.map((line) => `${new Date(line.at).toISOString()} ${line.who} ${line.message}`).join("\n")
          )
        }
        console.log(`CLS-001 over a network partition, ${runs} runs (ms from restore):`)
        console.table(results)

        for (const result of results) {
          assert.isAtMost(result.restoreToRunning, 5_000, `run ${result.run}: running within 5 s of the restore`)
        }
        const lookupTimeouts = worker.lines.filter((line) => /ClientUnavailable|client unavailable/.test(line.message))
        assert.deepStrictEqual(lookupTimeouts.map((line) => line.message), [], "no lookup timeout in the worker's log")
        assert.isTrue(worker.lines.some((line) => line.message.includes("connected to")), "the worker's log was read")
      }).pipe(Effect.provide(NodeContext.layer)),
    240_000
  )
})
