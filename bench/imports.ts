/**
 * Import cost: the time to import each entry of the built package, by its
 * name as a user imports it (`effect-grpc-resilience`, `.../testing`, every
 * entry of `exports`), against importing `effect` and `@grpc/grpc-js` alone.
 * Each import runs in a fresh node process; the contenders take turns round
 * by round, in a rotating order, so all see the same machine. Builds `dist/`
 * first when it is missing or older than `src/`.
 */
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import type { Bench, Result } from "./Bench.js"
import { bars, percentile } from "./plot.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const run = promisify(execFile)
// Nothing the runner was started with (tsx, --expose-gc) reaches the measured processes.
const env = { ...process.env, NODE_OPTIONS: "" }

const target = 1.3

interface Contender {
  readonly name: string
  readonly specifiers: ReadonlyArray<string>
}

interface Footprint {
  readonly modules: number
  readonly packages: ReadonlyArray<string>
  readonly dataReads: ReadonlyArray<string>
  readonly fibers: number
}

const newest = (dir: string): number =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((entry) => {
      const path = join(dir, entry.name)
      return entry.isDirectory() ? newest(path) : statSync(path).mtimeMs
    })
  )

const built = (): boolean => {
  try {
    return statSync(join(root, "dist", "index.js")).mtimeMs >= newest(join(root, "src"))
  } catch {
    return false
  }
}

const ensureBuilt = Effect.suspend(() =>
  built() ? Effect.void : Effect.promise(() => run("npm", ["run", "build"], { cwd: root, env }))
)

// The package's entries by name, from its own `exports`: a new entry is measured without editing this file.
const entries = (): ReadonlyArray<Contender> => {
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    readonly name: string
    readonly exports: Readonly<Record<string, unknown>>
  }
  // The code entries: `./package.json` is there for tools, not for an import.
  return Object.keys(manifest.exports).filter((key) => !key.endsWith(".json")).map((key) => {
    const name = key === "." ? manifest.name : `${manifest.name}${key.slice(1)}`
    return { name, specifiers: [name] }
  })
}

const baseline: Contender = { name: "effect + @grpc/grpc-js", specifiers: ["effect", "@grpc/grpc-js"] }

// Timed inside the child, from before the first import to after the last: node's own start is not in it.
const timing = `const start = performance.now()
await Promise.all(process.argv.slice(1).map((specifier) => import(specifier)))
process.stdout.write(String(performance.now() - start))`

const timeOnce = (contender: Contender) =>
  Effect.promise(async () => {
    const start = performance.now()
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", timing, ...contender.specifiers], {
      cwd: root,
      env
    })
    return { importMs: Number(stdout), processMs: performance.now() - start }
  })

// Untimed: what the import loads and reads, as test/Import.test.ts looks at it.
const footprint = (contender: Contender) =>
  Effect.promise(async (): Promise<Footprint> => {
    const { stdout } = await run(
      process.execPath,
      ["--import", "tsx", "test/fixtures/imports.ts", ...contender.specifiers],
      { cwd: root, env, maxBuffer: 16 * 1024 * 1024 }
    )
    const { imported } = JSON.parse(stdout) as {
      imported: { reads: Array<string>; modules: number; packages: Array<string>; fibers: number }
    }
    return {
      modules: imported.modules,
      packages: imported.packages,
      dataReads: imported.reads.filter((path) => !/\.([cm]?[jt]s|json)(\.map)?$/.test(path)),
      fibers: imported.fibers
    }
  })

export const imports: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const rounds = quick ? 3 : 30
    yield* ensureBuilt
    const contenders = [...entries(), baseline]
    const importMs = contenders.map((): Array<number> => [])
    const processMs = contenders.map((): Array<number> => [])
    // One round first, not kept: the file cache and the first-run costs are not an import's.
    for (let round = -1; round < rounds; round++) {
      for (let turn = 0; turn < contenders.length; turn++) {
        const index = (turn + Math.max(round, 0)) % contenders.length
        const time = yield* timeOnce(contenders[index]!)
        if (round < 0) continue
        importMs[index]!.push(time.importMs)
        processMs[index]!.push(time.processMs)
      }
    }
    const footprints: Array<Footprint> = []
    for (const contender of contenders) footprints.push(yield* footprint(contender))

    const median = (values: ReadonlyArray<number>) => percentile(values, 50)
    const baselineIndex = contenders.length - 1
    const base = median(importMs[baselineIndex]!)
    const ratio = (index: number) => median(importMs[index]!) / base
    const ms = (value: number) => `${value.toFixed(0)} ms`
    const basePackages = new Set(footprints[baselineIndex]!.packages)
    const rootName = contenders[0]!.name

    const result: Result = {
      name: "imports",
      title: "Import cost: the package's entries against effect and grpc-js alone",
      method: `${rounds} rounds after one not kept; in each round every contender is imported once, in a fresh node ` +
        "process, in an order that rotates from round to round. The time is taken inside the process, from before the " +
        "first import to after the last (node's own start is in the process time beside it). The entries are imported " +
        "by package name from the built dist/, as a user imports them; the baseline imports effect's index and " +
        "@grpc/grpc-js together. What each import loads is counted once more, untimed, with test/fixtures/imports.ts.",
      tables: [
        {
          title: "Import time (fresh process each)",
          columns: ["import", "median", "p90", "min", "process (median)", "vs effect + @grpc/grpc-js"],
          rows: contenders.map((contender, index) => [
            contender.name,
            ms(median(importMs[index]!)),
            ms(percentile(importMs[index]!, 90)),
            ms(Math.min(...importMs[index]!)),
            ms(median(processMs[index]!)),
            `${ratio(index).toFixed(2)}x`
          ])
        },
        {
          title: "What each import loads",
          columns: ["import", "modules", "packages beside the baseline's", "data files read", "fibers run"],
          rows: contenders.map((contender, index) => {
            const found = footprints[index]!
            const extra = found.packages.filter((name) => !basePackages.has(name))
            return [
              contender.name,
              found.modules,
              index === baselineIndex
                ? `(its own: ${found.packages.join(", ")})`
                : extra.length === 0
                ? "none"
                : extra.join(", "),
              found.dataReads.length === 0 ? "none" : found.dataReads.join(", "),
              found.fibers
            ]
          })
        }
      ],
      targets: [{
        name: `importing ${rootName}`,
        target: `<= ${target}x effect + @grpc/grpc-js`,
        measured: `${ratio(0).toFixed(2)}x (${ms(median(importMs[0]!))} against ${ms(base)})`,
        met: ratio(0) <= target
      }],
      svg: bars({
        title: "Import cost, by entry",
        subtitle: `median of ${rounds} fresh processes each (whisker: p90)`,
        unit: "time (ms)",
        groups: [
          { label: "import", values: importMs },
          { label: "process (with node's start)", values: processMs }
        ].map(({ label, values }) => ({
          label,
          bars: contenders.map((contender, index) => ({
            series: contender.name,
            value: median(values[index]!),
            high: percentile(values[index]!, 90)
          }))
        }))
      }),
      data: {
        rounds,
        contenders: contenders.map((contender, index) => ({
          ...contender,
          importMs: importMs[index],
          processMs: processMs[index],
          footprint: footprints[index]
        }))
      },
      notes: [
        "The baseline imports effect's index, which loads every module of effect (fast-check among them); an entry of " +
        "this package loads only the modules it imports, so it can load fewer modules than the baseline and still take " +
        "longer when it adds packages of its own (the second table)."
      ]
    }
    return result
  })
