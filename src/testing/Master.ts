/**
 * An embedded master for tests and demos: a real grpc-js server of the worker
 * protocol (`proto/worker.proto`) with an in-memory node registry and task
 * queue, and the standard `grpc.health.v1` service. It can be stopped,
 * restarted on the same port with its state kept, made to fail calls, asked to
 * cancel a task or to forget a node. Closing its scope is graceful: the streams
 * end with OK and the calls under way get a second.
 *
 * Every handler runs as an Effect on the runtime captured by `make`, so the
 * master reads the caller's `Clock` and `Random` (a seeded `Random` makes
 * injected failures reproducible).
 *
 * How it answers:
 * - `FetchTask`: the node's own pending task (enqueued with `node`), else an
 *   unassigned one, by priority descending then creation order; it becomes
 *   `ASSIGNED` to the node. A hand-out no `RUNNING` report confirms within
 *   `redeliverAfter` goes to that node's next fetch again, and after
 *   `maxHandOuts` of them the task ends `ERROR`. No task: `task` is null.
 * - `ReportStatus`: `DUPLICATE` for an idempotency key accepted before, `STALE`
 *   unless the status moves forward, else `ACCEPTED`. A report for a task not
 *   handed out to that node is `FAILED_PRECONDITION`; workers report only
 *   RUNNING, FINISHED, ERROR or CANCELLED.
 * - `FetchTask` and `Subscribe` need a registered node: FAILED_PRECONDITION with the
 *   protocol's NODE_NOT_REGISTERED detail. `SendHeartbeat` answers NOT_MEMBER for a
 *   node it does not know, MEMBER otherwise; `Register` and heartbeats carry the
 *   master's incarnation. `forget` drops a node as an expiring master would.
 * - Task ids are `task-<incarnation>-<n>`: never one the master (or an earlier
 *   process of it) handed out before.
 * - Empty `node_key`, `task_id` or `idempotency_key`, or an unknown status:
 *   `INVALID_ARGUMENT`; an unknown task: `NOT_FOUND`.
 * - With `token`: a call without `authorization: Bearer <token>` is
 *   `UNAUTHENTICATED`, one with another token `PERMISSION_DENIED`, the health
 *   service included unless `healthWithoutToken`.
 * - With `tls`: TLS only; with `tls.ca`, a client certificate signed by it is required (mutual TLS).
 *
 * Over 400 lines, as one concept: the server, its handlers of each method,
 * its credentials and its life (stop, restart, close), over the bookkeeping of
 * `internal/masterState.ts`.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as HealthCheck from "grpc-health-check"
import { createHash, timingSafeEqual } from "node:crypto"
import { createSecureContext } from "node:tls"
import * as Cfg from "../internal/shared/config.js"
import * as ErrorInfo from "../internal/shared/errorInfo.js"
import { requireLazily } from "../internal/shared/runtime.js"
import * as Validate from "../internal/shared/validate.js"
import * as TaskSource from "../TaskSource.js"
import * as WorkerProtocol from "../WorkerProtocol.js"
import * as MasterState from "./internal/masterState.js"
import { MasterError } from "./internal/masterState.js"

export type {
  /**
   * What `cancel` did. Every outcome but `AlreadyEnded` leaves the task `CANCELLED`.
   *
   * @since 0.1.0
   * @category models
   */
  CancelOutcome,
  /**
   * @since 0.1.0
   * @category models
   */
  EnqueueOptions,
  /**
   * A snapshot of one registered node.
   *
   * @since 0.1.0
   * @category models
   */
  NodeInfo,
  /**
   * One accepted status of a task.
   *
   * @since 0.1.0
   * @category models
   */
  StatusChange,
  /**
   * A snapshot of one task.
   *
   * @since 0.1.0
   * @category models
   */
  TaskInfo,
  /**
   * A task's status on the master. Moves only forward:
   * `PENDING` -> `ASSIGNED` -> `RUNNING` -> `FINISHED` | `ERROR` | `CANCELLED`.
   *
   * @since 0.1.0
   * @category models
   */
  TaskStatus
} from "./internal/masterState.js"

