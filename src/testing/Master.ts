/**
 * An embedded master for tests and demos: a real grpc-js server of the worker
 * protocol (`proto/worker.proto`) with an in-memory node registry and task
 * queue, and the standard `grpc.health.v1` service. It can be stopped,
 * restarted on the same port with its state kept, made to fail calls, and
 * asked to cancel a task.
 *
 * Every handler runs as an Effect on the runtime captured by `make`, so the
 * master reads the caller's `Clock` and `Random` (a seeded `Random` makes
 * injected failures reproducible).
 *
 * How it answers:
 * - `FetchTask`: the node's own pending task (enqueued with `node`), else an
 *   unassigned one, by priority descending then creation order; it becomes
 *   `ASSIGNED` to the node and is never handed out again. No task: `task` is null.
 * - `ReportStatus`: `DUPLICATE` for an idempotency key accepted before, `STALE`
 *   unless the status moves forward, else `ACCEPTED`. A report for a task not
 *   handed out to that node is `FAILED_PRECONDITION`; workers report only
 *   RUNNING, FINISHED, ERROR or CANCELLED.
 * - `SendHeartbeat` and `Subscribe` need a registered node (`NOT_FOUND`).
 * - Empty `node_key`, `task_id` or `idempotency_key`, or an unknown status:
 *   `INVALID_ARGUMENT`; an unknown task: `NOT_FOUND`.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { HealthImplementation } from "grpc-health-check"
import * as Worker from "../protocol/Worker.js"

/**
 * A task's status on the master. Moves only forward:
 * `PENDING` -> `ASSIGNED` -> `RUNNING` -> `FINISHED` | `ERROR` | `CANCELLED`.
 *
 * @since 0.1.0
 * @category models
 */
export type TaskStatus = Exclude<Worker.TaskStatus, "TASK_STATUS_UNSPECIFIED">

/**
 * One accepted status of a task.
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusChange {
  readonly status: TaskStatus
  /** Epoch millis, from the master's `Clock`. */
  readonly at: number
  /** The node that caused the change; `undefined` for the master's own changes (enqueue, cancel). */
  readonly node: string | undefined
  /** The reported error, with `ERROR`. */
  readonly error: string | undefined
}

/**
 * A snapshot of one task.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskInfo {
  readonly id: string
  readonly payload: string
  readonly priority: number
  /** Epoch millis. */
  readonly createdAt: number
  readonly status: TaskStatus
  /** The node the task was enqueued for, or handed out to. */
  readonly node: string | undefined
  /** How many times `FetchTask` handed it out: never more than 1. */
  readonly handedOut: number
  /** The accepted statuses, oldest first, starting with `PENDING`. */
  readonly history: ReadonlyArray<StatusChange>
}

/**
 * A snapshot of one registered node.
 *
 * @since 0.1.0
 * @category models
 */
export interface NodeInfo {
  readonly key: string
  readonly name: string
  /** Heard from (registered or heartbeat) within two heartbeat intervals. */
  readonly online: boolean
  /** The generation of its last registration. */
  readonly generation: number
  readonly maxRunners: number
  /** The running count of its last heartbeat. */
  readonly running: number
  /** Epoch millis of its last registration. */
  readonly registeredAt: number
  /** Epoch millis of its last heartbeat. */
  readonly lastHeartbeat: number | undefined
}

/**
 * What `cancel` did. Every outcome but `AlreadyEnded` leaves the task `CANCELLED`.
 *
 * - `NotHandedOut`: the task was still pending; no node had it.
 * - `Notified`: `CancelTask` was written to the newest subscription of the task's node.
 * - `NoSubscription`: the task's node has no open subscription to tell.
 * - `AlreadyEnded`: the task had finished, failed or been cancelled; nothing changed.
 *
 * @since 0.1.0
 * @category models
 */
export type CancelOutcome = "NotHandedOut" | "Notified" | "NoSubscription" | "AlreadyEnded"

