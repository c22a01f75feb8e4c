/**
 * A user's worker under `NodeRuntime.runMain` whose output is not a terminal (a pod's log, a pipe) logs one
 * line per entry, whatever the annotations; told otherwise (a pretty logger of its own), it keeps that.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"

const run = (...args: ReadonlyArray<string>) => {
  const child = spawnSync(process.execPath, ["--import", "tsx", "test/fixtures/loggingWorker.ts", ...args], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, FORCE_COLOR: "0" }
  })
  assert.strictEqual(child.status, 0, child.stderr)
  return child.stdout.split("\n").filter((line) => line !== "")
}

describe("log lines", () => {
  it("piped, every entry is one logfmt line: the library's and the app's own, with their annotations", () => {
    const lines = run()
    const own = lines.filter((line) => line.includes(`message="the app's own line"`))
    assert.strictEqual(own.length, 1, lines.join("\n"))
    assert.include(own[0], "task=t-1")
    assert.include(own[0], "attempt=2")
    assert.isTrue(
      lines.some((line) => line.includes("module=Connection") && line.includes("attempt")),
      lines.join("\n")
    )
    assert.deepStrictEqual(lines.filter((line) => !line.startsWith("timestamp=")), [])
  }, 60_000)

  it("an app that asks for the pretty logger keeps it: an entry's annotations on lines of their own", () => {
    const lines = run("pretty")
    assert.isTrue(lines.some((line) => line.includes("the app's own line") && !line.startsWith("timestamp=")))
    assert.isTrue(lines.some((line) => line.trim().startsWith("task:")), lines.join("\n"))
  }, 60_000)
})
