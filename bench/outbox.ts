/**
 * The outbox at depth: adds and deliveries per second with 0, 1,000 and
 * 10,000 reports already waiting, for each store (the file system, SQLite),
 * on the machine's real disk (`os.tmpdir()`), every add durable before it
 * returns. Beside them: the outbox in memory (what the disk costs), and the
 * 0.1 design (every pending report in one JSON array, the file rewritten on
 * each add) for the adds.
 *
 * Adds are measured one at a time (a task handler's runner waits for its
 * report) and 16 at once (runners reporting together share one write).
 * Deliveries go to a master that answers at once: the delivery loop's own
 * cost, one report at a time, each removed from the store.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeOutbox from "../src/node/NodeOutbox.js"
import * as Outbox from "../src/Outbox.js"
import type * as OutboxStore from "../src/OutboxStore.js"
import { SqliteOutbox } from "../src/sqlite/index.js"
import type * as TaskSource from "../src/TaskSource.js"
import type { Bench, Result } from "./Bench.js"
import { bars } from "./plot.js"

const owner: OutboxStore.Owner = { node: "bench", master: "127.0.0.1:9666" }

const report = (id: string): TaskSource.StatusReport => ({
  key: `${id}:FINISHED`,
  taskId: id,
  status: "FINISHED",
  error: ""
})

interface Store {
  readonly name: string
  readonly layer: (directory: string) => Layer.Layer<Outbox.OutboxStore, Outbox.OutboxError>
}

const stores: ReadonlyArray<Store> = [
  { name: "filesystem", layer: (directory) => NodeOutbox.layerFileSystem(join(directory, "outbox")) },
  { name: "sqlite", layer: (directory) => SqliteOutbox.layer({ filename: join(directory, "outbox.sqlite") }) },
  { name: "memory", layer: () => Outbox.layerMemory }
]

interface Measure {
  readonly store: string
  readonly depth: number
  /** Adds per second, one at a time. */
  readonly adds: number
  /** Adds per second, 16 at once. */
  readonly concurrentAdds: number
  readonly deliveries: number
  /** Seconds to open the outbox over `depth` records. */
  readonly open: number
}

const perSecond = (count: number, millis: number) => (count * 1000) / millis

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(effect, () => performance.now() - start)
  })

const timedValue = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(effect, (value) => [value, performance.now() - start] as const)
  })

// One store at one depth: fill it, open an outbox over it, add, then deliver.
const measure = (store: Store, depth: number, count: number) =>
  Effect.gen(function*() {
    const directory = mkdtempSync(join(tmpdir(), `bench-outbox-${store.name}-`))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
    const context = yield* Layer.build(store.layer(directory))
    const provide = Effect.provide(context)

    // The depth, written through the store as the outbox would, 256 records per write.
    yield* Effect.scoped(Effect.gen(function*() {
      const records = yield* Effect.flatMap(Outbox.OutboxStore, (s) => s.open(owner))
      for (let from = 1; from <= depth; from += 256) {
        const batch = Array.from({ length: Math.min(256, depth - from + 1) }, (_, i) => ({
          sequence: from + i,
          report: report(`deep-${from + i}`)
        }))
        yield* records.append(batch)
      }
    })).pipe(provide)

    return yield* Effect.scoped(Effect.gen(function*() {
      // Deliveries wait until `go`, then count; after `count` of them the master stops answering.
      const go = yield* Deferred.make<void>()
      const done = yield* Deferred.make<void>()
      let delivered = 0
      const deliver = () =>
        Effect.zipRight(
          Deferred.await(go),
          Effect.suspend(() => {
            delivered += 1
            return delivered === count
              ? Deferred.succeed(done, undefined)
              : delivered > count
              ? Effect.never
              : Effect.void
          })
        )
      const [outbox, openMs] = yield* timedValue(Outbox.make({ ...owner, deliver }))
      const sequential = yield* timed(
        Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => outbox.add(report(`one-${i}`)), {
          discard: true
        })
      )
      const concurrent = yield* timed(
        Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => outbox.add(report(`many-${i}`)), {
          concurrency: 16,
          discard: true
        })
      )
      const delivering = yield* timed(Effect.zipRight(Deferred.succeed(go, undefined), Deferred.await(done)))
      return {
        store: store.name,
        depth,
        adds: perSecond(count, sequential),
        concurrentAdds: perSecond(count, concurrent),
        deliveries: perSecond(count, delivering),
        open: openMs / 1000
      } satisfies Measure
    })).pipe(provide)
  }).pipe(Effect.scoped)