/**
 * @since 0.1.0
 * @category models
 */
export interface EnqueueOptions {
  /** Sent to the worker as is; the protocol says JSON. */
  readonly payload: string
  /** An int32; higher is handed out first. Default 0. */
  readonly priority?: number | undefined
  /** Hand the task out to this node only. */
  readonly node?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** 0 picks a free port; `restart` binds the same port again. Default 0. */
  readonly port?: number | undefined
  /** Default `127.0.0.1`. */
  readonly host?: string | undefined
  /** A node not heard from within two intervals is offline. Default 15 s. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** The fraction (0 to 1) of Register, SendHeartbeat, FetchTask and ReportStatus calls failed with UNAVAILABLE. Default 0. */
  readonly failureRate?: number | undefined
  /** Merged over {@link defaultServerOptions}; `grpc.enable_channelz` stays on (see there). */
  readonly serverOptions?: grpc.ServerOptions | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  port: 0,
  host: "127.0.0.1",
  heartbeatInterval: Duration.seconds(15),
  failureRate: 0
} as const

/**
 * Server options that accept the workers' keepalive pings (every 20 s, also
 * without calls). grpc-js 1.14 servers enforce no ping policy; the options say
 * the same to servers that do, and a server replacing this one must keep them.
 *
 * Channelz is never disabled: grpc-js 1.14's `forceShutdown` destroys only the
 * sessions it tracks for channelz, so with `grpc.enable_channelz: 0` a stopped
 * master would keep serving the connections it already had.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultServerOptions: grpc.ServerOptions = {
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  "grpc.http2.max_ping_strikes": 0
}

/**
 * A master operation that could not be done.
 *
 * @since 0.1.0
 * @category errors
 */
