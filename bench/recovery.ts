/**
 * Benchmark 1, recovery latency: the time from the network coming back to the
 * first task started, after outages of random length, for three ways of
 * writing a worker (bench/contenders): (a) this library with its defaults,
 * (b) a plain grpc-js worker, (c) a model of the original Go client; and the
 * library against a master whose `Subscribe` keepalive is every 4 s, not 2.
 *
 * Every contender runs against its own embedded master behind its own TCP
 * fault proxy, once per fault kind (reset, blackhole). The eight (contender,
 * fault) pairs run at the same time, in this one process, each following the
 * same seeded outage schedule at its own pace: an outage starts a few seconds
 * (seeded) after the previous one ended, so a contender that is slow to
 * recover stretches only its own run, and the wall time is about the slowest
 * pair's. Per outage: the fault begins, a task is enqueued 45 % into it (the
 * seed enqueued 9 s into a 20 s outage), the fault ends at R, and the latency
 * is the moment the worker's handler starts that task minus R. A task not
 * started within the bound is a DNF ("did not recover"), cancelled on the
 * master, and reported with the worker's state at the bound.
 *
 * Beside them, eight more pairs measure the cost: one long outage each, counting
 * the TCP connections the proxy accepted (what the master's side sees) per
 * minute.
 */
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { performance } from "node:perf_hooks"
import { Connection, Readiness } from "../src/index.js"
import type { Bench, Result, Table, Target } from "./Bench.js"
import type { Contender } from "./contenders/Contender.js"
import { library, libraryPrevious } from "./contenders/Library.js"
import { fetchDeadlineMs, fetchIntervalMs } from "./contenders/PlainGrpc.js"
import { bars, percentile } from "./plot.js"
import { costPair, type CostResult, refusedCost, type RefusedResult } from "./recovery/cost.js"
import { latencyPair, type Measured, type PairResult, type Progress } from "./recovery/latency.js"
import {
  contenders,
  costContenders,
  type Fault,
  faults,
  type Outage,
  schedule,
  seconds,
  seed,
  type Settings,
  settings
} from "./recovery/plan.js"

// -------------------------------------------------------------------------------------------------
// Statistics and presentation
// -------------------------------------------------------------------------------------------------

/** A latency, DNF as +Infinity, so percentiles rank a DNF above every recovery. */
const valueOf = (m: Measured) => (m.latency === undefined ? Number.POSITIVE_INFINITY : m.latency)

interface Summary {
  readonly n: number
  readonly recovered: number
  readonly p50: number
  readonly p95: number
  readonly max: number
}

const summarize = (outages: ReadonlyArray<Measured>): Summary => {
  const values = outages.map(valueOf)
  return {
    n: values.length,
    recovered: values.filter(Number.isFinite).length,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    max: Math.max(...values)
  }
}

const show = (ms: number) => (Number.isFinite(ms) ? seconds(ms) : "DNF")

// How many times lower the library's p50 is; a DNF p50 gives a lower bound from the bound.
const ratio = (other: number, ours: number, bound: number): { readonly value: number; readonly text: string } => {
  if (!Number.isFinite(ours)) return { value: Number.NaN, text: "n/a (library DNF)" }
  if (!Number.isFinite(other)) {
    const low = bound / ours
    return { value: Number.POSITIVE_INFINITY, text: `> ${low.toFixed(0)}x (DNF)` }
  }
  const value = other / ours
  return { value, text: `${value.toFixed(1)}x` }
}

const lengthBands: ReadonlyArray<readonly [number, number]> = [[2_000, 8_000], [8_000, 14_000], [14_000, 20_001]]

const nameOf = (key: string) => costContenders.find((c) => c.key === key)?.name ?? key

// -------------------------------------------------------------------------------------------------
// The benchmark
// -------------------------------------------------------------------------------------------------

interface LogCounts {
  warnings: number
  errors: number
}

