import { assert, describe, it } from "vitest"
import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

// What the README shows must exist; that its TypeScript compiles and runs is the consumer ring's job
// (scripts/consumer-ring.sh), against the packed package.
const root = fileURLToPath(new URL("..", import.meta.url))
const readme = readFileSync(`${root}README.md`, "utf8")

describe("README", () => {
  it("every picture it shows is a file of the repository", () => {
    const pictures = [...readme.matchAll(/!\[[^\]]*\]\(([^)\s]+)\)/g)].map((match) => match[1]!)
    assert.isAtLeast(pictures.length, 1)
    const missing = pictures.filter((path) => !existsSync(`${root}${path}`))
    assert.deepStrictEqual(missing, [])
  })

  it("every TypeScript block is a module with its imports, and the two the consumer ring runs are marked", () => {
    const blocks = [...readme.matchAll(/(?:<!-- consumer: (\S+) -->\n)?```ts\n([\s\S]*?)```/g)]
    assert.isAtLeast(blocks.length, 5)
    const withoutImports = blocks.filter((block) => !/^import /m.test(block[2]!)).map((block) => block[2]!.slice(0, 60))
    assert.deepStrictEqual(withoutImports, [])
    assert.deepStrictEqual(blocks.map((block) => block[1]).filter((name) => name !== undefined), ["worker.ts", "readme.test.ts"])
  })

  it("starts with the two commands of a newcomer: the demo and the tests", () => {
    const first = readme.slice(readme.indexOf("```sh"), readme.indexOf("```", readme.indexOf("```sh") + 5))
    assert.include(first, "npm run demo")
    assert.include(first, "npm test")
  })
})