export class MasterError extends Data.TaggedError("MasterError")<{
  readonly reason: "InvalidOption" | "BindFailed" | "UnknownTask"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The embedded master.
 *
 * @since 0.1.0
 * @category models
 */
export interface Master {
  /** `host:port`, what workers dial. */
  readonly address: string
  readonly port: number
  /** Shuts the server down at once, dropping every connection; the state is kept. Idempotent. */
  readonly stop: Effect.Effect<void>
  /** Stops the server if it runs, then binds the same port again, with the state kept. */
  readonly restart: Effect.Effect<void, MasterError>
  /** Adds a `PENDING` task and returns its id. Works while stopped too. */
  readonly enqueue: (options: EnqueueOptions) => Effect.Effect<string, MasterError>
  /** Every task, in creation order. */
  readonly tasks: Effect.Effect<ReadonlyArray<TaskInfo>>
  readonly task: (id: string) => Effect.Effect<TaskInfo, MasterError>
  /** Every registered node, in registration order. */
  readonly nodes: Effect.Effect<ReadonlyArray<NodeInfo>>
  /** How many `Subscribe` streams are open. */
  readonly subscriptions: Effect.Effect<number>
  /** Sets the health of `""` and of both worker services to SERVING or NOT_SERVING. */
  readonly setServing: (serving: boolean) => Effect.Effect<void>
  readonly setFailureRate: (rate: number) => Effect.Effect<void, MasterError>
  /** Ends the task `CANCELLED`, and tells the newest subscription of its node. */
  readonly cancel: (id: string) => Effect.Effect<CancelOutcome, MasterError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const Master: Context.Tag<Master, Master> = Context.GenericTag<Master>("effect-grpc-resilience/testing/Master")

// -------------------------------------------------------------------------------------------------
// State: one immutable value in a Ref, changed by pure transitions
// -------------------------------------------------------------------------------------------------

interface TaskRecord extends TaskInfo {
  readonly seq: number
  readonly reportKeys: ReadonlySet<string>
}

interface NodeRecord {
  readonly seq: number
  readonly key: string
  readonly name: string
  readonly generation: number
  readonly maxRunners: number
  readonly running: number
  readonly registeredAt: number
  readonly lastHeartbeat: number | undefined
}

type SubscribeCall = grpc.ServerWritableStream<Worker.SubscribeRequest, Worker.MasterMessage>

interface Subscription {
  readonly id: number
  readonly node: string
  readonly generation: number
  readonly call: SubscribeCall
}

interface State {
  /** How many tasks and nodes were ever added: ids and creation order. */
  readonly taskCount: number
  readonly nodeCount: number
  readonly tasks: HashMap.HashMap<string, TaskRecord>
  readonly nodes: HashMap.HashMap<string, NodeRecord>
  /** By node, then generation: an old stream's end removes only its own entry. */
  readonly subscriptions: HashMap.HashMap<string, HashMap.HashMap<number, Subscription>>
}

const emptyState: State = {
  taskCount: 0,
  nodeCount: 0,
  tasks: HashMap.empty(),
  nodes: HashMap.empty(),
  subscriptions: HashMap.empty()
}

// A status gRPC error the handler answers with.
class Rejected extends Data.TaggedError("Rejected")<{
  readonly code: grpc.status
  readonly details: string
}> {}

const rank: Record<TaskStatus, number> = {
  PENDING: 0,
  ASSIGNED: 1,
  RUNNING: 2,
  FINISHED: 3,
  ERROR: 3,
  CANCELLED: 3
}

const reportable: ReadonlySet<unknown> = new Set<TaskStatus>(["RUNNING", "FINISHED", "ERROR", "CANCELLED"])

const isEnded = (status: TaskStatus) => rank[status] === 3

const toInfo = ({ reportKeys: _keys, seq: _seq, ...info }: TaskRecord): TaskInfo => info

const change = (
  task: TaskRecord,
  status: TaskStatus,
  at: number,
  node: string | undefined,
  error?: string
): TaskRecord => ({
  ...task,
  status,
  history: [...task.history, { status, at, node, error: error === undefined || error === "" ? undefined : error }]
})

const putTask = (state: State, task: TaskRecord): State => ({ ...state, tasks: HashMap.set(state.tasks, task.id, task) })

// The node's own pending tasks first, then unassigned ones; by priority descending, then creation order.
const nextTask = (state: State, node: string): TaskRecord | undefined => {
  let best: TaskRecord | undefined
  const score = (task: TaskRecord) => (task.node === node ? 1 : 0)
  for (const task of HashMap.values(state.tasks)) {
    if (task.status !== "PENDING" || (task.node !== undefined && task.node !== node)) continue
    if (
      best === undefined ||
      score(task) > score(best) ||
      (score(task) === score(best) &&
        (task.priority > best.priority || (task.priority === best.priority && task.seq < best.seq)))
    ) best = task
  }
  return best
}

const fetchTask = (node: string, now: number) => (state: State): readonly [TaskRecord | undefined, State] => {
  const task = nextTask(state, node)
  if (task === undefined) return [undefined, state]
  const assigned = change({ ...task, node, handedOut: task.handedOut + 1 }, "ASSIGNED", now, node)
  return [assigned, putTask(state, assigned)]
}

const reportStatus = (request: Worker.ReportStatusRequest, status: TaskStatus, now: number) =>
(state: State): readonly [Worker.ReportOutcome | Rejected, State] => {
  const task = Option.getOrUndefined(HashMap.get(state.tasks, request.task_id))
  if (task === undefined) {
    return [new Rejected({ code: grpc.status.NOT_FOUND, details: `task ${request.task_id} not found` }), state]
  }
  if (task.handedOut === 0 || task.node !== request.node_key) {
    const details = `task ${task.id} was not handed out to node ${request.node_key}`
    return [new Rejected({ code: grpc.status.FAILED_PRECONDITION, details }), state]
  }
  if (task.reportKeys.has(request.idempotency_key)) return ["DUPLICATE", state]
  // Forward only: a late report never overwrites a newer status.
  if (rank[status] <= rank[task.status]) return ["STALE", state]
  const next = change(
    { ...task, reportKeys: new Set([...task.reportKeys, request.idempotency_key]) },
    status,
    now,
    request.node_key,
    request.error
  )
  return ["ACCEPTED", putTask(state, next)]
}

const newestSubscription = (state: State, node: string): Subscription | undefined => {
  let newest: Subscription | undefined
  for (const sub of HashMap.values(Option.getOrElse(HashMap.get(state.subscriptions, node), HashMap.empty))) {
    if (newest === undefined || sub.generation > newest.generation) newest = sub
  }
  return newest
}

const cancelTask = (id: string, now: number) =>
(state: State): readonly [MasterError | CancelOutcome | Subscription | undefined, State] => {
  const task = Option.getOrUndefined(HashMap.get(state.tasks, id))
  if (task === undefined) return [new MasterError({ reason: "UnknownTask", message: `task ${id} not found` }), state]
  if (isEnded(task.status)) return ["AlreadyEnded", state]
  const next = putTask(state, change(task, "CANCELLED", now, undefined))
  if (task.handedOut === 0) return ["NotHandedOut", next]
  return [task.node === undefined ? undefined : newestSubscription(state, task.node), next]
}

const addSubscription = (sub: Subscription) => (state: State): readonly [Subscription | undefined, State] => {
  const byGeneration = Option.getOrElse(HashMap.get(state.subscriptions, sub.node), HashMap.empty<number, Subscription>)
  const replaced = Option.getOrUndefined(HashMap.get(byGeneration, sub.generation))
  return [replaced, {
    ...state,
    subscriptions: HashMap.set(state.subscriptions, sub.node, HashMap.set(byGeneration, sub.generation, sub))
  }]
}

// Removes the entry only while it is still this stream's, never a newer one of the same node.
const removeSubscription = (sub: Subscription) => (state: State): State => {
  const byGeneration = Option.getOrUndefined(HashMap.get(state.subscriptions, sub.node))
  const current = byGeneration === undefined ? undefined : Option.getOrUndefined(HashMap.get(byGeneration, sub.generation))
  if (byGeneration === undefined || current?.id !== sub.id) return state
  const rest = HashMap.remove(byGeneration, sub.generation)
  return {
    ...state,
    subscriptions: HashMap.isEmpty(rest)
      ? HashMap.remove(state.subscriptions, sub.node)
      : HashMap.set(state.subscriptions, sub.node, rest)
  }
}

// -------------------------------------------------------------------------------------------------
// The server
// -------------------------------------------------------------------------------------------------

const invalid = (option: string, message: string) =>
  new MasterError({ reason: "InvalidOption", message: `invalid option ${option}: ${message}` })

const validRate = (rate: number): Effect.Effect<number, MasterError> =>
  typeof rate === "number" && rate >= 0 && rate <= 1
    ? Effect.succeed(rate)
    : Effect.fail(invalid("failureRate", `expected a number from 0 to 1, got ${String(rate)}`))

const validInterval = (input: Duration.DurationInput): Effect.Effect<Duration.Duration, MasterError> =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(invalid("heartbeatInterval", `not a duration: ${JSON.stringify(input)}`)),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.greaterThan(duration, Duration.zero)
        ? Effect.succeed(duration)
        : Effect.fail(invalid("heartbeatInterval", `must be positive and finite, got ${Duration.format(duration)}`))
  })

