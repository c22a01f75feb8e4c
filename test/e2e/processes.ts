/**
 * Real processes for the end-to-end tests: the example master and worker,
 * their JSON log lines, and the master's admin API over a Unix socket (which
 * crosses network namespaces).
 */
import * as Command from "@effect/platform/Command"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { mkdtempSync, rmSync } from "node:fs"
import { request } from "node:http"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

export const root = fileURLToPath(new URL("../..", import.meta.url))

/** A directory of its own under the system's temporary one, removed with everything in it when the scope closes. */
export const temporaryDirectory = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), prefix))),
    (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
  )

/** A TCP port on 127.0.0.1 that was free a moment ago: for a process that binds it itself. */
export const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address ? address.port : 0)))
  })
})

export interface LogLine {
  readonly at: number
  readonly level: string
  readonly message: string
  readonly raw: string
}

export interface Running {
  readonly lines: Array<LogLine>
  readonly pid: number
  readonly running: Effect.Effect<boolean>
  readonly kill: (signal?: "SIGTERM" | "SIGKILL") => Effect.Effect<void>
}

/** `node --import tsx <script>` as argv, to run as is or inside a namespace. */
export const tsx = (
  script: string
): readonly [string, ...Array<string>] => [process.execPath, "--import", "tsx", script]

const parse = (raw: string): LogLine => {
  try {
    const json = JSON.parse(raw) as { timestamp?: string; logLevel?: string; message?: unknown }
    const message = Array.isArray(json.message) ? json.message.join(" ") : String(json.message ?? raw)
    return { at: Date.parse(json.timestamp ?? "") || Date.now(), level: json.logLevel ?? "", message, raw }
  } catch {
    return { at: Date.now(), level: "", message: raw, raw }
  }
}

/** Starts a process for as long as the scope; its output lines are kept; closing ends it (TERM, then KILL). */
export const spawn = (command: Command.Command, env: Record<string, string>) =>
  Effect.gen(function*() {
    const child = yield* Command.start(command.pipe(Command.env(env), Command.workingDirectory(root)))
    const lines: Array<LogLine> = []
    const keep = (stream: Stream.Stream<Uint8Array, unknown>) =>
      stream.pipe(
        Stream.decodeText(),
        Stream.splitLines,
        Stream.runForEach((line) => Effect.sync(() => void lines.push(parse(line)))),
        Effect.ignore,
        Effect.forkScoped
      )
    yield* keep(child.stdout)
    yield* keep(child.stderr)
    const kill = (signal: "SIGTERM" | "SIGKILL" = "SIGTERM") => Effect.ignore(child.kill(signal))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (!(yield* Effect.orElseSucceed(child.isRunning, () => false))) return
        yield* kill("SIGTERM")
        const ended = yield* child.exitCode.pipe(Effect.timeoutOption("10 seconds"), Effect.option)
        if (ended._tag === "None" || ended.value._tag === "None") yield* kill("SIGKILL")
      })
    )
    return {
      lines,
      pid: child.pid,
      running: Effect.orElseSucceed(child.isRunning, () => false),
      kill
    } satisfies Running
  })

/** One request to the master's admin API over its Unix socket. */
export const admin = <A = unknown>(socketPath: string, method: "GET" | "POST", path: string, body?: unknown) =>
  Effect.async<A, Error>((resume) => {
    const req = request({ socketPath, method, path, headers: { "content-type": "application/json" } }, (res) => {
      let data = ""
      res.setEncoding("utf8")
      res.on("data", (chunk) => (data += chunk))
      res.on("end", () => {
        if ((res.statusCode ?? 500) >= 400) {
          resume(Effect.fail(new Error(`${method} ${path}: ${res.statusCode} ${data}`)))
        } else resume(Effect.succeed((data === "" ? undefined : JSON.parse(data)) as A))
      })
    })
    req.on("error", (error) => resume(Effect.fail(error)))
    req.end(body === undefined ? undefined : JSON.stringify(body))
    return Effect.sync(() => req.destroy())
  })

/** Polls until `until` holds (a failed read counts as not yet), every 50 ms, bounded. */
export const poll = <A, E>(
  self: Effect.Effect<A, E>,
  until: (a: A) => boolean,
  within: Duration.DurationInput,
  what: string
) =>
  Effect.gen(function*() {
    while (true) {
      const read = yield* Effect.either(self)
      if (read._tag === "Right" && until(read.right)) return read.right
      yield* Effect.sleep("50 millis")
    }
  }).pipe(
    Effect.timeoutFail({
      duration: within,
      onTimeout: () => new Error(`${what}: not within ${Duration.format(Duration.decode(within))}`)
    })
  )

export interface TaskView {
  readonly id: string
  readonly status: string
  readonly handedOut: number
  readonly history: ReadonlyArray<{ readonly status: string; readonly at: number; readonly error?: string }>
}

/** The example master as a process, its admin API over a Unix socket in `directory`. */
export interface ExampleMaster {
  /** `127.0.0.1:<port>`, what workers dial. */
  readonly address: string
  readonly api: <A = unknown>(method: "GET" | "POST", path: string, body?: unknown) => Effect.Effect<A, Error>
}

/**
 * Starts `examples/master.ts` for as long as the scope, with `env` over its JSON logs and admin socket, and
 * returns once its admin API answers (within `within`).
 */
export const exampleMaster = (
  directory: string,
  env: Record<string, string>,
  within: Duration.DurationInput = "30 seconds"
) =>
  Effect.gen(function*() {
    const socket = join(directory, "admin.sock")
    const port = yield* freePort
    yield* spawn(Command.make(...tsx("examples/master.ts")), {
      MASTER_PORT: String(port),
      ADMIN_SOCKET: socket,
      LOG_FORMAT: "json",
      ...env
    })
    const api = <A = unknown>(method: "GET" | "POST", path: string, body?: unknown) =>
      admin<A>(socket, method, path, body)
    yield* poll(api("GET", "/nodes"), () => true, within, "the master's admin API")
    return { address: `127.0.0.1:${port}`, api } satisfies ExampleMaster
  })