export {
  /**
   * A master operation that could not be done.
   *
   * @since 0.1.0
   * @category errors
   */
  MasterError
}

type TaskStatus = MasterState.TaskStatus
type CancelOutcome = MasterState.CancelOutcome
type EnqueueOptions = MasterState.EnqueueOptions
type TaskInfo = MasterState.TaskInfo
type NodeInfo = MasterState.NodeInfo

// The master's statuses are the protocol's, less the unspecified one: checked here, where both are known.
type WireStatus = Exclude<WorkerProtocol.TaskStatus, "TASK_STATUS_UNSPECIFIED">
const sameStatuses: [TaskStatus, WireStatus] extends [WireStatus, TaskStatus] ? true : never = true
void sameStatuses

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
  /** A hand-out not confirmed by a RUNNING report within this goes to the same node again (a lost reply). Default 10 s. */
  readonly redeliverAfter?: Duration.DurationInput | undefined
  /** A task handed out this many times, never confirmed, ends `ERROR`: the node cannot take it. Default 5. */
  readonly maxHandOuts?: number | undefined
  /** The fraction (0 to 1) of Register, SendHeartbeat, FetchTask and ReportStatus calls failed with UNAVAILABLE. Default 0. */
  readonly failureRate?: number | undefined
  /** Merged over {@link defaultServerOptions}; `grpc.enable_channelz` stays on (see there). */
  readonly serverOptions?: grpc.ServerOptions | undefined
  /** Serve over TLS. Default: plaintext. */
  readonly tls?: TlsOptions | undefined
  /** Calls must carry `authorization: Bearer <token>`: none is UNAUTHENTICATED, another PERMISSION_DENIED. */
  readonly token?: Redacted.Redacted<string> | undefined
  /** With `token`, leave `grpc.health.v1.Health` open to calls without it. Default false. */
  readonly healthWithoutToken?: boolean | undefined
  /**
   * How often a `Keepalive` is written on each `Subscribe` stream, so a worker notices a dead link by the
   * silence (see `proto/worker.proto`). Zero: none. Default 2 s.
   */
  readonly subscribeKeepalive?: Duration.DurationInput | undefined
}

/**
 * The master's TLS identity, as PEM text (not paths: tests make them in memory or read them once).
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsOptions {
  /** The server's certificate chain. */
  readonly cert: string
  /** The server's private key. */
  readonly key: string
  /** When set, clients must present a certificate signed by these CAs: mutual TLS. */
  readonly ca?: string | undefined
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
  redeliverAfter: Duration.seconds(10),
  maxHandOuts: 5,
  failureRate: 0,
  subscribeKeepalive: Duration.seconds(2)
} as const

