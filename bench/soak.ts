/**
 * Soak: one connection through 1,000 reconnect cycles (the proxy resets every
 * connection, then lets the next attempt through), with heap after GC, live
 * fibers, and open handles and sockets before and after. Run with
 * `node --expose-gc` (as `npm run bench` does) so the heap is measured after a
 * real collection.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as FaultProxy from "../src/testing/FaultProxy.js"
import { addEcho, EchoClient } from "../test/fixtures/echo.js"
import { serve } from "../test/fixtures/server.js"
import type { Bench } from "./Bench.js"
import { lines } from "./plot.js"

class Echo extends Connection.Tag("bench/Echo", { echo: EchoClient })<Echo>() {}

const collect = () => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc) {
    gc()
    gc()
  }
  return process.memoryUsage().heapUsed / 1024 / 1024
}

// Open handles by kind; TTY and the handles of the process itself are left out.
const handles = () => {
  const counts: Record<string, number> = {}
  for (const kind of process.getActiveResourcesInfo()) {
    if (kind === "TTYWrap") continue
    counts[kind] = (counts[kind] ?? 0) + 1
  }
  return counts
}

const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0)

export const soak: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const cycles = quick ? 50 : 1_000
    const { port } = yield* serve(addEcho)
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port } })
    const fibers = yield* Supervisor.track
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      // A short schedule: the soak is about what is left behind, not about waiting.
      Echo.layer({ address: proxy.address, reconnectSchedule: Schedule.spaced("5 millis") }).pipe(
        Layer.provide(GrpcChannel.layer)
      ),
      scope
    ).pipe(Effect.supervised(fibers))
    const conn = yield* Effect.provide(Echo, context)
    const ready = (generation: number) =>
      conn.changes.pipe(
        Stream.filter((state) => state._tag === "Ready" && state.generation >= generation),
        Stream.runHead,
        Effect.timeoutFail({
          duration: "10 seconds",
          onTimeout: () => new Error(`generation ${generation} not Ready in 10 s`)
        })
      )
    // Every step is bounded: a soak that hangs must say where.
    const bounded = <A, E>(what: string, effect: Effect.Effect<A, E>) =>
      Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => new Error(`${what}: not within 10 s`) })
    yield* ready(1)
    yield* bounded("the first call", conn.call("echo", "say", { text: "warm" }))

    const live = Effect.map(fibers.value, (all) => all.length)
    const before = { heap: collect(), fibers: yield* live, handles: handles() }
    const heapSeries: Array<readonly [number, number]> = [[0, before.heap]]
    const start = performance.now()
    for (let cycle = 1; cycle <= cycles; cycle++) {
      yield* bounded(`cycle ${cycle}: reset`, proxy.reset)
      yield* conn.changes.pipe(
        Stream.filter((state) => state._tag !== "Ready"),
        Stream.runHead,
        Effect.timeoutFail({
          duration: "10 seconds",
          onTimeout: () => new Error(`cycle ${cycle}: the reset was not seen as a loss within 10 s`)
        })
      )
      yield* bounded(`cycle ${cycle}: pass`, proxy.pass)
      yield* ready(cycle + 1)
      if (cycle % Math.max(1, Math.floor(cycles / 20)) === 0) heapSeries.push([cycle, collect()])
    }
    const seconds = (performance.now() - start) / 1000
    yield* bounded("the last call", conn.call("echo", "say", { text: "still answers" }))
    // Let closed sockets finish closing before counting.
    yield* Effect.sleep("200 millis")
    const after = { heap: collect(), fibers: yield* live, handles: handles() }
    yield* bounded("closing the connection", Scope.close(scope, Exit.void))
    yield* Effect.sleep("200 millis")
    const closed = { fibers: yield* live, handles: handles() }

    const growth = after.heap - before.heap
    const gcExposed = typeof (globalThis as { gc?: unknown }).gc === "function"
    return {
      name: "soak",
      title: `Soak: ${cycles} reconnect cycles of one connection`,
      method:
        `One connection through a FaultProxy to a loopback server; each cycle resets every connection, waits for the ` +
        `connection to leave Ready, lets traffic through and waits for the next generation to be Ready (reconnect schedule ` +
        `5 ms, so the run is about leaks, not waiting). Heap used after ${
          gcExposed ? "two forced GCs" : "NO forced GC (run with --expose-gc)"
        }, ` +
        "live fibers of the connection (Supervisor.track), and open handles, before the first cycle, after the last, and after close.",
      tables: [{
        title: "Before and after",
        columns: ["", "heap used (MB)", "live fibers", "open handles"],
        rows: [
          ["before", before.heap.toFixed(1), before.fibers, JSON.stringify(before.handles)],
          [`after ${cycles} cycles`, after.heap.toFixed(1), after.fibers, JSON.stringify(after.handles)],
          ["after close", "", closed.fibers, JSON.stringify(closed.handles)]
        ]
      }, {
        title: "Cycles",
        columns: ["cycles", "seconds", "cycles/s"],
        rows: [[cycles, seconds.toFixed(1), (cycles / seconds).toFixed(0)]]
      }],
      targets: [
        {
          name: "heap growth after GC",
          target: "< 10 MB",
          measured: `${growth.toFixed(2)} MB`,
          met: gcExposed && growth < 10
        },
        {
          name: "live fibers back to baseline",
          target: `${before.fibers} (and 0 after close)`,
          measured: `${after.fibers} (${closed.fibers} after close)`,
          met: after.fibers <= before.fibers && closed.fibers === 0
        },
        {
          name: "open handles back to baseline",
          target: `${total(before.handles)}`,
          measured: `${total(after.handles)}`,
          met: total(after.handles) <= total(before.handles)
        }
      ],
      svg: lines({
        title: `Soak: heap used after GC over ${cycles} reconnect cycles`,
        subtitle: `before ${before.heap.toFixed(1)} MB, after ${after.heap.toFixed(1)} MB`,
        xUnit: "reconnect cycles",
        yUnit: "heap used (MB)",
        series: [{ name: "heap used after GC", points: heapSeries }]
      }),
      data: { cycles, seconds, before, after, closed, heapSeries, gcExposed }
    }
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Error))