// The 0.1 outbox: every pending report in one JSON array, the whole file rewritten on each add.
const rewritten = (depth: number, count: number) =>
  Effect.gen(function*() {
    const kv = yield* KeyValueStore.KeyValueStore
    let reports: ReadonlyArray<TaskSource.StatusReport> = Array.from({ length: depth }, (_, i) => report(`deep-${i}`))
    yield* kv.set("outbox", JSON.stringify(reports))
    const ms = yield* timed(Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) =>
      Effect.suspend(() => {
        reports = [...reports, report(`one-${i}`)]
        return kv.set("outbox", JSON.stringify(reports))
      }), { discard: true }))
    return perSecond(count, ms)
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.unwrapScoped(Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "bench-outbox-kv-"))),
        (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
      ),
      KeyValueStore.layerFileSystem
    ))),
    Effect.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer))
  )

export const outbox: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const depths = quick ? [0, 1_000] : [0, 1_000, 10_000]
    const count = quick ? 100 : 1_000
    const rounds = quick ? 1 : 3
    const runs: Array<Measure> = []
    for (const store of stores) yield* measure(store, 0, 50) // warm-up, not kept
    for (let round = 0; round < rounds; round++) {
      for (const store of stores) {
        for (const depth of depths) runs.push(yield* measure(store, depth, count))
      }
    }
    // Each figure is the median of its rounds, taken on its own.
    const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
    const measures: Array<Measure> = stores.flatMap((store) =>
      depths.map((depth) => {
        const mine = runs.filter((m) => m.store === store.name && m.depth === depth)
        return {
          store: store.name,
          depth,
          adds: median(mine.map((m) => m.adds)),
          concurrentAdds: median(mine.map((m) => m.concurrentAdds)),
          deliveries: median(mine.map((m) => m.deliveries)),
          open: median(mine.map((m) => m.open))
        }
      })
    )
    const old: Array<{ depth: number; adds: number }> = []
    for (const depth of depths) old.push({ depth, adds: yield* rewritten(depth, quick ? 20 : 100) })

    const rate = (v: number) => Math.round(v).toLocaleString("en-US")
    const deepest = depths.at(-1)!
    const targets = stores.filter((s) => s.name !== "memory").flatMap((store) => {
      const at = (depth: number) => measures.find((m) => m.store === store.name && m.depth === depth)!
      return (["adds", "deliveries"] as const).map((what) => {
        const ratio = at(0)[what] / at(deepest)[what]
        return {
          name: `${store.name}: ${what}/s at depth ${deepest.toLocaleString("en-US")} against depth 0`,
          target: "within 2x",
          measured: `${rate(at(deepest)[what])}/s, against ${rate(at(0)[what])}/s at depth 0 (x${
            (1 / ratio).toFixed(2)
          })`,
          met: ratio <= 2
        }
      })
    })

    const result: Result = {
      name: "outbox",
      title: "Outbox: adds and deliveries per second at depth",
      method: `For each store, at depths ${
        depths.map((d) => d.toLocaleString("en-US")).join(", ")
      } (records already waiting, ` +
        `written beforehand through the store): ${count} adds one at a time, ${count} adds 16 at once, then ${count} deliveries ` +
        `(each figure the median of ${rounds} interleaved round(s), after a warm-up) ` +
        "to a master that answers at once. Every add is durable before it returns (fsync), on the machine's disk (os.tmpdir()); " +
        "the memory store shows the outbox's own cost. The 0.1 outbox (one JSON array, the file rewritten on each add, no fsync) " +
        "is measured for the adds, one at a time.",
      notes: [
        "The 0.1 outbox is faster than the file-system store at depth 0 because it never syncs: its adds were not durable. " +
        "The file-system store pays two fsyncs per add (the record, then the directory); adds made together share the " +
        "directory's, which is why 16 at once go faster."
      ],
      tables: [
        {
          title: "Per second",
          columns: ["store", "depth", "adds, one at a time", "adds, 16 at once", "deliveries", "open (s)"],
          rows: measures.map((
            m
          ) => [
            m.store,
            m.depth.toLocaleString("en-US"),
            rate(m.adds),
            rate(m.concurrentAdds),
            rate(m.deliveries),
            m.open.toFixed(2)
          ])
        },
        {
          title: "The 0.1 outbox (one rewritten file), adds one at a time",
          columns: ["depth", "adds/s"],
          rows: old.map((o) => [o.depth.toLocaleString("en-US"), rate(o.adds)])
        }
      ],
      targets,
      svg: bars({
        title: "Outbox: adds per second (one at a time) at depth",
        subtitle: "durable adds on the machine's disk; higher is better",
        unit: "adds/s",
        groups: depths.map((depth) => ({
          label: `depth ${depth.toLocaleString("en-US")}`,
          bars: [
            ...stores.filter((s) =>
              s.name !== "memory"
            ).map((s) => ({
              series: s.name,
              value: measures.find((m) => m.store === s.name && m.depth === depth)!.adds
            })),
            { series: "0.1 (one rewritten file)", value: old.find((o) => o.depth === depth)!.adds }
          ]
        }))
      }),
      data: { depths, count, rounds, measures, runs, old }
    }
    return result
  }).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