// The library's, the master's and the proxy's log lines: counted per pair, never printed.
const countingLogger = (counts: Map<string, LogCounts>) =>
  Logger.make(({ annotations, logLevel }) => {
    const pair = Option.getOrElse(HashMap.get(annotations, "benchPair"), () => "other")
    const entry = counts.get(String(pair)) ?? { warnings: 0, errors: 0 }
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Error)) entry.errors++
    else if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) entry.warnings++
    counts.set(String(pair), entry)
  })

export const recovery: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const s = settings(quick)
    const plan = schedule(s)
    const logCounts = new Map<string, LogCounts>()
    const began = performance.now()
    const totalOutage = plan.reduce((sum, o) => sum + o.length + o.gap, 0)
    yield* Console.log(
      `recovery: ${plan.length} outages of ${seconds(s.length[0])} to ${seconds(s.length[1])} per fault (${
        seconds(totalOutage)
      } of outages and gaps), ${contenders.length} contenders x ${faults.length} faults at once, DNF after ${
        seconds(s.bound)
      }; cost: one ${seconds(s.longOutage)} outage each`
    )

    // One progress line per fault and outage, printed once every contender has done that outage.
    const rows = new Map<string, Map<string, Measured>>()
    const progress: Progress = (fault, contender, m) =>
      Effect.suspend(() => {
        const key = `${fault}/${m.outage}`
        const row = rows.get(key) ?? new Map<string, Measured>()
        row.set(contender, m)
        rows.set(key, row)
        if (row.size < contenders.length) return Effect.void
        const cells = contenders.map((c) => {
          const cell = row.get(c.key)!
          const text = cell.status === "recovered" ? seconds(cell.latency!) : cell.status === "dnf" ? "DNF" : "not run"
          return `${c.key} ${text.padStart(8)}`
        })
        return Console.log(
          `  ${fault.padEnd(9)} outage ${String(m.outage).padStart(2)}/${plan.length}  ${
            seconds(m.length).padStart(7)
          }   ${cells.join("   ")}`
        )
      })

    const pairs = faults.flatMap((fault) =>
      contenders.map((c) =>
        latencyPair(c, fault, plan, s, progress).pipe(Effect.annotateLogs({ benchPair: `${c.key}/${fault}` }))
      )
    )
    const costs = faults.flatMap((fault) =>
      costContenders.map((c) =>
        costPair(c, fault, s).pipe(
          Effect.tap((cost) =>
            Console.log(
              `  cost      ${fault.padEnd(9)} ${c.key.padEnd(8)} ${cost.acceptedTotal} connections in ${
                seconds(cost.outageMs)
              } (${cost.perMinute.toFixed(1)}/min), ${cost.openAtEnd} open at the end${
                cost.recoveryStatus === "recovered"
                  ? `, recovered ${seconds(cost.recovery!)} after`
                  : cost.recoveryStatus === "dnf"
                  ? ", DNF after"
                  : ""
              }`
            )
          ),
          Effect.annotateLogs({ benchPair: `${c.key}/${fault}/cost` })
        )
      )
    )
    const refused = [library, libraryPrevious].map((c) =>
      refusedCost(c, s).pipe(
        Effect.tap((r) =>
          Console.log(
            `  refused   ${c.key.padEnd(16)} ${r.cpuPercent.toFixed(2)} % of a core over ${
              seconds(r.outageMs)
            }, ${r.attempts} attempts`
          )
        )
      )
    )
    const [latencies, costResults] = yield* Effect.all(
      [Effect.all(pairs, { concurrency: "unbounded" }), Effect.all(costs, { concurrency: "unbounded" })],
      { concurrency: "unbounded" }
    ).pipe(
      Effect.locally(FiberRef.currentLoggers, HashSet.make(countingLogger(logCounts))),
      Logger.withMinimumLogLevel(LogLevel.Warning)
    )
    // After the pairs, on a quieter machine: a CPU time is read, and the pairs' work would be in its caches.
    const refusedResults = yield* Effect.all(refused, { concurrency: "unbounded" })
    const wallMs = performance.now() - began
    yield* Console.log(`recovery: done in ${seconds(wallMs)}`)
    return report(s, plan, latencies, costResults, refusedResults, logCounts, wallMs, quick)
  })

