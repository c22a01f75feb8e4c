/**
 * One contract, every store: the file-system store and the SQLite store pass
 * the same tests, on real files, with real second processes.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { spawn } from "node:child_process"
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ownerDirectory } from "../src/internal/outbox/fileSystem.js"
import * as Outbox from "../src/Outbox.js"
import type * as OutboxStore from "../src/OutboxStore.js"
import type * as TaskSource from "../src/TaskSource.js"
import { child, filesystem, kill, line, stores, type StoreUnderTest } from "./fixtures/outboxStores.js"

const owner: OutboxStore.Owner = { node: "n1", master: "127.0.0.1:9666" }

const report = (taskId: string, status: TaskSource.ReportedStatus): TaskSource.StatusReport => ({
  key: `${taskId}:${status}`,
  taskId,
  status,
  error: status === "ERROR" ? "it failed" : ""
})
const record = (sequence: number, taskId: string, status: TaskSource.ReportedStatus): OutboxStore.StoredRecord => ({
  sequence,
  report: report(taskId, status)
})

const temporary = () =>
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "outbox-store-"))),
    (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
  )

// Opens the store, then the owner's records, for the effect: a store opened and closed is a process's life.
const withRecords = <A, E>(
  store: StoreUnderTest,
  location: string,
  use: (records: OutboxStore.Records) => Effect.Effect<A, E>,
  who: OutboxStore.Owner = owner
) =>
  Effect.scoped(Effect.flatMap(Outbox.OutboxStore, (s) => Effect.flatMap(s.open(who), use))).pipe(
    Effect.provide(store.layer(location))
  )

const sequences = (records: OutboxStore.Records) => records.initial.map((r) => r.sequence)

// Log lines, captured.
const captured = () => {
  const lines: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ message }) => void lines.push(Array.isArray(message) ? message.join(" ") : String(message)))
  )
  return { lines, layer }
}

const locked = (exit: Exit.Exit<unknown, unknown>): Outbox.OutboxError | undefined => {
  if (Exit.isSuccess(exit) || exit.cause._tag !== "Fail") return undefined
  const error = exit.cause.error
  return error instanceof Outbox.OutboxError && error.reason === "Locked" ? error : undefined
}

for (const store of stores) {
  describe(`OutboxStore contract: ${store.name}`, () => {
    it.scopedLive("records come back after a restart in the order they were added, without the removed ones", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        yield* withRecords(store, location, (records) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(records.initial, [])
            yield* records.append([record(1, "t1", "RUNNING"), record(2, "t2", "RUNNING"), record(3, "t1", "FINISHED")])
            yield* records.append([record(4, "t2", "ERROR")])
            yield* records.remove([2])
            yield* records.remove([99]) // a record already gone is no failure
          }))
        const again = yield* withRecords(store, location, Effect.succeed)
        assert.deepStrictEqual(again.initial, [
          record(1, "t1", "RUNNING"),
          record(3, "t1", "FINISHED"),
          record(4, "t2", "ERROR")
        ])
        assert.strictEqual(again.setAside, 0)
      }))

    it.scopedLive("a RUNNING record rewritten with its task's process groups comes back with them, in its place", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        const groups = [{ pgid: 4242, start: "123456" }, { pgid: 4250 }]
        yield* withRecords(store, location, (records) =>
          Effect.gen(function*() {
            yield* records.append([record(1, "t1", "RUNNING"), record(2, "t2", "RUNNING"), record(3, "t3", "RUNNING")])
            yield* records.update!({ ...record(1, "t1", "RUNNING"), processes: groups })
            yield* records.update!({ ...record(2, "t2", "RUNNING"), processes: [{ pgid: 7, start: "1" }] })
            // A rewrite replaces what was recorded before.
            yield* records.update!({ ...record(2, "t2", "RUNNING"), processes: [] })
          }))
        const again = yield* withRecords(store, location, Effect.succeed)
        assert.deepStrictEqual(again.initial, [
          { ...record(1, "t1", "RUNNING"), processes: groups },
          { ...record(2, "t2", "RUNNING"), processes: [] },
          record(3, "t3", "RUNNING")
        ])
        assert.strictEqual(again.setAside, 0)
      }))

    it.scopedLive("records written by 0.2.0 read as before, and are rewritten with process groups", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        yield* store.legacy(location, owner, [record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED")])
        yield* withRecords(store, location, (records) =>
          Effect.gen(function*() {
            assert.deepStrictEqual(records.initial, [record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED")])
            assert.strictEqual(records.setAside, 0)
            yield* records.update!({ ...record(1, "t1", "RUNNING"), processes: [{ pgid: 99, start: "5" }] })
          }))
        assert.deepStrictEqual((yield* withRecords(store, location, Effect.succeed)).initial, [
          { ...record(1, "t1", "RUNNING"), processes: [{ pgid: 99, start: "5" }] },
          record(2, "t2", "FINISHED")
        ])
      }))

    it.scopedLive("an outbox keeps a started task's process groups with its RUNNING record until its final report", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        const first = { pgid: 4242, start: "100" }
        const second = { pgid: 4300, start: "200" }
        yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({ ...owner, deliver: () => Effect.void })
          yield* outbox.add(report("a", "RUNNING"))
          yield* outbox.add(report("b", "RUNNING"))
          yield* outbox.flush
          yield* outbox.recordProcesses("a", [first])
          yield* outbox.recordProcesses("a", [first, second])
          assert.deepStrictEqual(yield* outbox.processes("a"), [first, second])
          yield* outbox.add(report("b", "FINISHED"))
          const late = yield* Effect.flip(outbox.recordProcesses("b", [first]))
          assert.strictEqual(late.reason, "Closed", "no process group is recorded for a task that has ended")
          const never = yield* Effect.flip(outbox.recordProcesses("c", [first]))
          assert.strictEqual(never.reason, "Closed", "nor for one never started")
          yield* outbox.flush
        })).pipe(Effect.provide(store.layer(location)))
        // The worker stopped while "a" ran: after the restart its groups are known, until its final report.
        yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({ ...owner, deliver: () => Effect.void })
          assert.deepStrictEqual(outbox.unfinished, ["a"])
          assert.deepStrictEqual(yield* outbox.processes("a"), [first, second])
          yield* outbox.add(report("a", "ERROR"))
          yield* outbox.flush
          assert.deepStrictEqual(yield* outbox.processes("a"), [])
        })).pipe(Effect.provide(store.layer(location)))
        assert.deepStrictEqual((yield* withRecords(store, location, Effect.succeed)).initial, [])
      }))

    it.scopedLive("each owner's records are its own; an owner open already is Locked", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        const other: OutboxStore.Owner = { node: "n1", master: "10.0.0.2:9666" }
        yield* Effect.scoped(Effect.gen(function*() {
          const s = yield* Outbox.OutboxStore
          const a = yield* s.open(owner)
          const b = yield* s.open(other)
          yield* a.append([record(1, "t1", "FINISHED")])
          yield* b.append([record(1, "t1", "CANCELLED"), record(2, "t2", "FINISHED")])
          const twice = yield* Effect.exit(s.open(owner))
          assert.isDefined(locked(twice), "a second open of one owner is Locked")
        })).pipe(Effect.provide(store.layer(location)))
        assert.deepStrictEqual((yield* withRecords(store, location, Effect.succeed)).initial, [
          record(1, "t1", "FINISHED")
        ])
        assert.deepStrictEqual(sequences(yield* withRecords(store, location, Effect.succeed, other)), [1, 2])
      }))

    it.scopedLive("a damaged record is set aside alone, with a log line; the others are read", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        yield* withRecords(
          store,
          location,
          (records) =>
            records.append([record(1, "t1", "FINISHED"), record(2, "t2", "FINISHED"), record(3, "t3", "FINISHED")])
        )
        yield* store.damage(location, owner, 2)
        const log = captured()
        const again = yield* withRecords(store, location, Effect.succeed).pipe(Effect.provide(log.layer))
        assert.deepStrictEqual(sequences(again), [1, 3])
        assert.strictEqual(again.setAside, 1)
        const damaged = log.lines.filter((l) => l.includes("damaged"))
        assert.strictEqual(damaged.length, 1, log.lines.join("\n"))
        assert.include(damaged[0]!, "set aside")
        // Set aside once: the next start reads the two, and says nothing.
        const third = yield* withRecords(store, location, Effect.succeed)
        assert.deepStrictEqual([sequences(third), third.setAside], [[1, 3], 0])
      }))

    it.scopedLive("an outbox over the store delivers after a restart what it could not before, in order, and ends unfinished tasks once", () =>
      Effect.gen(function*() {
        const location = store.location(yield* temporary())
        const never = () => Effect.never
        yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({ ...owner, deliver: never })
          for (
            const r of [
              report("a", "RUNNING"),
              report("a", "FINISHED"),
              report("b", "RUNNING"),
              report("c", "FINISHED")
            ]
          ) {
            yield* outbox.add(r)
          }
        })).pipe(Effect.provide(store.layer(location)))
        const received: Array<string> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const outbox = yield* Outbox.make({ ...owner, deliver: (r) => Effect.sync(() => void received.push(r.key)) })
          assert.deepStrictEqual(outbox.unfinished, ["b"])
          yield* outbox.add(report("b", "ERROR"))
          yield* outbox.flush
        })).pipe(Effect.provide(store.layer(location)))
        assert.deepStrictEqual(received, ["a:RUNNING", "a:FINISHED", "b:RUNNING", "c:FINISHED", "b:ERROR"])
        assert.deepStrictEqual((yield* withRecords(store, location, Effect.succeed)).initial, [])
      }))

    it.scopedLive(
      "a second process on the store fails at its start naming it; a killed holder does not hold its successor back",
      () =>
        Effect.gen(function*() {
          const location = store.location(yield* temporary())
          // This process holds it: the second fails, naming the store.
          yield* Effect.scoped(Effect.gen(function*() {
            yield* Layer.build(store.layer(location))
            const second = child([store.name, location, "hold"])
            const failed = yield* line(second, (l) => l.startsWith("E "))
            assert.strictEqual(yield* Effect.promise(() => second.ended), 1)
            assert.include(failed, location)
            assert.include(failed, "process")
          }))
          // A holder killed with SIGKILL: the next start takes the store over.
          const holder = child([store.name, location, "hold"])
          yield* line(holder, (l) => l === "open")
          const whileHeld = yield* Effect.exit(Effect.scoped(Layer.build(store.layer(location))))
          assert.include(locked(whileHeld)?.message ?? "not locked", location)
          yield* kill(holder)
          const after = yield* Effect.exit(Effect.scoped(Layer.build(store.layer(location))))
          assert.isTrue(Exit.isSuccess(after), `opened after the holder was killed: ${JSON.stringify(after)}`)
        }),
      60_000
    )
  })
}

describe("OutboxStore: filesystem", () => {
  it.scopedLive("a lock naming this process's pid, a pid that now belongs to another process, or a dead process not yet reaped, is stale", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      yield* Effect.scoped(Layer.build(filesystem.layer(location)))
      const lock = join(location, "outbox.lock")
      // A zombie: its parent (the shell, become `sleep`) never reaps it.
      const parent = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn("sh", ["-c", "sleep 0.05 & echo $!; exec sleep 30"], { stdio: ["ignore", "pipe", "ignore"] })
        ),
        (p) => Effect.sync(() => p.kill("SIGKILL"))
      )
      const zombie = yield* Effect.async<number>((resume) => {
        parent.stdout!.once("data", (d) => resume(Effect.succeed(Number(String(d).trim()))))
      })
      const zombieStart = readFileSync(`/proc/${zombie}/stat`, "utf8").split(") ")[1]!.split(" ")[19]!
      yield* Effect.sleep("300 millis")
      assert.match(readFileSync(`/proc/${zombie}/stat`, "utf8"), /\) Z /, "the child is a zombie")
      for (const holder of [{ pid: process.pid }, { pid: 1, start: "1" }, { pid: zombie, start: zombieStart }, {}]) {
        writeFileSync(lock, JSON.stringify(holder))
        const log = captured()
        const exit = yield* Effect.exit(Effect.scoped(Layer.build(filesystem.layer(location)))).pipe(
          Effect.provide(log.layer)
        )
        assert.isTrue(Exit.isSuccess(exit), `${JSON.stringify(holder)}: ${JSON.stringify(exit)}`)
        assert.isTrue(
          log.lines.some((l) => l.includes("taking over the lock")),
          `${JSON.stringify(holder)}: ${log.lines.join("\n")}`
        )
        assert.isFalse(existsSync(lock), "the lock is removed when the store closes")
      }
    }))

  // The files of the owner's records, by kind.
  const listing = (location: string) => {
    const names = readdirSync(join(location, ownerDirectory(owner)))
    return {
      records: names.filter((n) => n.endsWith(".records")).sort(),
      legacy: names.filter((n) => /^\d{16}\.json$/.test(n)).sort(),
      removedLog: names.includes("removed.log")
    }
  }

  it.scopedLive("the records written together share one file; a file cut short gives back its whole lines, and the cut one is set aside, never read", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      yield* withRecords(
        filesystem,
        location,
        (records) =>
          records.append([record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED"), record(3, "t3", "FINISHED")])
      )
      const [file] = listing(location).records
      assert.deepStrictEqual(listing(location).records, ["0000000000000001.records"])
      const path = join(location, ownerDirectory(owner), file!)
      const text = readFileSync(path, "utf8")
      // A power loss on a file system that kept the rename but not all of the data: the last line is cut.
      truncateSync(path, text.length - 30)
      const log = captured()
      const again = yield* withRecords(filesystem, location, Effect.succeed).pipe(Effect.provide(log.layer))
      assert.deepStrictEqual(again.initial, [record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED")])
      assert.strictEqual(again.setAside, 1)
      assert.strictEqual(log.lines.filter((l) => l.includes("damaged")).length, 1, log.lines.join("\n"))
      // A line of zeros (a block never written) is no record either; a line with a wrong checksum neither.
      writeFileSync(path, `${readFileSync(path, "utf8")}\0\0\0\0\n${text.split("\n")[2]!.replace("t3", "t4")}\n`)
      const third = yield* withRecords(filesystem, location, Effect.succeed)
      assert.deepStrictEqual([sequences(third), third.setAside], [[1, 2], 2])
      const fourth = yield* withRecords(filesystem, location, Effect.succeed)
      assert.deepStrictEqual([sequences(fourth), fourth.setAside], [[1, 2], 0])
      assert.lengthOf(readdirSync(join(location, ownerDirectory(owner), "damaged")), 2, "both damaged files kept")
    }))

  it.scopedLive("a record removed while another keeps its file stays removed after a restart; the file goes with its last record", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      yield* withRecords(filesystem, location, (records) =>
        Effect.gen(function*() {
          yield* records.append([record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED"), record(3, "t3", "FINISHED")])
          yield* records.remove([2, 3])
          assert.isTrue(listing(location).removedLog, "the removal is logged: the file stays for record 1")
        }))
      const again = yield* withRecords(filesystem, location, (records) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(sequences(records), [1])
          yield* records.append([record(4, "t1", "FINISHED")])
          yield* records.remove([1, 4])
          return records
        }))
      assert.deepStrictEqual(sequences(again), [1])
      assert.deepStrictEqual(listing(location).records, [], "no file holds a wanted record")
      assert.deepStrictEqual(sequences(yield* withRecords(filesystem, location, Effect.succeed)), [])
      assert.isFalse(listing(location).removedLog, "the removal log is dropped once it removes nothing")
    }))

  it.scopedLive("a sequence used again after a restart is not removed by an older removal of it", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      yield* withRecords(filesystem, location, (records) =>
        Effect.gen(function*() {
          yield* records.append([record(1, "t1", "RUNNING"), record(2, "t2", "FINISHED")])
          yield* records.remove([2])
        }))
      // The outbox numbers on from the records it finds: 2 again.
      yield* withRecords(filesystem, location, (records) => records.append([record(2, "t3", "FINISHED")]))
      const again = yield* withRecords(filesystem, location, Effect.succeed)
      assert.deepStrictEqual(again.initial, [record(1, "t1", "RUNNING"), record(2, "t3", "FINISHED")])
      // A rewrite of record 1 and its removal: neither version comes back.
      yield* withRecords(filesystem, location, (records) =>
        Effect.gen(function*() {
          yield* records.update!({ ...record(1, "t1", "RUNNING"), processes: [{ pgid: 42 }] })
          yield* records.remove([1])
        }))
      assert.deepStrictEqual((yield* withRecords(filesystem, location, Effect.succeed)).initial, [
        record(2, "t3", "FINISHED")
      ])
    }))

  it.scopedLive("records of 0.2 and 0.3, one file each, are read beside the new files, rewritten and removed", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      const dir = join(location, ownerDirectory(owner))
      mkdirSync(dir, { recursive: true })
      writeFileSync(join(dir, "owner.json"), `${JSON.stringify({ node: owner.node, master: owner.master })}\n`)
      const old = (sequence: number, fields: object) =>
        writeFileSync(
          join(dir, `${String(sequence).padStart(16, "0")}.json`),
          `${JSON.stringify({ sequence, ...fields })}\n`
        )
      // 0.3 wrote the process groups of a RUNNING record; 0.2 did not.
      old(1, { ...report("t1", "RUNNING"), processes: [{ pgid: 7, start: "9" }] })
      old(2, report("t2", "FINISHED"))
      old(3, report("t3", "RUNNING"))
      yield* withRecords(filesystem, location, (records) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(records.initial, [
            { ...record(1, "t1", "RUNNING"), processes: [{ pgid: 7, start: "9" }] },
            record(2, "t2", "FINISHED"),
            record(3, "t3", "RUNNING")
          ])
          yield* records.append([record(4, "t3", "FINISHED")])
          yield* records.remove([2])
          yield* records.update!({ ...record(3, "t3", "RUNNING"), processes: [{ pgid: 8 }] })
        }))
      assert.deepStrictEqual(
        listing(location).legacy,
        ["0000000000000001.json"],
        "a record removed or rewritten leaves its old file"
      )
      assert.deepStrictEqual((yield* withRecords(filesystem, location, Effect.succeed)).initial, [
        { ...record(1, "t1", "RUNNING"), processes: [{ pgid: 7, start: "9" }] },
        { ...record(3, "t3", "RUNNING"), processes: [{ pgid: 8 }] },
        record(4, "t3", "FINISHED")
      ])
    }))

  it.scopedLive(
    "an outbox killed with SIGKILL while it writes and removes loses no report whose add returned, and calls no task with a stored final report unfinished",
    () =>
      Effect.gen(function*() {
        const location = filesystem.location(yield* temporary())
        const lives: Array<ReadonlyArray<string>> = []
        for (let round = 1; round <= 3; round++) {
          const writer = child(["filesystem", location, "write", String(round), round === 2 ? "0" : "1"])
          yield* line(writer, (l) => l.startsWith("A "))
          yield* Effect.sleep(150 + 100 * round)
          yield* kill(writer)
          lives.push([...writer.lines])
        }
        const acked = new Set(lives.flat().filter((l) => l.startsWith("A ")).map((l) => l.slice(2)))
        const delivered = new Set(lives.flat().filter((l) => l.startsWith("D ")).map((l) => l.slice(2)))
        const { initial, setAside } = yield* withRecords(filesystem, location, Effect.succeed, {
          node: "ring",
          master: "127.0.0.1:1"
        })
        const stored = new Set(initial.map((r) => r.report.key))
        assert.deepStrictEqual([...acked].filter((key) => !delivered.has(key) && !stored.has(key)), [], "none lost")
        assert.strictEqual(setAside, 0)
        const finals = new Set(initial.filter((r) => r.report.status !== "RUNNING").map((r) => r.report.taskId))
        const unfinished = initial.filter((r) => r.report.status === "RUNNING" && !finals.has(r.report.taskId))
        const ended = unfinished.filter((r) =>
          acked.has(`${r.report.taskId}:FINISHED`) || acked.has(`${r.report.taskId}:ERROR`)
        )
        assert.deepStrictEqual(
          ended.map((r) => r.report.key),
          [],
          "a task whose final report was stored is not unfinished"
        )
      }),
    60_000
  )

  it.scopedLive("two stores on one directory in one process share the lock; leftovers of unfinished writes are removed", () =>
    Effect.gen(function*() {
      const location = filesystem.location(yield* temporary())
      const dir = join(location, ownerDirectory(owner))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Layer.build(filesystem.layer(location))
        yield* Layer.build(filesystem.layer(location))
        yield* withRecords(filesystem, location, (records) => records.append([record(1, "t1", "FINISHED")]))
      }))
      writeFileSync(join(dir, ".0000000000000002.json.tmp"), "{\"sequence\":2")
      const again = yield* withRecords(filesystem, location, Effect.succeed)
      assert.deepStrictEqual(sequences(again), [1])
      assert.deepStrictEqual(readdirSync(dir).sort(), ["0000000000000001.records", "damaged", "owner.json"])
    }))
})
