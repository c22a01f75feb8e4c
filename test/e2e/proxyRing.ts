/**
 * The proxy ring: a worker reaching its master through real nginx
 * (`grpc_pass`), as a worker behind a Kubernetes ingress does. The master is
 * the package's master command (`src/bin/master.ts`) as a process of its own
 * on a fixed port, so it can be killed and started again with empty memory
 * while nginx, and the worker's HTTP/2 connection to it, stay up. The worker
 * runs in the test's process, so every run of every task is counted.
 *
 * `startRing` builds the ring in the current scope; the scenarios drive it with
 * `stopMaster` / `startMaster` (or `restartMaster`), `enqueue`, `cancel`,
 * `forget`-style admin calls through `api`, and read it with `taskHistory`,
 * `nodes`, `readyz` and `runsOf`. On a failed test the ring prints its
 * timeline (master, worker, nginx); `PROXY_RING_LOG=<file>` writes it always.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import type { ConnectionState } from "../../src/ConnectionState.js"
import * as GrpcChannel from "../../src/GrpcChannel.js"
import * as Health from "../../src/Health.js"
import { NodeHealth } from "../../src/node/index.js"
import * as Outbox from "../../src/Outbox.js"
import * as TaskHandler from "../../src/TaskHandler.js"
import * as TaskSource from "../../src/TaskSource.js"
import { MasterLink } from "../fixtures/masterLink.js"
import * as Nginx from "../fixtures/nginx.js"
import { admin, poll, type Running, spawn, tsx } from "./processes.js"

/** A ring task's payload: a key unique to this enqueue, and whether the run holds until it is cancelled. */
const RingTask = Schema.Struct({ key: Schema.String, hold: Schema.Boolean })

/** One run of a task on the worker. */
export interface Run {
  readonly key: string
  readonly taskId: string
  readonly startedAt: number
  /** How it ended, when it has: returned, or interrupted (a cancel, the worker's stop). */
  ended: { readonly how: "finished" | "interrupted"; readonly at: number } | undefined
}

/** A task enqueued through the ring. Task ids restart at `task-1` with every new master: `key` is unique. */
export interface RingTask {
  readonly id: string
  readonly key: string
  /** Which master process it was enqueued at (1 for the first, counting starts). */
  readonly master: number
}

export interface StatusChange {
  readonly status: string
  readonly at: number
  readonly node?: string | undefined
  readonly error?: string | undefined
}

export interface TaskView {
  readonly id: string
  readonly status: string
  readonly handedOut: number
  readonly history: ReadonlyArray<StatusChange>
}

export interface NodeView {
  readonly key: string
  readonly online: boolean
  readonly generation: number
  /** Epoch millis of its last registration, from the master's clock. */
  readonly registeredAt: number
}

export type CancelOutcome = "NotHandedOut" | "Notified" | "NoSubscription" | "AlreadyEnded"

/** One master process. */
export interface MasterProcess {
  /** 1 for the first master, 2 for the next... */
  readonly number: number
  readonly process: Running
  /** When its process logged that it serves (epoch millis, its own clock): gRPC is bound. */
  readonly servingAt: number
  readonly api: <A = unknown>(method: "GET" | "POST", path: string, body?: unknown) => Effect.Effect<A, Error>
}

export interface TimelineLine {
  readonly at: number
  readonly who: string
  readonly message: string
}

export interface Options {
  /** The worker's node key. Default `proxied`. */
  readonly nodeKey?: string | undefined
  /** Idle connections nginx keeps to the master (`keepalive`). Default 320, ingress-nginx's; 0 for none. */
  readonly upstreamKeepalive?: number | undefined
  /** nginx's `grpc_read_timeout` and `grpc_send_timeout`. Default 60 s each, as nginx's and ingress-nginx's. */
  readonly readTimeout?: Duration.DurationInput | undefined
  readonly sendTimeout?: Duration.DurationInput | undefined
  /** Extra environment for every master process (`MASTER_REDELIVER_AFTER`, `LOG_LEVEL`...). */
  readonly masterEnv?: Record<string, string> | undefined
}