const pairOf = (latencies: ReadonlyArray<PairResult>, fault: Fault, key: string) =>
  latencies.find((p) => p.fault === fault && p.contender === key)!

const report = (
  s: Settings,
  plan: ReadonlyArray<Outage>,
  latencies: ReadonlyArray<PairResult>,
  costs: ReadonlyArray<CostResult>,
  refused: ReadonlyArray<RefusedResult>,
  logCounts: Map<string, LogCounts>,
  wallMs: number,
  quick: boolean
): Result => {
  const summaries = new Map<string, Summary>()
  for (const p of latencies) summaries.set(`${p.fault}/${p.contender}`, summarize(p.outages))
  const summary = (fault: Fault, key: string) => summaries.get(`${fault}/${key}`)!

  // Table 1: percentiles and ratios.
  const latencyTable: Table = {
    title: "Recovery latency: network back to the first task started",
    columns: [
      "fault",
      "contender",
      "outages",
      "recovered",
      "p50",
      "p95",
      "max",
      "p50 / library p50",
      "max / library max"
    ],
    rows: faults.flatMap((fault) =>
      contenders.map((c) => {
        const sm = summary(fault, c.key)
        const ours = summary(fault, "library")
        return [
          fault,
          c.name,
          sm.n,
          sm.recovered,
          show(sm.p50),
          show(sm.p95),
          show(sm.max),
          c.key === "library" ? "1x" : ratio(sm.p50, ours.p50, s.bound).text,
          c.key === "library" ? "1x" : ratio(sm.max, ours.max, s.bound).text
        ]
      })
    )
  }

  // Table 2: median latency by outage length.
  const bandTable: Table = {
    title: "Median recovery latency by outage length",
    columns: ["fault", "contender", ...lengthBands.map(([lo, hi]) => `${lo / 1000}-${Math.round(hi / 1000)} s`)],
    rows: faults.flatMap((fault) =>
      contenders.map((c) => [
        fault,
        c.name,
        ...lengthBands.map(([lo, hi]) => {
          const inBand = pairOf(latencies, fault, c.key).outages.filter((m) => m.length >= lo && m.length < hi)
          return inBand.length === 0 ? "-" : `${show(percentile(inBand.map(valueOf), 50))} (n=${inBand.length})`
        })
      ])
    )
  }

  // Table 3: every outage.
  const cell = (
    m: Measured
  ) => (m.status === "recovered" ? seconds(m.latency!) : m.status === "dnf" ? "DNF" : "not run")
  const everyTable: Table = {
    title: "Every outage: latency per contender (same seeded lengths for all)",
    columns: ["#", "length", ...faults.flatMap((f) => contenders.map((c) => `${f}: ${c.key}`))],
    rows: plan.map((o, i) => [
      o.index,
      seconds(o.length),
      ...faults.flatMap((f) => contenders.map((c) => cell(pairOf(latencies, f, c.key).outages[i]!)))
    ])
  }

  // Table 4: cost.
  const minutes = Math.max(1, Math.floor(s.longOutage / 60_000))
  const costTable: Table = {
    title: `Cost: TCP connections the master's side accepted during one ${seconds(s.longOutage)} outage, per worker`,
    columns: [
      "fault",
      "contender",
      ...(minutes > 1 ? Array.from({ length: minutes }, (_, i) => `minute ${i + 1}`) : []),
      "per minute",
      "channels dialed",
      "open at the end",
      "recovery after it"
    ],
    rows: faults.flatMap((fault) =>
      costContenders.map((c) => {
        const cost = costs.find((x) => x.fault === fault && x.contender === c.key)!
        return [
          fault,
          c.name,
          ...(minutes > 1 ? cost.acceptedPerWindow.map((w) => w.accepted) : []),
          cost.perMinute.toFixed(1),
          cost.statsDuring["channelsDialed"] ?? "-",
          cost.openAtEnd,
          cost.recoveryStatus === "recovered"
            ? seconds(cost.recovery!)
            : cost.recoveryStatus === "dnf"
            ? "DNF"
            : "not measured"
        ]
      })
    )
  }

  // Targets.
  const lib = (fault: Fault) => summary(fault, "library")
  const absolute = (fault: Fault, what: "p50" | "max", limit: number, op: "<" | "<="): Target => ({
    name: `${fault}: library ${what}`,
    target: `${what} ${op} ${seconds(limit)}`,
    measured: show(lib(fault)[what]),
    met: op === "<" ? lib(fault)[what] < limit : lib(fault)[what] <= limit
  })
  const relative = (fault: Fault, other: Contender): Target => {
    const r = ratio(summary(fault, other.key).p50, lib(fault).p50, s.bound)
    return {
      name: `${fault}: p50 vs ${other.name}`,
      target: "library p50 at least 3x lower",
      measured: `${r.text} (${show(lib(fault).p50)} vs ${show(summary(fault, other.key).p50)})`,
      met: r.value >= 3
    }
  }
  // The other ways to write the worker; the library's own variants are beside it in the tables, not targets.
  const others = contenders.filter((c) => !c.key.startsWith("library"))
  const perMinute = (fault: Fault, key: string) =>
    costs.find((x) => x.fault === fault && x.contender === key)!.perMinute
  const refusedOf = (key: string) => refused.find((r) => r.contender === key)!
  const targets: Array<Target> = [
    absolute("reset", "p50", 350, "<="),
    absolute("reset", "max", 1_500, "<="),
    absolute("blackhole", "p50", 2_000, "<="),
    absolute("blackhole", "max", 8_000, "<"),
    ...faults.flatMap((fault) => others.map((o) => relative(fault, o))),
    {
      name: `blackhole of ${seconds(s.longOutage)}: connections per minute reaching the master's side`,
      target: "no more than with the previous schedule",
      measured: `${perMinute("blackhole", "library").toFixed(1)} (previous ${
        perMinute("blackhole", "library-previous").toFixed(1)
      })`,
      met: perMinute("blackhole", "library") <= perMinute("blackhole", "library-previous")
    },
    {
      name: `refused for ${seconds(s.refusedOutage)}: the worker's CPU`,
      target: "< 1 % of a core",
      measured: `${refusedOf("library").cpuPercent.toFixed(2)} % (previous schedule ${
        refusedOf("library-previous").cpuPercent.toFixed(2)
      } %)`,
      met: refusedOf("library").cpuPercent < 1
    }
  ]

  // Table 5: a refused outage, one worker alone in its process.
  const refusedTable: Table = {
    title: `A worker refused for ${seconds(s.refusedOutage)} (its master stopped), alone in its process`,
    columns: ["contender", "CPU, % of a core", "attempts", "attempts per minute"],
    rows: [library, libraryPrevious].map((c) => {
      const r = refusedOf(c.key)
      return [c.name, `${r.cpuPercent.toFixed(2)} %`, r.attempts, ((r.attempts * 60_000) / r.outageMs).toFixed(1)]
    })
  }

  // Notes, from the data.
  const notes: Array<string> = []
  for (const p of latencies) {
    const name = `${nameOf(p.contender)} (${p.fault})`
    if (p.warmUp !== undefined) notes.push(`${name} ${p.warmUp}.`)
    const dnf = p.outages.filter((m) => m.status === "dnf")
    const notRun = p.outages.filter((m) => m.status === "not-run")
    if (dnf.length > 0) {
      const reasons = new Map<string, number>()
      for (const m of dnf) reasons.set(m.reason ?? "?", (reasons.get(m.reason ?? "?") ?? 0) + 1)
      const common = [...reasons.entries()].sort((a, b) => b[1] - a[1])[0]!
      notes.push(
        `${name}: ${dnf.length} of ${p.outages.length} outages not recovered within ${seconds(s.bound)}${
          notRun.length > 0
            ? `, and the ${notRun.length} after its ${s.stuckAfter} DNFs in a row were not run (counted DNF)`
            : ""
        }; its state at the bound${reasons.size > 1 ? ` (most often, ${common[1]} times)` : ""}: ${common[0]}.`
      )
    }
  }
  // The library under blackholes: when is the loss found?
  const holes = pairOf(latencies, "blackhole", "library").outages.filter((m) => m.latency !== undefined)
  const short = holes.filter((m) => m.length < 12_000)
  const long = holes.filter((m) => m.length >= 12_000)
  if (short.length > 0 && long.length > 0) {
    notes.push(
      `Library (blackhole): after the ${short.length} blackholes shorter than 12 s the task started a median ${
        seconds(percentile(short.map((m) => m.length + m.latency!), 50))
      } after the blackhole BEGAN (its latency is that minus the length): the fault proxy's blackhole leaves ` +
        `the links it held dead after it ends, and an idle worker notices only when its Subscribe stream has been ` +
        `silent for two keepalive intervals and a second (5 s with the embedded master's 2 s) and the ${
          Duration.format(Readiness.defaults.probeTimeout)
        } probe that follows fails. ` +
        `After the ${long.length} longer ones the median latency was ${
          seconds(percentile(long.map((m) => m.latency!), 50))
        }: the loss was found during the outage, and the reconnection attempt in flight at the restore may hang ` +
        `until its ${Duration.format(Connection.defaults.connectTimeout)} connect timeout before the next one succeeds.`
    )
  }
  const go = (fault: Fault) => pairOf(latencies, fault, "go-model").stats
  for (const fault of faults) {
    const outages = pairOf(latencies, fault, "go-model").outages.filter((m) => m.status !== "not-run")
    const reset = outages.filter((m) => (m.events?.["forcedResets"] ?? 0) > 0)
    const rest = outages.filter((m) => (m.events?.["forcedResets"] ?? 0) === 0)
    if (reset.length > 0) {
      notes.push(
        `Go client model (${fault}): ${reset.length} of ${outages.length} outages saw a forced client reset; the task then ` +
          `started a median ${show(percentile(reset.map(valueOf), 50))} after the restore, against ${
            rest.length === 0 ? "-" : show(percentile(rest.map(valueOf), 50))
          } without one: the old client's Stop blocks up to 10 s before the new client dials, and a stopped client makes no more attempts.`
      )
    }
  }
  for (const fault of faults) {
    const g = go(fault)
    notes.push(
      `Go client model (${fault}): ${g["forcedResets"] ?? 0} forced client resets, ${
        g["reconnectionsExecuted"] ?? 0
      } reconnections executed (${g["reconnectionsFailed"] ?? 0} failed), circuit breaker opened ${
        g["breakerOpened"] ?? 0
      } times, ${g["lookupTimeouts"] ?? 0} lookups timed out waiting for registration, ${
        ((g["stopBlockedMs"] ?? 0) / 1000).toFixed(0)
      } s spent blocked in Stop.`
    )
    const l = pairOf(latencies, fault, "library").stats
    const counted = logCounts.get(`library/${fault}`) ?? { warnings: 0, errors: 0 }
    notes.push(
      `Library (${fault}): ${l["channelsDialed"] ?? 0} channels dialed, ${
        l["fetchFailures"] ?? 0
      } failed fetches (each logged), ${counted.warnings} warnings and ${counted.errors} errors logged.`
    )
  }
  for (const cost of costs) {
    const dialed = cost.statsDuring["channelsDialed"]
    const who = `${nameOf(cost.contender)} (${cost.fault}, ${seconds(cost.outageMs)} outage)`
    if (cost.fault === "reset" && dialed !== undefined && dialed > 0 && cost.acceptedTotal >= 1.5 * dialed) {
      notes.push(
        `${who}: ${cost.acceptedTotal} TCP connections for ${dialed} channels dialed. A grpc-js 1.14 channel closed in ` +
          "TRANSIENT_FAILURE still reconnects once (its subchannel's backoff timer survives the close), " +
          `so each failed attempt costs the master more than one connection (${
            (cost.acceptedTotal / dialed).toFixed(1)
          } here).`
      )
    }
    if (cost.fault === "blackhole" && cost.openAtEnd > 1) {
      notes.push(
        `${who}: ${cost.openAtEnd} sockets still open at the proxy when the outage ended, for ${
          cost.statsDuring["channelsDialed"] ?? "?"
        } channels dialed: a grpc-js 1.14 ` +
          "channel closed while CONNECTING (waiting for the server's HTTP/2 settings) leaves its TCP socket open, so every " +
          "attempt that times out during a blackhole leaks a socket until the peer closes it."
      )
    }
  }
  notes.push(
    `Wall time ${seconds(wallMs)}${
      quick ? ` (quick mode: ${s.outages} short outages per fault, numbers not meaningful)` : ""
    }; ` +
      "absolute times on a shared machine are noise, the ratios are the result."
  )

  const bound = s.bound / 1000
  const svg = bars({
    title: "Recovery latency: network back to first task started",
    subtitle: `p50 bars, max whiskers (DNF = the ${bound} s bound); ${plan.length} outages of ${s.length[0] / 1000}-${
      s.length[1] / 1000
    } s per fault`,
    unit: "seconds",
    groups: faults.map((fault) => ({
      label: fault,
      bars: contenders.map((c) => {
        const sm = summary(fault, c.key)
        return {
          series: c.name,
          value: Number.isFinite(sm.p50) ? sm.p50 / 1000 : bound,
          high: Number.isFinite(sm.max) ? sm.max / 1000 : bound,
          missing: Number.isFinite(sm.p50) ? undefined : "DNF"
        }
      })
    }))
  })

  return {
    name: "recovery",
    title: "Recovery latency after network outages",
    method: `${plan.length} outages per fault kind (reset, blackhole) through a TCP fault proxy, lengths ${
      seconds(s.length[0])
    } to ${
      seconds(s.length[1])
    } from a seeded generator (seed ${seed}), the same for every contender; a task enqueued ${
      Math.round(s.enqueueAt * 100)
    } % into each outage; latency = the worker's handler starting that task minus the restore; DNF after ${
      seconds(s.bound)
    }. Contenders: this library with its defaults, the same against a master that writes its Subscribe keepalive every 4 s (not 2), a plain grpc-js worker (default channel options, FetchTask every ${
      seconds(fetchIntervalMs)
    } with a ${
      seconds(fetchDeadlineMs)
    } deadline), and a TypeScript model of the original Go client (bench/contenders/GoClientModel.ts). Each (contender, fault) pair has its own master and proxy; all pairs run at once in one process. Cost: one ${
      seconds(s.longOutage)
    } outage per pair, counting the TCP connections the proxy accepted, with the library also on its previous reconnect schedule (bench/contenders/previousSchedule.ts); and one worker alone in its own process (compiled, under plain node), connected for ${
      seconds(s.refusedSettle)
    } and then its master stopped for ${seconds(s.refusedOutage)}, its CPU time read.`,
    tables: [latencyTable, bandTable, everyTable, costTable, refusedTable],
    targets,
    svg,
    data: {
      seed,
      quick,
      settings: s,
      schedule: plan,
      wallMs,
      latency: latencies,
      cost: costs,
      refused,
      logCounts: Object.fromEntries(logCounts),
      summaries: Object.fromEntries(
        [...summaries.entries()].map(([key, sm]) => [key, {
          ...sm,
          p50: Number.isFinite(sm.p50) ? sm.p50 : null,
          p95: Number.isFinite(sm.p95) ? sm.p95 : null,
          max: Number.isFinite(sm.max) ? sm.max : null
        }])
      )
    },
    notes
  }
}