const isInt32 = (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31

const bind = (server: grpc.Server, target: string): Effect.Effect<number, MasterError> =>
  Effect.async<number, MasterError>((resume) => {
    server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (error, port) =>
      resume(
        error === null ? Effect.succeed(port) : Effect.fail(
          new MasterError({ reason: "BindFailed", message: `cannot bind ${target}: ${error.message}`, cause: error })
        )
      ))
  })

const toStatus = (cause: Cause.Cause<Rejected>): grpc.StatusObject => {
  const rejected = Cause.failureOption(cause)
  return {
    code: Option.isSome(rejected) ? rejected.value.code : grpc.status.INTERNAL,
    details: Option.isSome(rejected) ? rejected.value.details : `master failed: ${Cause.pretty(cause)}`,
    metadata: new grpc.Metadata()
  }
}

const required = (field: string, value: string): Effect.Effect<string, Rejected> =>
  value === ""
    ? Effect.fail(new Rejected({ code: grpc.status.INVALID_ARGUMENT, details: `${field} is empty` }))
    : Effect.succeed(value)

const notRegistered = (node: string) =>
  new Rejected({ code: grpc.status.NOT_FOUND, details: `node ${node} is not registered; call Register first` })

/**
 * Starts an embedded master in the current scope; closing the scope shuts it down.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Master, MasterError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? defaults.host
    const requestedPort = options.port ?? defaults.port
    if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
      return yield* Effect.fail(invalid("port", `expected an integer from 0 to 65535, got ${String(requestedPort)}`))
    }
    const heartbeatInterval = yield* validInterval(options.heartbeatInterval ?? defaults.heartbeatInterval)
    const offlineAfter = 2 * Duration.toMillis(heartbeatInterval)
    const failureRate = yield* Ref.make(yield* validRate(options.failureRate ?? defaults.failureRate))
    const serverOptions: grpc.ServerOptions = {
      ...defaultServerOptions,
      ...options.serverOptions,
      "grpc.enable_channelz": 1
    }
    const hostPart = host.includes(":") ? `[${host}]` : host

    // Handlers run on the caller's runtime: its Clock and Random, its logger.
    const runtime = yield* Effect.runtime<never>()
    const run = <A, E>(effect: Effect.Effect<A, E>, onExit: (exit: Exit.Exit<A, E>) => void): void => {
      Runtime.runCallback(runtime)(effect.pipe(Effect.annotateLogs({ module: "Master" })), { onExit })
    }

    const state = yield* Ref.make(emptyState)
    const server = yield* Ref.make<grpc.Server | undefined>(undefined)
    const lifecycle = yield* Effect.makeSemaphore(1)
    let nextSubscription = 0
    const health = new HealthImplementation(servingMap("SERVING"))

    const injectFailure = (method: string) =>
      Effect.gen(function*() {
        const rate = yield* Ref.get(failureRate)
        if (rate > 0 && (yield* Random.next) < rate) {
          return yield* Effect.fail(
            new Rejected({ code: grpc.status.UNAVAILABLE, details: `${method} failed on purpose (failureRate ${rate})` })
          )
        }
      })

    const unary = <Req, Res>(method: string, handle: (request: Req) => Effect.Effect<Res, Rejected>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void =>
      run(
        Effect.zipRight(injectFailure(method), Effect.suspend(() => handle(call.request))),
        (exit) => Exit.isSuccess(exit) ? callback(null, exit.value) : callback(toStatus(exit.cause))
      )

    const nodeHandlers: Worker.NodeServiceHandlers = {
      Register: unary<Worker.RegisterRequest, Worker.RegisterReply>("Register", (request) =>
        Effect.gen(function*() {
          const key = yield* required("node_key", request.node_key)
          if (request.max_runners < 0) {
            return yield* Effect.fail(
              new Rejected({ code: grpc.status.INVALID_ARGUMENT, details: `max_runners ${request.max_runners} is negative` })
            )
          }
          const now = yield* Clock.currentTimeMillis
          yield* Ref.update(state, (s) => {
            const existing = Option.getOrUndefined(HashMap.get(s.nodes, key))
            const node: NodeRecord = {
              seq: existing?.seq ?? s.nodeCount,
              key,
              name: request.name,
              generation: request.generation,
              maxRunners: request.max_runners,
              running: existing?.running ?? 0,
              registeredAt: now,
              lastHeartbeat: existing?.lastHeartbeat
            }
            return {
              ...s,
              nodeCount: existing === undefined ? s.nodeCount + 1 : s.nodeCount,
              nodes: HashMap.set(s.nodes, key, node)
            }
          })
          return {}
        })),
      SendHeartbeat: unary<Worker.HeartbeatRequest, Worker.HeartbeatReply>("SendHeartbeat", (request) =>
        Effect.gen(function*() {
          const key = yield* required("node_key", request.node_key)
          const now = yield* Clock.currentTimeMillis
          const known = yield* Ref.modify(state, (s) =>
            Option.match(HashMap.get(s.nodes, key), {
              onNone: () => [false, s] as const,
              onSome: (node) =>
                [true, {
                  ...s,
                  nodes: HashMap.set(s.nodes, key, { ...node, lastHeartbeat: now, running: request.running })
                }] as const
            }))
          if (!known) return yield* Effect.fail(notRegistered(key))
          return {}
        })),
      Subscribe: (call: SubscribeCall) =>
        run(
          Effect.gen(function*() {
            const key = yield* required("node_key", call.request.node_key)
            const sub: Subscription = { id: nextSubscription++, node: key, generation: call.request.generation, call }
            const replaced = yield* Ref.modify(
              state,
              (s): readonly [Subscription | Rejected | undefined, State] =>
                HashMap.has(s.nodes, key) ? addSubscription(sub)(s) : [notRegistered(key), s]
            )
            if (replaced instanceof Rejected) return yield* Effect.fail(replaced)
            const remove = () => run(Ref.update(state, removeSubscription(sub)), () => {})
            call.on("cancelled", remove)
            call.on("close", remove)
            if (call.cancelled) remove()
            // One stream per node and generation: the one it replaces is ended.
            replaced?.call.end()
          }),
          (exit) => {
            if (Exit.isFailure(exit)) call.emit("error", toStatus(exit.cause))
          }
        )
    }

    const taskHandlers: Worker.TaskServiceHandlers = {
      FetchTask: unary<Worker.FetchTaskRequest, Worker.FetchTaskReply>("FetchTask", (request) =>
        Effect.gen(function*() {
          const key = yield* required("node_key", request.node_key)
          const now = yield* Clock.currentTimeMillis
          const task = yield* Ref.modify(state, fetchTask(key, now))
          return {
            task: task === undefined
              ? null
              : { id: task.id, payload: task.payload, priority: task.priority, created_at_ms: String(task.createdAt) }
          }
        })),
      ReportStatus: unary<Worker.ReportStatusRequest, Worker.ReportStatusReply>("ReportStatus", (request) =>
        Effect.gen(function*() {
          yield* required("task_id", request.task_id)
          yield* required("node_key", request.node_key)
          yield* required("idempotency_key", request.idempotency_key)
          const status: unknown = request.status
          if (!reportable.has(status)) {
            const details = typeof status === "string" && status in rank
              ? `status ${status} is set by the master; a worker reports RUNNING, FINISHED, ERROR or CANCELLED`
              : `unknown status ${String(status)}`
            return yield* Effect.fail(new Rejected({ code: grpc.status.INVALID_ARGUMENT, details }))
          }
          const now = yield* Clock.currentTimeMillis
          const outcome = yield* Ref.modify(state, reportStatus(request, status as TaskStatus, now))
          if (outcome instanceof Rejected) return yield* Effect.fail(outcome)
          return { outcome }
        }))
    }

    const stopServer = Effect.gen(function*() {
      const running = yield* Ref.getAndSet(server, undefined)
      if (running === undefined) return
      running.forceShutdown()
      // The streams died with the server.
      yield* Ref.update(state, (s) => ({ ...s, subscriptions: HashMap.empty() }))
    })

    const startServer = (port: number) =>
      Effect.gen(function*() {
        if ((yield* Ref.get(server)) !== undefined) return port
        const created = new grpc.Server(serverOptions)
        created.addService(Worker.NodeService, nodeHandlers)
        created.addService(Worker.TaskService, taskHandlers)
        health.addToServer(created)
        const bound = yield* bind(created, `${hostPart}:${port}`).pipe(
          Effect.tapError(() => Effect.sync(() => created.forceShutdown()))
        )
        yield* Ref.set(server, created)
        return bound
      })

    const port = yield* Effect.acquireRelease(
      lifecycle.withPermits(1)(startServer(requestedPort)),
      () => lifecycle.withPermits(1)(stopServer)
    )
    const address = `${hostPart}:${port}`

    const enqueue = (task: EnqueueOptions) =>
      Effect.gen(function*() {
        const priority = task.priority ?? 0
        if (typeof task.payload !== "string") return yield* Effect.fail(invalid("payload", "expected a string"))
        if (!isInt32(priority)) return yield* Effect.fail(invalid("priority", `expected an int32, got ${priority}`))
        const now = yield* Clock.currentTimeMillis
        return yield* Ref.modify(state, (s): readonly [string, State] => {
          const id = `task-${s.taskCount + 1}`
          const record: TaskRecord = {
            id,
            seq: s.taskCount,
            payload: task.payload,
            priority,
            createdAt: now,
            status: "PENDING",
            node: task.node === "" ? undefined : task.node,
            handedOut: 0,
            history: [{ status: "PENDING", at: now, node: undefined, error: undefined }],
            reportKeys: new Set()
          }
          return [id, putTask({ ...s, taskCount: s.taskCount + 1 }, record)]
        })
      })

    const cancel = (id: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const result = yield* Ref.modify(state, cancelTask(id, now))
        if (result instanceof MasterError) return yield* Effect.fail(result)
        if (typeof result === "string") return result
        if (result === undefined) return "NoSubscription" as const
        result.call.write({ cancel_task: { task_id: id } })
        return "Notified" as const
      })

    return {
      address,
      port,
      stop: lifecycle.withPermits(1)(stopServer),
      restart: lifecycle.withPermits(1)(Effect.zipRight(stopServer, startServer(port))).pipe(Effect.asVoid),
      enqueue,
      tasks: Effect.map(Ref.get(state), (s) =>
        Array.from(HashMap.values(s.tasks)).sort((a, b) => a.seq - b.seq).map(toInfo)),
      task: (id) =>
        Effect.flatMap(Ref.get(state), (s) =>
          Option.match(HashMap.get(s.tasks, id), {
            onNone: () => Effect.fail(new MasterError({ reason: "UnknownTask", message: `task ${id} not found` })),
            onSome: (task) => Effect.succeed(toInfo(task))
          })),
      nodes: Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const s = yield* Ref.get(state)
        return Array.from(HashMap.values(s.nodes)).sort((a, b) => a.seq - b.seq).map(({ seq: _seq, ...node }) => ({
          ...node,
          // Computed on read: no loop has to mark nodes offline.
          online: now - Math.max(node.registeredAt, node.lastHeartbeat ?? 0) <= offlineAfter
        }))
      }),
      subscriptions: Effect.map(
        Ref.get(state),
        (s) => Array.from(HashMap.values(s.subscriptions)).reduce((n, byGeneration) => n + HashMap.size(byGeneration), 0)
      ),
      setServing: (serving) =>
        Effect.sync(() => {
          for (const [service, status] of Object.entries(servingMap(serving ? "SERVING" : "NOT_SERVING"))) {
            health.setStatus(service, status)
          }
        }),
      setFailureRate: (rate) => Effect.flatMap(validRate(rate), (valid) => Ref.set(failureRate, valid)),
      cancel
    } satisfies Master
  })

const servingMap = (status: "SERVING" | "NOT_SERVING") => ({
  "": status,
  [Worker.serviceNames.node]: status,
  [Worker.serviceNames.task]: status
})

/**
 * The embedded master as a layer, for as long as the layer's scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Master, MasterError> => Layer.scoped(Master, make(options))
