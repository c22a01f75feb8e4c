/**
 * A benchmark's child process: a Node process (a master, a process of
 * workers, one worker alone) spoken to over its IPC channel, one request at a
 * time, each answered by one reply. Pinned to a core with `taskset` when there
 * is one and the machine has more than one core, so a master and its workers
 * do not share a core's time, and a process's CPU time is its own.
 *
 * A child runs the library as a user's app does: compiled JavaScript under
 * plain `node` (`compile` builds it once per run, into `bench/.build`), not
 * TypeScript through tsx, whose loader thread alone costs an idle process
 * about 0.3 % of a core and whose source maps make every stack trace dearer.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { rmSync, symlinkSync } from "node:fs"
import { createRequire } from "node:module"
import { cpus } from "node:os"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"

// This file runs from the repository, or compiled, from `bench/.build/bench` (a child that starts children).
const built = import.meta.url.includes("/bench/.build/")
const root = fileURLToPath(new URL(built ? "../../.." : "..", import.meta.url))
const build = join(root, "bench", ".build")
let compiled = built

/**
 * Compiles the library and the benchmarks (`tsconfig.bench.json`) into
 * `bench/.build`, with the protocol's directory beside them, at the first
 * child of a run: the children then run as plain JavaScript.
 */
export const compile: Effect.Effect<void, Error> = Effect.try({
  try: () => {
    if (compiled) return
    rmSync(build, { recursive: true, force: true })
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
    execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.bench.json")], { stdio: "inherit" })
    symlinkSync(join(root, "proto"), join(build, "proto"))
    compiled = true
  },
  catch: (error) => new Error(`bench: compiling the benchmarks' children failed: ${String(error)}`)
})

/** Epoch milliseconds with sub-millisecond precision, comparable across the processes of one machine. */
export const now = (): number => performance.timeOrigin + performance.now()

/** Whether `taskset` runs here, and the cores it can pin to. */
export const pinning: { readonly available: boolean; readonly cores: number } = (() => {
  const cores = cpus().length
  try {
    execFileSync("taskset", ["-p", String(process.pid)], { stdio: "ignore" })
    return { available: cores >= 2, cores }
  } catch {
    return { available: false, cores }
  }
})()

export interface Child {
  readonly pid: number
  /** Sends a request and waits for its reply. */
  readonly ask: <A>(request: Record<string, unknown>) => Effect.Effect<A, Error>
}

/**
 * Starts `script` (a `.ts` file of the benchmarks) as a Node process running
 * its compiled twin, pinned to `core` when pinning is available; stopped when
 * the scope closes.
 */
export const start = (
  script: URL,
  options: {
    readonly core: number | undefined
    readonly heapMb?: number | undefined
    readonly env?: Record<string, string>
    /** Discard its stdout: a process that logs as a user's does, without filling the benchmark's output. */
    readonly quiet?: boolean | undefined
  }
): Effect.Effect<Child, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.zipRight(
      compile,
      Effect.async<Child, Error>((resume) => {
        const source = fileURLToPath(script)
        const path = (source.startsWith(build) ? source : join(build, relative(root, source))).replace(/\.ts$/, ".js")
        const node = [
          ...(options.heapMb === undefined ? [] : [`--max-old-space-size=${options.heapMb}`]),
          // FLEET_PROFILE=<dir> writes a CPU profile of each process there.
          ...(process.env["FLEET_PROFILE"] ? ["--cpu-prof", `--cpu-prof-dir=${process.env["FLEET_PROFILE"]}`] : []),
          path
        ]
        const pinned = pinning.available && options.core !== undefined
        const stdio = ["ignore", options.quiet === true ? "ignore" : "inherit", "inherit", "ipc"] as const
        const child: ChildProcess = pinned
          ? spawn("taskset", ["-c", String(options.core), process.execPath, ...node], {
            stdio: [...stdio],
            env: { ...process.env, ...options.env }
          })
          : spawn(process.execPath, node, { stdio: [...stdio], env: { ...process.env, ...options.env } })
        let pending: ((reply: unknown) => void) | undefined
        let failed: ((error: Error) => void) | undefined
        child.on("message", (message: unknown) => {
          const resolve = pending
          pending = undefined
          resolve?.(message)
        })
        child.on("exit", (code, signal) => {
          failed?.(new Error(`${path} exited (${signal ?? code}) before it answered`))
        })
        const ask = <A>(request: Record<string, unknown>) =>
          Effect.async<A, Error>((resumeAsk) => {
            pending = (reply) => {
              const answer = reply as { readonly error?: string }
              resumeAsk(answer.error === undefined ? Effect.succeed(reply as A) : Effect.fail(new Error(answer.error)))
            }
            failed = (error) => resumeAsk(Effect.fail(error))
            child.send(request)
          })
        // The first message says the process is up.
        pending = () => resume(Effect.succeed({ pid: child.pid!, ask }))
        failed = (error) => resume(Effect.fail(error))
      })
    ),
    // SIGTERM first: the child exits as it would (a CPU profile is written then); SIGKILL if it is still there.
    (child) =>
      Effect.gen(function*() {
        const signal = (name: NodeJS.Signals) => {
          try {
            process.kill(child.pid, name)
            return true
          } catch {
            return false
          }
        }
        if (!signal("SIGTERM")) return
        for (let n = 0; n < 40 && signal(0 as unknown as NodeJS.Signals); n++) yield* Effect.sleep("50 millis")
        signal("SIGKILL")
      })
  )

/** In a child: answers each request with `handle`'s reply, one at a time, after saying it is up. */
export const serve = (handle: (request: Record<string, unknown>) => Promise<unknown>): void => {
  const send = (message: unknown): void => void process.send?.(message)
  let queue = Promise.resolve()
  process.on("message", (request: Record<string, unknown>) => {
    queue = queue.then(() =>
      handle(request).then(
        send,
        (error: unknown) => send({ error: error instanceof Error ? error.stack ?? error.message : String(error) })
      )
    )
  })
  // Exit with the parent, or when asked to.
  process.on("disconnect", () => process.exit(0))
  process.on("SIGTERM", () => process.exit(0))
  send({ up: true })
}

/** This process's CPU time so far, user and system, in milliseconds. */
export const cpuMs = (): number => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1000
}