/**
 * Starts nginx, a master process behind it and an in-process worker dialing
 * nginx, for as long as the scope; returns when the worker is registered,
 * subscribed and ready.
 */
export const startRing = (options: Options = {}) =>
  Effect.gen(function*() {
    const nodeKey = options.nodeKey ?? "proxied"
    const ringScope = yield* Effect.scope
    const masterPort = yield* Nginx.freePort
    const nginx = yield* Nginx.make({
      upstream: `127.0.0.1:${masterPort}`,
      upstreamKeepalive: options.upstreamKeepalive ?? 320,
      readTimeout: options.readTimeout,
      sendTimeout: options.sendTimeout
    })

    // ---------------------------------------------------------------------------------------------
    // The master: a process of its own on `masterPort`, each start with empty memory
    // ---------------------------------------------------------------------------------------------
    const masters: Array<MasterProcess> = []
    // Made before the worker, so the ring closes the worker, then its masters, then nginx.
    const mastersScope = yield* Scope.fork(ringScope, ExecutionStrategy.sequential)
    let current: { readonly master: MasterProcess; readonly scope: Scope.CloseableScope } | undefined

    const startMaster: Effect.Effect<MasterProcess, Error, CommandExecutor.CommandExecutor> = Effect.gen(function*() {
      if (current !== undefined) return yield* Effect.fail(new Error("a master runs already: stop it first"))
      const number = masters.length + 1
      const socket = join(nginx.directory, `admin-${number}.sock`)
      const scope = yield* Scope.fork(mastersScope, ExecutionStrategy.sequential)
      const child = yield* spawn(Command.make(...tsx("src/bin/master.ts")), {
        MASTER_PORT: String(masterPort),
        ADMIN_SOCKET: socket,
        LOG_FORMAT: "json",
        LOG_LEVEL: "Debug",
        ...options.masterEnv
      }).pipe(Scope.extend(scope))
      const api = <A = unknown>(method: "GET" | "POST", path: string, body?: unknown) =>
        admin<A>(socket, method, path, body)
      const servingLine = yield* poll(
        Effect.sync(() => child.lines.find((line) => line.message.startsWith("master serving on"))),
        (line) => line !== undefined,
        "30 seconds",
        `master ${number} serving`
      ).pipe(Effect.tapError(() => Scope.close(scope, Exit.void)))
      yield* poll(api("GET", "/nodes"), () => true, "10 seconds", `master ${number}'s admin API`)
      const master: MasterProcess = { number, process: child, servingAt: servingLine!.at, api }
      masters.push(master)
      current = { master, scope }
      return master
    })

    /** Stops the master process with `signal` and waits until it has exited. */
    const stopMaster = (signal: "SIGKILL" | "SIGTERM") =>
      Effect.gen(function*() {
        if (current === undefined) return yield* Effect.fail(new Error("no master runs"))
        const { master, scope } = current
        current = undefined
        yield* master.process.kill(signal)
        yield* poll(master.process.running, (running) => !running, "15 seconds", `master ${master.number} exited`)
        yield* Scope.close(scope, Exit.void)
        return { stoppedAt: Date.now() }
      })

    const currentMaster = Effect.suspend(() =>
      current === undefined ? Effect.fail(new Error("no master runs")) : Effect.succeed(current.master)
    )
    const api = <A = unknown>(method: "GET" | "POST", path: string, body?: unknown) =>
      Effect.flatMap(currentMaster, (master) => master.api<A>(method, path, body))

    // ---------------------------------------------------------------------------------------------
    // The worker: in this process, dialing nginx, with the library's defaults (but a short drain); every run
    // recorded
    // ---------------------------------------------------------------------------------------------
    const runs: Array<Run> = []
    const workerLines: Array<TimelineLine> = []
    const states: Array<{ readonly at: number; readonly state: ConnectionState }> = []
    const readyzLog: Array<{ readonly at: number; readonly status: number }> = []
    const run = (task: TaskHandler.Task<typeof RingTask.Type>) =>
      Effect.suspend(() => {
        const record: Run = { key: task.payload.key, taskId: task.id, startedAt: Date.now(), ended: undefined }
        runs.push(record)
        const end = (how: "finished" | "interrupted") =>
          Effect.sync(() => void (record.ended = { how, at: Date.now() }))
        return (task.payload.hold ? Effect.never : Effect.void).pipe(
          Effect.onExit((exit) => end(Exit.isSuccess(exit) ? "finished" : "interrupted"))
        )
      })
    const capture = Logger.make(({ annotations, logLevel, message }) => {
      const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
      const fiber = annotations.pipe((map) => {
        for (const [key, value] of map) if (key === "fiber") return ` [${String(value)}]`
        return ""
      })
      workerLines.push({ at: Date.now(), who: "worker", message: `${logLevel.label}${fiber} ${text}` })
    })
    const WorkerLive = NodeHealth.layer({ host: "127.0.0.1", port: 0, connection: MasterLink }).pipe(
      // A held task left running by a failed test is interrupted at once when the ring closes, not after 30 s.
      Layer.provideMerge(TaskHandler.layer({ connection: MasterLink, payload: RingTask, run, drainGrace: "1 second" })),
      Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey })),
      Layer.provideMerge(MasterLink.layer({ address: nginx.address })),
      Layer.provide(GrpcChannel.layer),
      Layer.provide(Outbox.layerMemory)
    )

    const dump = (lines: ReadonlyArray<TimelineLine>) =>
      lines.map((line) => `${new Date(line.at).toISOString()} ${line.who.padEnd(8)} ${line.message}`).join("\n")
    const timeline = Effect.gen(function*() {
      const lines: Array<TimelineLine> = [...workerLines]
      for (const master of masters) {
        for (const line of master.process.lines) {
          lines.push({ at: line.at, who: `master${master.number}`, message: `${line.level} ${line.message}` })
        }
      }
      for (const line of (yield* nginx.errorLog).split("\n").filter((l) => l !== "")) {
        const at = Date.parse(line.slice(0, 19).replace(/\//g, "-").replace(" ", "T"))
        lines.push({ at: Number.isNaN(at) ? 0 : at, who: "nginx", message: line.slice(20) })
      }
      for (const line of (yield* nginx.accessLog).split("\n").filter((l) => l !== "")) {
        const [seconds, ...rest] = line.split(" ")
        lines.push({ at: Math.round(Number(seconds) * 1000) || 0, who: "nginx", message: rest.join(" ") })
      }
      for (const { at, status } of readyzLog) lines.push({ at, who: "readyz", message: String(status) })
      return dump(lines.sort((a, b) => a.at - b.at))
    })
    // Added before the worker, so it runs after the worker stopped: its last lines are in.
    yield* Effect.addFinalizer((exit) =>
      Effect.gen(function*() {
        const file = process.env["PROXY_RING_LOG"]
        if (Exit.isSuccess(exit) && file === undefined) return
        const text = yield* timeline
        if (file !== undefined) writeFileSync(file, `${text}\n`)
        if (Exit.isFailure(exit)) console.log(`the proxy ring's timeline:\n${text}`)
      })
    )

    yield* startMaster
    const context = yield* Layer.build(WorkerLive).pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
      Effect.provide(Logger.minimumLogLevel(LogLevel.Debug))
    )
    const health = Context.get(context, Health.Health)
    const connection = Context.get(context, MasterLink)
    yield* connection.changes.pipe(
      Stream.runForEach((state) => Effect.sync(() => void states.push({ at: Date.now(), state }))),
      Effect.forkScoped
    )

    const readyz = Effect.tryPromise(async () => {
      const response = await fetch(`${health.url}/readyz`, { signal: AbortSignal.timeout(5_000) })
      await response.text()
      return response.status
    })
    // /readyz every 100 ms for the ring's life (0: no answer): what a Kubernetes readiness probe would have seen.
    yield* readyz.pipe(
      Effect.orElseSucceed(() => 0),
      Effect.flatMap((status) => Effect.sync(() => void readyzLog.push({ at: Date.now(), status }))),
      Effect.zipRight(Effect.sleep("100 millis")),
      Effect.forever,
      Effect.forkScoped
    )
    const nodes = api<ReadonlyArray<NodeView>>("GET", "/nodes")
    const subscriptions = Effect.map(api<{ readonly open: number }>("GET", "/subscriptions"), ({ open }) => open)

    let enqueued = 0
    const enqueue = (task: { readonly hold?: boolean } = {}) =>
      Effect.gen(function*() {
        const master = yield* currentMaster
        const key = `m${master.number}-${++enqueued}`
        const { id } = yield* master.api<{ id: string }>("POST", "/tasks", {
          payload: { key, hold: task.hold ?? false }
        })
        return { id, key, master: master.number } satisfies RingTask
      })
    const ofCurrent = (task: RingTask) =>
      Effect.flatMap(currentMaster, (master) =>
        master.number === task.master
          ? Effect.succeed(master)
          : Effect.fail(new Error(`${task.key} was enqueued at master ${task.master}, which is gone`)))
    const taskHistory = (task: RingTask) =>
      Effect.gen(function*() {
        const master = yield* ofCurrent(task)
        const tasks = yield* master.api<ReadonlyArray<TaskView>>("GET", "/tasks")
        const view = tasks.find((t) => t.id === task.id)
        return view ?? (yield* Effect.fail(new Error(`${task.id} not found at master ${master.number}`)))
      })
    const cancel = (task: RingTask) =>
      Effect.flatMap(ofCurrent(task), (master) =>
        Effect.map(
          master.api<{ readonly outcome: CancelOutcome }>("POST", "/cancel", { id: task.id }),
          ({ outcome }) => outcome
        ))

    /** Waits until the node is registered at the current master and its subscription is open. */
    const joined = (within: Duration.DurationInput) =>
      poll(
        Effect.all([nodes, subscriptions]),
        ([known, open]) => known.some((node) => node.key === nodeKey) && open > 0,
        within,
        `node ${nodeKey} registered and subscribed at the master`
      )
    yield* joined("30 seconds")
    yield* poll(readyz, (status) => status === 200, "30 seconds", "/readyz 200")

    return {
      nodeKey,
      nginx,
      masterPort,
      /** The master running now. */
      master: currentMaster,
      masters: masters as ReadonlyArray<MasterProcess>,
      startMaster,
      stopMaster,
      /** Stops the master with `signal`, then starts a new one (empty memory) on the same port. */
      restartMaster: ({ signal }: { readonly signal: "SIGKILL" | "SIGTERM" }) =>
        Effect.flatMap(
          stopMaster(signal),
          ({ stoppedAt }) => Effect.map(startMaster, (master) => ({ stoppedAt, master }))
        ),
      api,
      enqueue,
      taskHistory,
      cancel,
      nodes,
      subscriptions,
      joined,
      readyz,
      /** The /readyz answers sampled every 100 ms from `from` (epoch millis) until `to`. */
      readyzBetween: (from: number, to: number) => readyzLog.filter(({ at }) => at >= from && at < to),
      /** The worker's connection to nginx: its state now, and every state it has had. */
      connection,
      states: states as ReadonlyArray<{ readonly at: number; readonly state: ConnectionState }>,
      runs: runs as ReadonlyArray<Run>,
      runsOf: (task: RingTask) => runs.filter((run) => run.key === task.key),
      workerLines: workerLines as ReadonlyArray<TimelineLine>,
      timeline
    }
  })

export type Ring = Effect.Effect.Success<ReturnType<typeof startRing>>
