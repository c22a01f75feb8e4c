import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as PathPatch from "effect/ConfigProviderPathPatch"
import * as Effect from "effect/Effect"
import * as HashSet from "effect/HashSet"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "vitest"
import * as Connection from "../src/Connection.js"
import * as Credentials from "../src/Credentials.js"
import * as Env from "../src/Env.js"
import * as Health from "../src/Health.js"
import * as Outbox from "../src/Outbox.js"
import * as SqliteOutbox from "../src/sqlite/SqliteOutbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"

// What the README and the docs show must exist; that their TypeScript compiles and runs is the consumer ring's
// job (scripts/consumer-ring.sh), against the packed package.
const root = fileURLToPath(new URL("..", import.meta.url))
const readme = readFileSync(`${root}README.md`, "utf8")
const docs = readdirSync(`${root}docs`).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)
const pages = ["README.md", "CONTRIBUTING.md", ...docs]
const text = (page: string) => readFileSync(`${root}${page}`, "utf8")

describe("README and docs", () => {
  it("every picture and every local link of every page is a file of the repository", () => {
    const missing = pages.flatMap((page) =>
      [...text(page).matchAll(/\]\(([^)\s#]+)(?:#[^)\s]*)?\)/g)]
        .map((match) => match[1]!)
        .filter((target) => !/^[a-z]+:/.test(target))
        .filter((target) => !existsSync(join(root, dirname(page), target)))
        .map((target) => `${page}: ${target}`)
    )
    assert.deepStrictEqual(missing, [])
  })

  it("the README's pictures are in the package (they show on its page)", () => {
    const files: ReadonlyArray<string> = JSON.parse(text("package.json")).files
    const pictures = [...readme.matchAll(/!\[[^\]]*\]\(([^)\s]+)\)/g)].map((match) => match[1]!)
    assert.isAtLeast(pictures.length, 1)
    assert.deepStrictEqual(pictures.filter((path) => !files.some((entry) => path.startsWith(`${entry}/`))), [])
  })

  it("the README is read in ten minutes (under 350 lines) and links every page of docs/", () => {
    assert.isBelow(readme.split("\n").length, 350)
    assert.deepStrictEqual(docs.filter((page) => !readme.includes(`](${page})`)), [])
  })

  it("every TypeScript block is a module with its imports, and the three the consumer ring runs are marked", () => {
    const blocks = pages.flatMap((
      page
    ) => [...text(page).matchAll(/(?:<!-- consumer: (\S+) -->\n)?```ts\n([\s\S]*?)```/g)])
    assert.isAtLeast(blocks.length, 5)
    const withoutImports = blocks.filter((block) => !/^import /m.test(block[2]!)).map((block) => block[2]!.slice(0, 60))
    assert.deepStrictEqual(withoutImports, [])
    assert.deepStrictEqual(blocks.map((block) => block[1]).filter((name) => name !== undefined), [
      "worker.ts",
      "readme.test.ts",
      "simulated-master.test.ts"
    ])
  })

  it("starts with the two commands of a newcomer: the demo and the tests", () => {
    const first = readme.slice(readme.indexOf("```sh"), readme.indexOf("```", readme.indexOf("```sh") + 5))
    assert.include(first, "npm run demo")
    assert.include(first, "npm test")
  })
})

describe("the configuration table (docs/configuration.md)", () => {
  // Every variable the library's configs read, found by reading them from a provider that has none.
  const variablesRead = () => {
    const read = new Set<string>()
    const recording = ConfigProvider.fromFlat(ConfigProvider.makeFlat({
      load: (path) => {
        read.add(path.map((name) => Env.variable(name)).join("_"))
        return Effect.fail(ConfigError.MissingData([...path], "recorded"))
      },
      enumerateChildren: () => Effect.succeed(HashSet.empty()),
      patch: PathPatch.empty
    }))
    const configs: ReadonlyArray<Config.Config<unknown>> = [
      Config.unwrap(Connection.config),
      Config.unwrap(TaskSource.config),
      Config.unwrap(TaskHandler.config),
      Config.unwrap(Health.config),
      Config.unwrap(Outbox.config),
      Config.unwrap(Credentials.config),
      Config.unwrap(SqliteOutbox.config)
    ]
    for (const config of configs) {
      Effect.runSync(Effect.ignore(Effect.withConfigProvider(config, recording)))
    }
    return read
  }

  it("names every variable the library reads, and only those (besides the examples' LOG_FORMAT)", () => {
    const configuration = text("docs/configuration.md")
    const table = configuration.slice(configuration.indexOf("| variable | meaning | default |"))
    const rows = table.slice(0, table.indexOf("\n\n")).split("\n").slice(2)
    const documented = new Set(
      rows.flatMap((row) => [...row.split("|")[1]!.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!))
    )
    const read = variablesRead()
    assert.isAtLeast(read.size, 30)
    assert.deepStrictEqual([...read].filter((name) => !documented.has(name)).sort(), [], "read but not in the table")
    assert.deepStrictEqual(
      [...documented].filter((name) => !read.has(name) && name !== "LOG_FORMAT").sort(),
      [],
      "in the table but read by nothing"
    )
  })
})