/**
 * Server options that accept the workers' keepalive pings (every 5 min 10 s by
 * default, only while a call is open, and whatever a user configures). grpc-js 1.14 servers enforce no ping policy; the options say
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
  // The master pings too, so a worker lost behind a blackhole is dropped with its streams (within 5 min 5 s). Not
  // more often: grpc-js pings each connection on its own timer, and every ping wakes the master twice (the ping,
  // its answer): at 20 s, 100 wake-ups a second for 1,000 idle workers. A worker finds a dead link itself, from
  // the Subscribe keepalive.
  "grpc.keepalive_time_ms": 300_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  "grpc.http2.max_ping_strikes": 0
}

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
  /** Fails this share (0 to 1) of calls with UNAVAILABLE: of every call, or only of the methods named (`ReportStatus`). */
  readonly setFailureRate: (
    rate: number,
    options?: { readonly only?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<void, MasterError>
  /** Ends the task `CANCELLED`, and tells the newest subscription of its node. */
  readonly cancel: (id: string) => Effect.Effect<CancelOutcome, MasterError>
  /**
   * Forgets the node, as a master that expired it or failed over does: its
   * registration goes, its `Subscribe` streams end with NODE_NOT_REGISTERED,
   * and its fetches are refused so until it registers again. Its tasks stay.
   * False when the node was not registered.
   *
   * @since 0.3.0
   */
  readonly forget: (node: string) => Effect.Effect<boolean>
  /**
   * This master's incarnation, in `Register` and heartbeat replies and in its
   * task ids: new on every `make`, kept by `restart`.
   *
   * @since 0.3.0
   */
  readonly incarnation: string
}

/**
 * @since 0.1.0
 * @category tags
 */
export const Master: Context.TagClass<Master, "effect-grpc-resilience/testing/Master", Master> = Context.Tag(
  "effect-grpc-resilience/testing/Master"
)<Master, Master>()

// -------------------------------------------------------------------------------------------------
// The server: a grpc-js adapter over the master's bookkeeping
// -------------------------------------------------------------------------------------------------

const invalid = (option: string, message: string) =>
  new MasterError({ reason: "InvalidOption", message: `invalid option ${option}: ${message}` })

const bind = (
  server: grpc.Server,
  target: string,
  credentials: grpc.ServerCredentials
): Effect.Effect<number, MasterError> =>
  Effect.async<number, MasterError>((resume) => {
    server.bindAsync(target, credentials, (error, port) =>
      resume(
        error === null ? Effect.succeed(port) : Effect.fail(
          new MasterError({ reason: "BindFailed", message: `cannot bind ${target}: ${error.message}`, cause: error })
        )
      ))
  })

// A refusal as a status; a node that is not a member is told so in the status details, as the protocol says.
// A report as the worker sent it: whatever arrived, even a number for the status: the state checks it.
const toReport = (request: WorkerProtocol.ReportStatusRequest): MasterState.Report => ({
  taskId: request.task_id,
  node: request.node_key,
  status: request.status as MasterState.TaskStatus,
  error: request.error,
  key: request.idempotency_key
})

const toStatus = (cause: Cause.Cause<MasterState.Rejection>): grpc.StatusObject => {
  const rejected = Cause.failureOption(cause)
  const metadata = new grpc.Metadata()
  if (Option.isNone(rejected)) {
    return { code: grpc.status.INTERNAL, details: `master failed: ${Cause.pretty(cause)}`, metadata }
  }
  const code = grpc.status[MasterState.canonicalCode[rejected.value.reason]]
  if (rejected.value.reason === "UnknownNode") {
    metadata.set(
      ErrorInfo.trailer,
      ErrorInfo.encode(code, rejected.value.message, { ...TaskSource.notRegistered, metadata: {} })
    )
  }
  return { code, details: rejected.value.message, metadata }
}

type SubscribeCall = grpc.ServerWritableStream<WorkerProtocol.SubscribeRequest, WorkerProtocol.MasterMessage>

const serverCredentials = (tls: TlsOptions | undefined): Effect.Effect<grpc.ServerCredentials, MasterError> =>
  tls === undefined
    ? Effect.succeed(grpc.ServerCredentials.createInsecure())
    : Effect.try({
      try: () => {
        // grpc-js checks the PEM only at bind time; here a bad one is an invalid option, not a failed bind.
        createSecureContext({ cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }) })
        return grpc.ServerCredentials.createSsl(
          tls.ca === undefined ? null : Buffer.from(tls.ca),
          [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
          tls.ca !== undefined
        )
      },
      catch: (error) => invalid("tls", error instanceof Error ? error.message : String(error))
    })

// Digests have one length, so the comparison takes the same time whatever was sent.
const digest = (text: string) => createHash("sha256").update(text).digest()

const healthPath = "/grpc.health.v1.Health/"

// How long a closing master lets the calls under way finish.
const gracefulClose = Duration.seconds(1)

