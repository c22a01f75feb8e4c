/**
 * Runs the benchmarks one after the other and writes what they found:
 * `bench/results.json`, `bench/RESULTS.md` and one SVG per benchmark
 * (`--quick`: small counts, written to `bench/quick/`, for CI; some of them
 * by name: written to `bench/partial/`, so a full run's page stays whole, below
 * the results kept there of the benchmarks not run this time). A
 * missed target is reported, not failed; only a benchmark that breaks fails
 * the run.
 *
 *   npm run bench            # everything, full counts (about 40 minutes)
 *   npm run bench:quick      # small counts (under 3 minutes)
 *   npm run bench -- membership crash   # some of them, into bench/partial/
 */
import * as Effect from "effect/Effect"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, platform, release, totalmem } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Bench, Result } from "./Bench.js"
import { crash } from "./crash.js"
import { dispatch } from "./dispatch.js"
import { fleet } from "./fleet.js"
import { imports } from "./imports.js"
import { membership } from "./membership.js"
import { outbox } from "./outbox.js"
import { overhead } from "./overhead.js"
import { recovery } from "./recovery.js"
import { soak } from "./soak.js"
import { throughput } from "./throughput.js"
import { virtualTime } from "./virtualTime.js"

const all: ReadonlyArray<readonly [string, Bench]> = [
  ["imports", imports],
  ["virtual-time", virtualTime],
  ["overhead", overhead],
  ["soak", soak],
  ["fleet", fleet],
  ["recovery", recovery],
  ["outbox", outbox],
  ["membership", membership],
  ["crash", crash],
  ["dispatch", dispatch],
  ["throughput", throughput]
]

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const wanted = args.filter((arg) => !arg.startsWith("--"))
const unknown = wanted.filter((name) => !all.some(([n]) => n === name))
if (unknown.length > 0) {
  console.error(`bench: unknown benchmark ${unknown.join(", ")}; known: ${all.map(([n]) => n).join(", ")}`)
  process.exit(2)
}
const chosen = all.filter(([name]) => wanted.length === 0 || wanted.includes(name))

const here = fileURLToPath(new URL(".", import.meta.url))
const out = quick ? join(here, "quick") : wanted.length > 0 ? join(here, "partial") : here
mkdirSync(out, { recursive: true })

const machine = {
  cores: cpus().length,
  cpu: cpus()[0]?.model ?? "unknown",
  memory: `${Math.round(totalmem() / 1024 ** 3)} GiB`,
  node: process.version,
  os: `${platform()} ${release()}`,
  date: new Date().toISOString()
}
const command = `npm run ${quick ? "bench:quick" : "bench"}${wanted.length > 0 ? ` -- ${wanted.join(" ")}` : ""}`

// One run's results, as results.json keeps them (without the SVGs).
interface Run {
  readonly machine: typeof machine
  readonly command: string
  readonly results: ReadonlyArray<Omit<Result, "svg">>
}

// A partial run keeps, below its own, the results of the benchmarks it did not run, each with the run that made
// them: running one benchmark by name does not drop another's figures from bench/partial/.
const earlierRuns = (): ReadonlyArray<Run> => {
  if (quick || wanted.length === 0 || !existsSync(join(out, "results.json"))) return []
  const found = JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as Run & {
    readonly earlier?: ReadonlyArray<Run>
  }
  return [found, ...(found.earlier ?? [])].flatMap((run) => {
    const results = run.results.filter((result) => !wanted.includes(result.name))
    return results.length === 0 ? [] : [{ machine: run.machine, command: run.command, results }]
  })
}

const produced = (run: Pick<Run, "machine" | "command">) =>
  `Produced by \`${run.command}\` on ${run.machine.date.slice(0, 10)}: ${run.machine.cores} cores ` +
  `(${run.machine.cpu}), ${run.machine.memory}, Node ${run.machine.node}, ${run.machine.os}. The machine is ` +
  "shared: absolute times are noise, the comparisons made within one run are the result."

// One run's part of the page: where it ran, its targets, then each benchmark's tables.
const section = (run: Run, failures: ReadonlyArray<string>): Array<string> => {
  const cell = (value: string | number) => String(value).replace(/\|/g, "\\|")
  const results = run.results
  const lines: Array<string> = []
  lines.push(produced(run), "")
  lines.push("| benchmark | target | measured | |", "| --- | --- | --- | --- |")
  for (const result of results) {
    for (const target of result.targets) {
      lines.push(
        `| ${cell(result.title)}: ${cell(target.name)} | ${cell(target.target)} | ${cell(target.measured)} | ${
          target.met ? "met" : "**missed**"
        } |`
      )
    }
  }
  for (const failure of failures) lines.push(`| ${cell(failure)} | | | **broke** |`)
  lines.push("")
  for (const result of results) {
    lines.push(`## ${result.title}`, "", result.method, "")
    for (const table of result.tables) {
      lines.push(
        `**${table.title}**`,
        "",
        `| ${table.columns.map(cell).join(" | ")} |`,
        `| ${table.columns.map(() => "---").join(" | ")} |`
      )
      for (const row of table.rows) lines.push(`| ${row.map(cell).join(" | ")} |`)
      lines.push("")
    }
    lines.push(`![${result.title}](${result.name}.svg)`, "")
    for (const note of result.notes ?? []) lines.push(`- ${note}`)
    if ((result.notes ?? []).length > 0) lines.push("")
  }
  return lines
}

const markdown = (run: Run, failures: ReadonlyArray<string>, earlier: ReadonlyArray<Run>): string =>
  [
    `# Benchmark results${quick ? " (quick: small counts, not the numbers to quote)" : ""}`,
    "",
    ...section(run, failures),
    ...earlier.flatMap((e) => ["---", "", "Kept from an earlier partial run:", "", ...section(e, [])])
  ].join("\n")

const main = Effect.gen(function*() {
  const results: Array<Result> = []
  const failures: Array<string> = []
  for (const [name, bench] of chosen) {
    const start = performance.now()
    console.log(`bench ${name}${quick ? " (quick)" : ""}: running`)
    const outcome = yield* Effect.either(Effect.suspend(() => bench({ quick })))
    const seconds = ((performance.now() - start) / 1000).toFixed(1)
    if (outcome._tag === "Left") {
      console.error(`bench ${name}: BROKE after ${seconds} s:`, outcome.left)
      failures.push(`${name}: ${String(outcome.left)}`)
      continue
    }
    const result = outcome.right
    results.push(result)
    writeFileSync(join(out, `${result.name}.svg`), result.svg)
    for (const target of result.targets) {
      console.log(`  ${target.met ? "met   " : "MISSED"} ${target.name}: ${target.measured} (target ${target.target})`)
    }
    console.log(`bench ${name}: done in ${seconds} s`)
  }
  const earlier = earlierRuns()
  const kept = results.map(({ svg: _svg, ...rest }) => rest)
  writeFileSync(
    join(out, "results.json"),
    JSON.stringify(
      { machine, command, quick, results: kept, failures, ...(earlier.length > 0 ? { earlier } : {}) },
      null,
      2
    )
  )
  writeFileSync(join(out, "RESULTS.md"), markdown({ machine, command, results: kept }, failures, earlier))
  console.log(`results written to ${join(out, "RESULTS.md")}`)
  console.log(`${results.length} benchmarks ran, ${failures.length} broke`)
  if (failures.length > 0) process.exitCode = 1
})

Effect.runPromise(main).then(
  () => process.exit(),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
