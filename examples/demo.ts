/**
 * The demo: the seed's CLS-001 in one process. An embedded master, a TCP fault
 * proxy in front of it, and a worker built from the library's layers. The
 * network fails, a task is created during the outage, the network comes back,
 * and the worker runs the task without a restart. Prints the timeline as it
 * happens, a summary and a verdict, and draws the timeline as an SVG Gantt chart.
 *
 *   npm run demo -- [--outage <seconds>] [--fault reset|blackhole] [--out <path>] [--verbose]
 *
 * DEMO_FAULT and DEMO_OUTAGE in the environment set the defaults of --fault and --outage.
 *
 * Exit code 0 when the task started within 5 s of the network coming back, 1
 * otherwise, 2 for a bad flag.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { resolve } from "node:path"
import { Connection, GrpcChannel, Outbox, TaskHandler, TaskSource } from "../src/index.js"
import { FaultProxy, Master } from "../src/testing/index.js"
import * as Timeline from "./Timeline.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("demo/MasterLink", TaskSource.services)<MasterLink>() {}

// -------------------------------------------------------------------------------------------------
// Flags
// -------------------------------------------------------------------------------------------------

interface Options {
  readonly outage: number
  readonly fault: "reset" | "blackhole"
  readonly out: string
  readonly verbose: boolean
}

const usage = `usage: npm run demo -- [--outage <seconds>] [--fault reset|blackhole] [--out <path>] [--verbose]

  --outage <seconds>        how long the network fails (default 10, from 1 to 300)
  --fault reset|blackhole   reset: every connection is reset; blackhole: packets vanish (default reset)
  --out <path>              where the SVG timeline goes (default demo-timeline.svg)
  --verbose                 also print the library's own log lines (info and above)`

// Hand-parsed: @effect/cli is not a dependency, and four flags do not need it.
const parseFlags = (
  argv: ReadonlyArray<string>,
  defaults: Pick<Options, "outage" | "fault">
): Either.Either<Options | "help", string> => {
  let options: Options = { ...defaults, out: "demo-timeline.svg", verbose: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined]
    const value = (what: string): Either.Either<string, string> => {
      const next = inline ?? argv[++i]
      return next === undefined || (inline === undefined && next.startsWith("--"))
        ? Either.left(`${flag} needs a value: ${what}`)
        : Either.right(next)
    }
    switch (flag) {
      case "-h":
      case "--help":
        return Either.right("help")
      case "--verbose":
        if (inline !== undefined) return Either.left(`--verbose takes no value, got "${inline}"`)
        options = { ...options, verbose: true }
        break
      case "--outage": {
        const text = value("a number of seconds")
        if (Either.isLeft(text)) return Either.left(text.left)
        const seconds = Number(text.right)
        if (text.right.trim() === "" || !Number.isFinite(seconds) || seconds < 1 || seconds > 300) {
          return Either.left(`--outage must be a number of seconds from 1 to 300, got "${text.right}"`)
        }
        options = { ...options, outage: seconds }
        break
      }
      case "--fault": {
        const text = value("reset or blackhole")
        if (Either.isLeft(text)) return Either.left(text.left)
        if (text.right !== "reset" && text.right !== "blackhole") {
          return Either.left(`--fault must be reset or blackhole, got "${text.right}"`)
        }
        options = { ...options, fault: text.right }
        break
      }
      case "--out": {
        const text = value("a file path")
        if (Either.isLeft(text)) return Either.left(text.left)
        if (text.right.trim() === "") return Either.left(`--out needs a file path, got an empty one`)
        options = { ...options, out: text.right }
        break
      }
      default:
        return Either.left(flag.startsWith("-") ? `unknown flag ${flag}` : `unexpected argument "${arg}"`)
    }
  }
  return Either.right(options)
}

// -------------------------------------------------------------------------------------------------
// The worker: the library's layers, dialling the fault proxy
// -------------------------------------------------------------------------------------------------

// Like the seed's `echo` spider: a message in, the same message out, about a second of work.
const Echo = Schema.Struct({ message: Schema.String })

const echo = (task: TaskHandler.Task<typeof Echo.Type>) => Effect.as(Effect.sleep("1 second"), task.payload.message)

const nodeKey = "demo-worker"

const worker = (address: string) =>
  TaskHandler.layer({
    connection: MasterLink,
    payload: Echo,
    run: echo,
    drainGrace: "2 seconds",
    flushTimeout: "2 seconds"
  }).pipe(
    Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey })),
    Layer.provideMerge(MasterLink.layer({ address })),
    Layer.provide(GrpcChannel.layer),
    Layer.provide(Outbox.layerMemory)
  )

// -------------------------------------------------------------------------------------------------
// The library's log lines: hidden unless --verbose, but counted
// -------------------------------------------------------------------------------------------------

interface LogCounts {
  warnings: number
  errors: number
  clientUnavailable: number
}

const messageText = (message: unknown): string =>
  Array.isArray(message) ? message.map(String).join(" ") : String(message)

// Prints in the timeline's own format, so log lines and events interleave readably.
const demoLogger = (start: number, verbose: boolean, counts: LogCounts) =>
  Logger.make(({ annotations, cause, date, logLevel, message }) => {
    const text = messageText(message) + (Cause.isEmpty(cause) ? "" : `\n${Cause.pretty(cause)}`)
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) counts.warnings++
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Error)) counts.errors++
    if (/client unavailable|ClientUnavailable/.test(text)) counts.clientUnavailable++
    if (!verbose && LogLevel.lessThan(logLevel, LogLevel.Error)) return
    const module = Option.getOrElse(HashMap.get(annotations, "module"), () => "")
    console.log(
      `${Timeline.formatElapsed(date.getTime() - start)}  ${"log".padEnd(10)}  ${logLevel.label.padEnd(5)} ${
        module === "" ? "" : `[${String(module)}] `
      }${text}`
    )
  })

// -------------------------------------------------------------------------------------------------
// The scenario
// -------------------------------------------------------------------------------------------------

class DemoError extends Data.TaggedError("DemoError")<{ readonly message: string }> {}

// What the summary is made of; times in milliseconds since the start.
interface Marks {
  readonly faultAt: number | undefined
  readonly restoreAt: number | undefined
  readonly readyAfterRestore: { readonly at: number; readonly generation: number } | undefined
  readonly taskRunning: number | undefined
  readonly taskEnded: Master.TaskInfo | undefined
  readonly attempts: number
}

// The seed's bar: a task created during the outage starts within 5 s of the network coming back.
const target = 5000
// How long after the restore the demo waits for the task to end.
const taskBound = 40_000
const steady = "2 seconds"
const pollEvery = "20 millis"

const modeName = (mode: FaultProxy.Mode): string =>
  FaultProxy.Mode.$match(mode, {
    Pass: () => "pass",
    Reset: () => "reset",
    Blackhole: () => "blackhole",
    Latency: ({ delay }) => `latency ${Timeline.formatSeconds(Duration.toMillis(delay))}`
  })

const scenario = (options: Options, recorder: Timeline.Recorder) =>
  Effect.gen(function*() {
    const { record } = recorder
    const marks = yield* Ref.make<Marks>({
      faultAt: undefined,
      restoreAt: undefined,
      readyAfterRestore: undefined,
      taskRunning: undefined,
      taskEnded: undefined,
      attempts: 0
    })
    const mark = (f: (m: Marks) => Partial<Marks>) => Ref.update(marks, (m) => ({ ...m, ...f(m) }))
    const afterRestore = (at: number, restoreAt: number | undefined) =>
      restoreAt === undefined ? "" : `, ${Timeline.formatSeconds(at - restoreAt)} after the network came back`

    const master = yield* Master.make()
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: master.port } })
    yield* Console.log(`master on ${master.address}, fault proxy on ${proxy.address}; the worker dials the proxy\n`)
    yield* record({ lane: "Connection", text: "worker starting", phase: { name: "connecting", tone: "neutral" } })
    const context = yield* Layer.build(worker(proxy.address))
    const conn = Context.get(context, MasterLink)
    const handler = Context.get(context, TaskHandler.TaskHandler)

    // Network: the proxy's fault. The marks are set here, so the summary's times are the printed ones.
    const watchNetwork = proxy.mode.changes.pipe(
      Stream.runForEach((mode) =>
        Effect.gen(function*() {
          const m = yield* Ref.get(marks)
          if (mode._tag !== "Pass") {
            const how = mode._tag === "Reset" ? "every connection is reset" : "packets vanish, sockets stay open"
            const event = yield* record({
              lane: "Network",
              text: `fault begins: ${modeName(mode)} (${how})`,
              phase: { name: `fault: ${modeName(mode)}`, tone: "fault" },
              milestone: "fault begins"
            })
            return yield* mark(() => ({ faultAt: event.at }))
          }
          if (m.faultAt === undefined) {
            return yield* record({ lane: "Network", text: "network up", phase: { name: "up", tone: "good" } })
          }
          const restoreAt = yield* recorder.elapsed
          yield* mark(() => ({ restoreAt }))
          yield* record({
            lane: "Network",
            at: recorder.start + restoreAt,
            text: `network restored after ${Timeline.formatSeconds(restoreAt - m.faultAt)} of ${options.fault}`,
            phase: { name: "up", tone: "good" },
            milestone: "network restored"
          })
        })
      )
    )

    // Connection: every state the supervisor publishes.
    let connected = false
    const watchConnection = conn.changes.pipe(
      Stream.runForEach((state) =>
        Effect.gen(function*() {
          const at = yield* recorder.elapsed
          const m = yield* Ref.get(marks)
          switch (state._tag) {
            case "Connecting":
              return yield* record({
                lane: "Connection",
                text: `connecting (attempt ${state.attempt})`,
                phase: { name: "connecting", tone: "neutral" }
              })
            case "Ready": {
              const phase = { name: `Ready (generation ${state.generation})`, tone: "good" } as const
              if (!connected) {
                connected = true
                return yield* record({ lane: "Connection", text: `connected (generation ${state.generation})`, phase })
              }
              if (m.restoreAt !== undefined && m.readyAfterRestore === undefined) {
                yield* mark(() => ({ readyAfterRestore: { at, generation: state.generation } }))
              }
              return yield* record({
                lane: "Connection",
                text: `ready (generation ${state.generation})${afterRestore(at, m.restoreAt)}`,
                phase,
                milestone: `ready (generation ${state.generation})`
              })
            }
            case "Reconnecting":
              yield* mark((m) => ({ attempts: Math.max(m.attempts, state.attempt) }))
              return yield* record({
                lane: "Connection",
                text: state.attempt === 1
                  ? `disconnected: ${state.lastError.message}`
                  : `reconnecting, attempt ${state.attempt} (attempt ${state.attempt - 1}: ${state.lastError.message})`,
                phase: { name: "Reconnecting", tone: "waiting" }
              })
            case "Closed":
              return yield* record({ lane: "Connection", text: "closed", phase: { name: "closed", tone: "neutral" } })
          }
        })
      )
    )

    // Master: the node's registrations, its subscription streams and the task's status history, polled; each
    // poll's findings are recorded in the order of the master's own timestamps, so they print in time order.
    const seen = { generation: 0, subscriptions: 0, history: 0 }
    const task = yield* Ref.make<string | undefined>(undefined)
    const ended = yield* Deferred.make<Master.TaskInfo>()
    type Found = Timeline.Entry & { readonly at: number }
    const taskEntry = (id: string, change: Master.StatusChange, m: Marks): Found => {
      const at = change.at - recorder.start
      switch (change.status) {
        case "PENDING":
          return {
            lane: "Task",
            at: change.at,
            text: `task created during the outage (${id}, PENDING)`,
            phase: { name: "pending", tone: "waiting" },
            milestone: "task created"
          }
        case "ASSIGNED":
          return {
            lane: "Task",
            at: change.at,
            text: `task fetched by the worker (ASSIGNED)${afterRestore(at, m.restoreAt)}`,
            phase: { name: "fetched", tone: "active" }
          }
        case "RUNNING":
          return {
            lane: "Task",
            at: change.at,
            text: `task running${afterRestore(at, m.restoreAt)}`,
            phase: { name: "running", tone: "active" },
            milestone: "task running"
          }
        default:
          return {
            lane: "Task",
            at: change.at,
            text: `task ${change.status === "FINISHED" ? "finished" : change.status}${
              change.error === undefined || change.error === "" ? "" : `: ${change.error}`
            }`,
            phase: { name: change.status.toLowerCase(), tone: change.status === "FINISHED" ? "done" : "fault" }
          }
      }
    }
    const watchMaster = Effect.gen(function*() {
      const found: Array<Found> = []
      const node = (yield* master.nodes).find((n) => n.key === nodeKey)
      if (node !== undefined && node.generation !== seen.generation) {
        seen.generation = node.generation
        const text = `node ${nodeKey} registered (generation ${node.generation})`
        found.push({ lane: "Master", at: node.registeredAt, text })
      }
      const id = yield* Ref.get(task)
      const info = id === undefined ? undefined : yield* master.task(id)
      if (id !== undefined && info !== undefined) {
        const m = yield* Ref.get(marks)
        for (const change of info.history.slice(seen.history)) {
          if (change.status === "RUNNING") yield* mark(() => ({ taskRunning: change.at - recorder.start }))
          found.push(taskEntry(id, change, m))
        }
        seen.history = info.history.length
      }
      for (const entry of found.sort((a, b) => a.at - b.at)) yield* record(entry)
      // The master keeps no time for these: they are recorded as seen.
      const subscriptions = yield* master.subscriptions
      if (subscriptions !== seen.subscriptions) {
        const what = subscriptions > seen.subscriptions ? "node subscribed" : "subscription ended"
        seen.subscriptions = subscriptions
        yield* record({
          lane: "Master",
          text: `${what} (${subscriptions} stream${subscriptions === 1 ? "" : "s"} open)`
        })
      }
      if (info !== undefined && ["FINISHED", "ERROR", "CANCELLED"].includes(info.status)) {
        yield* mark(() => ({ taskEnded: info }))
        yield* Deferred.succeed(ended, info)
      }
    }).pipe(Effect.zipRight(Effect.sleep(pollEvery)), Effect.forever)

    // The watchers live in a scope of their own, closed before the worker's, so the summary is the last word.
    yield* Effect.scoped(
      Effect.gen(function*() {
        yield* Effect.forkScoped(watchNetwork)
        yield* Effect.forkScoped(watchConnection)
        yield* Effect.forkScoped(watchMaster)

        const online = yield* conn.changes.pipe(
          Stream.filter((state) => state._tag === "Ready"),
          Stream.runHead,
          Effect.timeoutOption("15 seconds")
        )
        if (Option.isNone(online)) return yield* new DemoError({ message: "the worker did not connect within 15 s" })
        yield* Effect.sleep(steady)

        const outage = Math.round(options.outage * 1000)
        // The seed created its task 9 s into a 20 s outage.
        const createAfter = Math.round(outage * 0.45)
        yield* (options.fault === "reset" ? proxy.reset : proxy.blackhole)
        yield* Effect.sleep(Duration.millis(createAfter))

        const id = yield* master.enqueue({ payload: JSON.stringify({ message: "hello from CLS-001" }) })
        yield* Ref.set(task, id)
        yield* Effect.sleep(Duration.millis(outage - createAfter))

        yield* proxy.pass
        yield* Deferred.await(ended).pipe(Effect.timeoutOption(Duration.millis(taskBound)))
        // The last reports and polls land.
        yield* Effect.sleep("200 millis")
      })
    )
    return { marks: yield* Ref.get(marks), end: yield* recorder.elapsed, status: yield* handler.status }
  })

// -------------------------------------------------------------------------------------------------
// Summary, verdict, picture
// -------------------------------------------------------------------------------------------------

const verdictOf = (marks: Marks): { readonly pass: boolean; readonly text: string } => {
  const { restoreAt, taskRunning, taskEnded } = marks
  if (restoreAt === undefined) return { pass: false, text: "FAIL: the network was never restored" }
  if (taskRunning === undefined) {
    return {
      pass: false,
      text: `FAIL: the task created during the outage did not start within ${
        Timeline.formatSeconds(taskBound)
      } of the network coming back`
    }
  }
  const delay = Math.max(0, taskRunning - restoreAt)
  // Two decimals: a start near the target must not read as "5.0 s (target 5.0 s)" and fail.
  const started = `the task created during the outage started ${
    Timeline.formatSeconds(delay, 2)
  } after the network came back (target ${Timeline.formatSeconds(target, 0)})`
  if (delay > target) return { pass: false, text: `FAIL: ${started}` }
  if (taskEnded === undefined) return { pass: false, text: `FAIL: ${started}, but did not finish` }
  if (taskEnded.status !== "FINISHED") return { pass: false, text: `FAIL: ${started}, but ended ${taskEnded.status}` }
  return { pass: true, text: `PASS: ${started}, no restart needed` }
}

const row = (label: string, value: string, detail = "") =>
  `  ${label.padEnd(32)}${value.padStart(9)}${detail === "" ? "" : `   ${detail}`}`

const main = (options: Options) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const counts: LogCounts = { warnings: 0, errors: 0, clientUnavailable: 0 }
    const recorder = yield* Timeline.make({ start, onEvent: (event) => Console.log(Timeline.line(event)) })
    yield* Console.log(
      `CLS-001 demo: ${options.fault} for ${options.outage} s, a task created ${
        Timeline.formatSeconds(options.outage * 450)
      } into the outage${options.verbose ? "" : " (--verbose shows the library's log lines)"}`
    )
    const { marks, end, status } = yield* Effect.scoped(scenario(options, recorder)).pipe(
      // Every log line goes through the demo's logger: the master's and the proxy's too, as they capture this runtime.
      Effect.locally(FiberRef.currentLoggers, HashSet.make(demoLogger(start, options.verbose, counts))),
      // Info, also with --verbose: the debug lines (a status every 5 s, fiber traces) bury the timeline.
      Logger.withMinimumLogLevel(LogLevel.Info)
    )
    const closed = (yield* recorder.elapsed) - end

    const verdict = verdictOf(marks)
    const { faultAt, restoreAt, readyAfterRestore, taskRunning } = marks
    const lines = ["", "summary"]
    if (faultAt !== undefined && restoreAt !== undefined) {
      const span = `${Timeline.formatElapsed(faultAt)} to ${Timeline.formatElapsed(restoreAt)}`
      lines.push(row(`outage (${options.fault})`, Timeline.formatSeconds(restoreAt - faultAt), span))
    }
    if (restoreAt !== undefined) {
      const after = (at: number | undefined) => (at === undefined ? "never" : Timeline.formatSeconds(at - restoreAt))
      lines.push(
        row(
          "restore -> connection Ready",
          after(readyAfterRestore?.at),
          readyAfterRestore === undefined ? "" : `generation ${readyAfterRestore.generation}`
        ),
        row("restore -> task RUNNING", after(taskRunning))
      )
      if (readyAfterRestore !== undefined && taskRunning !== undefined) {
        lines.push(row("connection Ready -> task RUNNING", Timeline.formatSeconds(taskRunning - readyAfterRestore.at)))
      }
    }
    lines.push(
      row("total", Timeline.formatSeconds(end), `then everything closed in ${Timeline.formatSeconds(closed)}`),
      `  worker: ${
        Math.max(0, marks.attempts - 1)
      } failed reconnection attempts, ${status.fetchFailures} failed fetches, ${counts.clientUnavailable} "client unavailable" errors; ${counts.warnings} warnings and ${counts.errors} errors logged`,
      "",
      verdict.text
    )
    yield* Console.log(lines.join("\n"))

    const events = yield* recorder.events
    const picture = Timeline.renderSvg(Timeline.chart(events, {
      title: `CLS-001: a task created during a ${options.outage} s ${options.fault} outage`,
      subtitle: verdict.text,
      lanes: ["Network", "Connection", "Task"],
      // A little room after the last event, so its phase shows.
      end: end + 1500
    }))
    const path = resolve(options.out)
    yield* Effect.flatMap(FileSystem.FileSystem, (fs) => fs.writeFileString(path, picture)).pipe(
      Effect.provide(NodeFileSystem.layer)
    )
    yield* Console.log(`timeline written to ${path}`)
    if (!verdict.pass) yield* Effect.sync(() => (process.exitCode = 1))
  })

// DEMO_FAULT and DEMO_OUTAGE set the defaults the flags override; a bad value names its variable.
const fromEnv = Effect.runSync(Effect.either(Config.all({
  fault: Config.withDefault(FaultProxy.faultKind("DEMO_FAULT"), "reset" as const),
  outage: Config.withDefault(
    Config.integer("DEMO_OUTAGE").pipe(
      Config.validate({ message: "expected seconds from 1 to 300", validation: (n) => n >= 1 && n <= 300 })
    ),
    10
  )
})))
const flags = Either.isLeft(fromEnv)
  ? Either.left(String(fromEnv.left))
  : parseFlags(process.argv.slice(2), fromEnv.right)
if (Either.isLeft(flags)) {
  console.error(`demo: ${flags.left}\n\n${usage}`)
  process.exitCode = 2
} else if (flags.right === "help") {
  console.log(usage)
} else {
  NodeRuntime.runMain(main(flags.right))
}