// Checks the bearer token before any handler runs; `onRejected` hears of each refusal (never the token).
const requireToken = (
  token: Redacted.Redacted<string>,
  healthWithoutToken: boolean,
  onRejected: (path: string, status: grpc.status, details: string) => void
): grpc.ServerInterceptor =>
(method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, pass) => {
          if (healthWithoutToken && method.path.startsWith(healthPath)) return pass(metadata)
          const [sent] = metadata.get("authorization")
          const refuse = (code: grpc.status, details: string) => {
            onRejected(method.path, code, details)
            call.sendStatus({ code, details })
          }
          if (typeof sent !== "string" || !sent.startsWith("Bearer ")) {
            return refuse(grpc.status.UNAUTHENTICATED, "a bearer token is required")
          }
          if (!timingSafeEqual(digest(sent), digest(`Bearer ${Redacted.value(token)}`))) {
            return refuse(grpc.status.PERMISSION_DENIED, "the bearer token is not accepted")
          }
          pass(metadata)
        }
      })
  })

/**
 * Starts an embedded master in the current scope; closing the scope shuts it down.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Master, MasterError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? defaults.host
    const requestedPort = yield* MasterState.checked(
      "port",
      Validate.isWholeNumber(0, 65535),
      options.port ?? defaults.port
    )
    const state = yield* MasterState.make({
      heartbeatInterval: options.heartbeatInterval ?? defaults.heartbeatInterval,
      redeliverAfter: options.redeliverAfter ?? defaults.redeliverAfter,
      maxHandOuts: options.maxHandOuts ?? defaults.maxHandOuts,
      failureRate: options.failureRate ?? defaults.failureRate
    })
    const keepaliveMs = Math.round(Duration.toMillis(
      yield* MasterState.checked(
        "subscribeKeepalive",
        Validate.isDurationUpTo(Duration.minutes(10)),
        options.subscribeKeepalive ?? defaults.subscribeKeepalive
      )
    ))
    const credentials = yield* serverCredentials(options.tls)
    const hostPart = host.includes(":") ? `[${host}]` : host

    // Handlers run on the caller's runtime: its Clock and Random, its logger; streams in the master's scope.
    const runtime = yield* Effect.runtime<never>()
    // The streams' scope closes after the server's graceful close (made below): their calls end with OK first.
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const run = <A, E>(effect: Effect.Effect<A, E>, onExit: (exit: Exit.Exit<A, E>) => void): void => {
      Runtime.runCallback(runtime)(effect.pipe(Effect.annotateLogs({ module: "Master" })), { onExit })
    }
    const token = options.token
    const serverOptions: grpc.ServerOptions = {
      ...defaultServerOptions,
      ...options.serverOptions,
      "grpc.enable_channelz": 1,
      interceptors: [
        ...(options.serverOptions?.interceptors ?? []),
        ...(token === undefined ? [] : [
          requireToken(token, options.healthWithoutToken ?? false, (path, code, details) =>
            run(Effect.logInfo(`refused ${path}: ${grpc.status[code]} (${details})`), () => {}))
        ])
      ]
    }

    const server = yield* Ref.make<grpc.Server | undefined>(undefined)
    const lifecycle = yield* Effect.makeSemaphore(1)
    // grpc-health-check loads its proto when imported: when a master is made, not at import.
    const { HealthImplementation } = requireLazily("grpc-health-check") as typeof HealthCheck
    const health = new HealthImplementation(servingMap("SERVING"))

    const unary =
      <Req, Res>(method: string, handle: (request: Req) => Effect.Effect<Res, MasterState.Rejection>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
        // A call the client gave up on before we got to it changes nothing: its reply would be lost.
        if (call.cancelled) {
          return
        }
        const fiber = Runtime.runFork(runtime)(
          Effect.zipRight(
            state.injectFailure(method),
            Effect.suspend(() =>
              handle(call.request)
            )
          ).pipe(
            Effect.annotateLogs({ module: "Master" })
          )
        )
        // A client that gives up ends the call's work.
        call.on("cancelled", () => fiber.unsafeInterruptAsFork(fiber.id()))
        fiber.addObserver((exit) => {
          if (Exit.isSuccess(exit)) callback(null, exit.value)
          else if (!Exit.isInterrupted(exit)) callback(toStatus(exit.cause))
        })
      }

    // The open streams' keepalives: one timer for all of them, writing to each stream in one turn of the event
    // loop. A timer per stream woke the master once per stream and interval (500 times a second for 1,000 idle
    // workers at 2 s); the dispatch benchmark measures the idle fleet's cost.
    const keepalive = { keepalive: { interval_ms: keepaliveMs } }
    // The keepalive is the same message every time: encoded once, each write copies its bytes.
    const { Subscribe: subscribeMethod } = WorkerProtocol.NodeService
    const keepaliveBytes = subscribeMethod.responseSerialize(keepalive)
    const nodeService: WorkerProtocol.NodeServiceDefinition = {
      ...WorkerProtocol.NodeService,
      Subscribe: {
        ...subscribeMethod,
        responseSerialize: (message) =>
          message === keepalive ? keepaliveBytes : subscribeMethod.responseSerialize(message)
      }
    }
    const beating = new Set<SubscribeCall>()
    let beat: ReturnType<typeof setInterval> | undefined
    const beatAll = () => {
      for (const call of beating) {
        if (!call.cancelled) call.write(keepalive)
      }
    }
    const startBeat = (call: SubscribeCall) => {
      if (keepaliveMs === 0) return
      beating.add(call)
      if (beat === undefined) beat = setInterval(beatAll, keepaliveMs)
    }
    const stopBeat = (call: SubscribeCall) => {
      if (!beating.delete(call) || beating.size > 0 || beat === undefined) return
      clearInterval(beat)
      beat = undefined
    }
    // A stream whose end the server never reported does not keep the timer past the master.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        beating.clear()
        clearInterval(beat)
        beat = undefined
      })
    )

    // Writes the subscription's requests until it ends (replaced, or the server stopped); the call's end closes it.
    const subscribe = (call: SubscribeCall) => {
      // Headers at once: a proxy waiting for them (nginx's grpc_read_timeout) would end a quiet stream. Then a
      // keepalive at once, and one at every beat of the shared timer (within an interval of this one): the worker
      // takes silence as a dead link.
      call.sendMetadata(new grpc.Metadata())
      if (keepaliveMs > 0) call.write(keepalive)
      startBeat(call)
      const fiber = Runtime.runFork(runtime)(
        Effect.scoped(
          Effect.flatMap(state.subscribe(call.request.node_key, call.request.generation), (requests) =>
            Stream.runForEach(requests, (request) =>
              Effect.sync(() => {
                if (!call.cancelled) {
                  call.write({ cancel_task: { task_id: request.taskId } })
                }
              })))
        ).pipe(
          Effect.exit,
          Effect.flatMap((exit) =>
            Effect.sync(() => {
              if (call.cancelled) {
                return
              }
              if (Exit.isSuccess(exit)) {
                call.end()
              } else if (!Exit.isInterrupted(exit)) {
                call.emit("error", toStatus(exit.cause))
              }
            })
          ),
          Effect.annotateLogs({ module: "Master" })
        ),
        { scope }
      )
      const close = () => {
        stopBeat(call)
        fiber.unsafeInterruptAsFork(fiber.id())
      }
      call.on("cancelled", close)
      call.on("close", close)
      if (call.cancelled) {
        close()
      }
    }

    const nodeHandlers: WorkerProtocol.NodeServiceHandlers = {
      Register: unary<WorkerProtocol.RegisterRequest, WorkerProtocol.RegisterReply>("Register", (request) =>
        Effect.as(
          state.register({
            node: request.node_key,
            name: request.name,
            maxRunners: request.max_runners,
            generation: request.generation
          }),
          { incarnation: state.incarnation }
        )),
      SendHeartbeat: unary<WorkerProtocol.HeartbeatRequest, WorkerProtocol.HeartbeatReply>("SendHeartbeat", (request) =>
        Effect.map(state.heartbeat(request.node_key, request.running), (known) => ({
          membership: known ? "MEMBER" : "NOT_MEMBER",
          incarnation: state.incarnation
        }))),
      Subscribe: subscribe
    }

    // A fetch without a fiber: the state holds it (a waiter, woken by a task queued or by the shared timer of the
    // second its wait ends) and answers the call's callback itself. An idle fleet's master holds one fetch a worker
    // and ends 40 a second for 1,000 workers; what each costs is most of what the fleet costs it.
    const debugOn = LogLevel.lessThanEqual(
      FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMinimumLogLevel),
      LogLevel.Debug
    )
    const fetchTask = (
      call: grpc.ServerUnaryCall<WorkerProtocol.FetchTaskRequest, WorkerProtocol.FetchTaskReply>,
      callback: grpc.sendUnaryData<WorkerProtocol.FetchTaskReply>
    ): void => {
      const { request } = call
      const fetch: MasterState.FetchRequest = {
        node: request.node_key,
        fetchId: request.fetch_id,
        wait: request.wait_ms,
        maxTasks: request.max_tasks,
        running: request.running
      }
      const withdraw = state.fetchNow(fetch, (answer) => {
        if (Either.isLeft(answer)) {
          return callback(toStatus(Cause.fail(answer.left)))
        }
        const tasks = answer.right
        if (debugOn) {
          run(Effect.logDebug(MasterState.describeFetch(fetch, tasks)), () => {})
        }
        const [first, ...more] = tasks.map((task) => ({
          id: task.id,
          payload: task.payload,
          priority: task.priority,
          created_at_ms: String(task.createdAt)
        }))
        callback(null, { task: first ?? null, more_tasks: more, waits: true })
      })
      // A client that gives up (a waiting fetch whose worker went away) ends the wait.
      if (withdraw !== undefined) {
        call.once("cancelled", withdraw)
      }
    }

    const taskHandlers: WorkerProtocol.TaskServiceHandlers = {
      FetchTask: (call, callback) => {
        // A call the client gave up on before we got to it changes nothing: its reply would be lost.
        if (call.cancelled) {
          return
        }
        // The injected failures, when there may be one, as every other call's.
        if (!state.mayFail("FetchTask")) {
          return fetchTask(call, callback)
        }
        run(state.injectFailure("FetchTask"), (exit) => {
          if (Exit.isFailure(exit)) {
            callback(toStatus(exit.cause))
          } else if (!call.cancelled) {
            fetchTask(call, callback)
          }
        })
      },
      ReportStatus: unary<WorkerProtocol.ReportStatusRequest, WorkerProtocol.ReportStatusReply>(
        "ReportStatus",
        (request) =>
          Effect.map(state.report(toReport(request)), (outcome) => ({ outcome }))
      ),
      // Each report as ReportStatus takes it; a refusal of one is its result, not the call's.
      ReportStatuses: unary<WorkerProtocol.ReportStatusesRequest, WorkerProtocol.ReportStatusesReply>(
        "ReportStatuses",
        (request) =>
          Effect.map(
            Effect.forEach(request.reports, (report) =>
              Effect.either(state.report(toReport(report)))),
            (results) => ({
              results: results.map((result) =>
                Either.match(result, {
                  onRight: (outcome) => ({ outcome, code: grpc.status.OK, message: "" }),
                  onLeft: (rejection) => ({
                    outcome: "REPORT_OUTCOME_UNSPECIFIED" as const,
                    code: grpc.status[MasterState.canonicalCode[rejection.reason]],
                    message: rejection.message
                  })
                })
              )
            })
          )
      )
    }

    const stopServer = Effect.gen(function*() {
      const running = yield* Ref.getAndSet(server, undefined)
      if (running === undefined) {
        return
      }
      running.forceShutdown()
      // The streams died with the server.
      yield* state.dropSubscriptions
    })

    // On close: the streams end with OK and the calls under way may finish (within a second), as a master on
    // SIGTERM does; then whatever is left is dropped.
    const closeServer = Effect.gen(function*() {
      const running = yield* Ref.get(server)
      if (running === undefined) {
        return
      }
      yield* state.dropSubscriptions
      // The fetches it holds are answered (no task), so they need not wait out their wait.
      yield* state.stopWaiting
      // Finalizers run uninterruptibly: the wait is made interruptible so its timeout can end it.
      yield* Effect.async<void>((resume) =>
        running.tryShutdown(() =>
          resume(Effect.void)
        )
      ).pipe(
        Effect.interruptible,
        Effect.timeoutOption(gracefulClose),
        Effect.zipRight(stopServer)
      )
    })

    const startServer = (port: number) =>
      Effect.gen(function*() {
        if ((yield* Ref.get(server)) !== undefined) {
          return port
        }
        const created = new grpc.Server(serverOptions)
        created.addService(nodeService, nodeHandlers)
        created.addService(WorkerProtocol.TaskService, taskHandlers)
        health.addToServer(created)
        const bound = yield* bind(created, `${hostPart}:${port}`, credentials).pipe(
          Effect.tapError(() => Effect.sync(() => created.forceShutdown()))
        )
        yield* Ref.set(server, created)
        return bound
      })

    const port = yield* Effect.acquireRelease(
      lifecycle.withPermits(1)(startServer(requestedPort)),
      () => lifecycle.withPermits(1)(closeServer)
    )
    const address = `${hostPart}:${port}`

    return {
      address,
      port,
      stop: lifecycle.withPermits(1)(stopServer),
      restart: lifecycle.withPermits(1)(Effect.zipRight(stopServer, startServer(port))).pipe(Effect.asVoid),
      enqueue: state.enqueue,
      tasks: state.tasks,
      task: state.task,
      nodes: state.nodes,
      subscriptions: state.subscriptions,
      setServing: (serving) =>
        Effect.sync(() => {
          for (const [service, status] of Object.entries(servingMap(serving ? "SERVING" : "NOT_SERVING"))) {
            health.setStatus(service, status)
          }
        }),
      setFailureRate: state.setFailureRate,
      cancel: state.cancel,
      forget: state.forget,
      incarnation: state.incarnation
    } satisfies Master
  })

const servingMap = (status: "SERVING" | "NOT_SERVING") => ({
  "": status,
  [WorkerProtocol.serviceNames.node]: status,
  [WorkerProtocol.serviceNames.task]: status
})

/**
 * The embedded master as a layer, for as long as the layer's scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Master, MasterError> => Layer.scoped(Master, make(options))

/**
 * The options a master reads from configuration; absent ones keep {@link defaults}. From the environment they are
 * `MASTER_PORT`, `MASTER_HOST`, `MASTER_REDELIVER_AFTER` and `MASTER_MAX_HAND_OUTS`, as the master command reads
 * them.
 *
 * @since 0.3.0
 * @category config
 */
export const config = {
  port: Cfg.optional(Cfg.integer("masterPort", "The gRPC port; 0 picks a free one.", 0, 65535)),
  host: Cfg.optional(Cfg.described(Config.nonEmptyString("masterHost"), "The address to bind.")),
  redeliverAfter: Cfg.optional(
    Cfg.duration(
      "masterRedeliverAfter",
      "A hand-out not confirmed by a RUNNING report within this is handed out again."
    )
  ),
  maxHandOuts: Cfg.optional(
    Cfg.integer("masterMaxHandOuts", "A task handed out this many times, never confirmed, ends ERROR.", 1)
  )
} satisfies Config.Config.Wrap<Pick<Options, "port" | "host" | "redeliverAfter" | "maxHandOuts">>

/**
 * The embedded master with `options` given in code over the ones read from `configured` (default
 * {@link config}), as every `layerConfig` of the library; every error from the configuration names the variable.
 *
 * @since 0.3.0
 * @category layers
 */
export const layerConfig = (
  options: Options = {},
  configured: Config.Config.Wrap<Options> = config
): Layer.Layer<Master, MasterError | ConfigError.ConfigError> =>
  Layer.scoped(Master, Effect.flatMap(Cfg.read(configured), (read) => make({ ...read, ...options })))
