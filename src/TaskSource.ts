/**
 * Where a task handler gets its tasks and sends its reports: the worker side
 * of a master's protocol. `TaskHandler` talks to the master only through this
 * port, so a worker on another master protocol plugs in its own; `layer` is
 * the ready-made one over `proto/worker.proto`.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import type * as Breaker from "./Breaker.js"
import * as Call from "./Call.js"
import * as Connection from "./Connection.js"
import type { ClientUnavailable } from "./ConnectionState.js"
import * as GrpcError from "./GrpcError.js"
import * as Cfg from "./internal/shared/config.js"
import * as Validate from "./internal/shared/validate.js"
import * as WorkerProtocol from "./WorkerProtocol.js"

/**
 * A task as the master hands it out; its payload is not decoded yet.
 *
 * @since 0.1.0
 * @category models
 */
export interface IncomingTask {
  readonly id: string
  /** The task's payload as the master sent it: JSON text. */
  readonly payload: string
  readonly priority: number
  /** Epoch millis. */
  readonly createdAt: number
}

/**
 * What one fetch asks of the master.
 *
 * @since 0.3.0
 * @category models
 */
export interface FetchRequest {
  /** How long the master may hold the fetch for a task; zero: it answers at once. */
  readonly wait: Duration.Duration
  /** Up to this many tasks: the runners free now. */
  readonly max: number
  /** How many tasks the node runs now: a fetch tells the master as a heartbeat does. */
  readonly running: number
}

/**
 * What one fetch brought: its tasks (none when there is nothing to do), and
 * whether the master holds a fetch for its wait. A master that answers at
 * once (`waits` false) is asked again on the task handler's interval.
 *
 * @since 0.3.0
 * @category models
 */
export interface Fetched {
  readonly tasks: ReadonlyArray<IncomingTask>
  readonly waits: boolean
}

/**
 * The statuses a worker reports.
 *
 * @since 0.1.0
 * @category models
 */
export type ReportedStatus = "RUNNING" | "FINISHED" | "ERROR" | "CANCELLED"

/**
 * One status report. `key` is its idempotency key: the same for every retry
 * of the report, across restarts, so the master applies it once.
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusReport {
  readonly key: string
  readonly taskId: string
  readonly status: ReportedStatus
  readonly error: string
}

/**
 * What became of one report of a {@link TaskSource} `reportAll`: taken
 * (`Right`), or failed as `report` would have failed with it alone (`Left`).
 *
 * @since 0.3.0
 * @category models
 */
export type ReportResult = Either.Either<void, Failure>

/**
 * What the master may ask of a node while it is joined.
 *
 * @since 0.1.0
 * @category models
 */
export type MasterRequest = { readonly _tag: "CancelTask"; readonly taskId: string }

/**
 * What `Register` answered: the master's incarnation, new on every start of
 * the master; empty when the master does not say.
 *
 * @since 0.3.0
 * @category models
 */
export interface Registration {
  readonly incarnation: string
}

/**
 * What a heartbeat answered: whether the master counts the node as a member
 * (`undefined`: the master does not say), and its incarnation (empty: it does
 * not say).
 *
 * @since 0.3.0
 * @category models
 */
export interface HeartbeatAnswer {
  readonly member: boolean | undefined
  readonly incarnation: string
}

/**
 * The `google.rpc.ErrorInfo` with which a master refuses a node it does not
 * count as a member (see `proto/worker.proto`).
 *
 * @since 0.3.0
 * @category constants
 */
export const notRegistered = { domain: "worker.v1", reason: "NODE_NOT_REGISTERED" } as const

/**
 * What a failed call says of the node's membership:
 * - `NotMember`: the master said it does not know the node ({@link notRegistered}).
 * - `MaybeNotMember`: FAILED_PRECONDITION or NOT_FOUND without that detail,
 *   as a master that predates it may answer a node it lost.
 * - `Unrelated`: anything else.
 *
 * @since 0.3.0
 * @category classification
 */
export const membershipOf = (error: Failure): "NotMember" | "MaybeNotMember" | "Unrelated" => {
  if (error._tag !== "GrpcError") return "Unrelated"
  if (GrpcError.hasReason(error, notRegistered.domain, notRegistered.reason)) return "NotMember"
  return error.errorInfo === undefined && GrpcError.meaningOf(error.code).maybeNotMember
    ? "MaybeNotMember"
    : "Unrelated"
}

/**
 * How a call to the master can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type Failure = GrpcError.GrpcError | ClientUnavailable | Breaker.BreakerOpen

/**
 * @since 0.1.0
 * @category models
 */
export interface TaskSource {
  /** The key of the node this source fetches for, as the master knows it. */
  readonly nodeKey: string
  /** The node's next tasks: one call, which the master may hold for `wait` until a task is queued. */
  readonly fetch: (request: FetchRequest) => Effect.Effect<Fetched, Failure>
  /** Delivers one status report; delivering it again changes nothing. */
  readonly report: (report: StatusReport) => Effect.Effect<void, Failure>
  /**
   * Delivers several reports in one call: one result per report, in their order; a failure of the call is the
   * failure of each. Optional: without it, the outbox delivers one report a call with `report`.
   *
   * @since 0.3.0
   */
  readonly reportAll?:
    | ((reports: ReadonlyArray<StatusReport>) => Effect.Effect<ReadonlyArray<ReportResult>, Failure>)
    | undefined
  /** Tells the master the node is alive and how many tasks it runs; the answer says if the node is a member. */
  readonly heartbeat: (running: number) => Effect.Effect<HeartbeatAnswer, Failure>
  /** Registers the node for one connection generation; registering again changes nothing. */
  readonly register: (generation: number) => Effect.Effect<Registration, Failure>
  /** The master's requests to the node on one connection generation, until the stream ends. */
  readonly subscribe: (generation: number) => Stream.Stream<MasterRequest, Failure>
  /**
   * The node's runner cap, as the master is told: a task handler on this source runs as many at once unless
   * told otherwise.
   *
   * @since 0.3.0
   */
  readonly maxRunners?: number | undefined
}

/**
 * @since 0.1.0
 * @category tags
 */
export const TaskSource: Context.TagClass<TaskSource, "effect-grpc-resilience/TaskSource", TaskSource> = Context.Tag(
  "effect-grpc-resilience/TaskSource"
)<TaskSource, TaskSource>()

/**
 * The service clients the worker protocol needs; give them to `Connection.layer`.
 *
 * @since 0.1.0
 * @category constants
 */
export const services = {
  node: WorkerProtocol.NodeServiceClient,
  task: WorkerProtocol.TaskServiceClient
} as const

/**
 * A connection that registers the worker protocol's clients (at least {@link services}).
 *
 * @since 0.2.0
 * @category models
 */
export type ConnectionTag<Self> = Connection.AnyTag<Self, typeof services>

/**
 * A connection the worker's side of the protocol can be built on: one declared with {@link services}
 * (`Connection.Tag(id, TaskSource.services)`), so its clients are the protocol's by their types.
 *
 * @since 0.3.0
 * @category models
 */
export type WorkerConnection = ConnectionTag<any>

/**
 * The connection a task source, a task handler or `SimulatedMaster.taskSource` is built on, given in code.
 *
 * @since 0.3.0
 * @category models
 */
export interface Using<C extends WorkerConnection> {
  readonly connection: C
}

/**
 * Who this node is, as the master knows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface NodeOptions {
  /** Unique per node. */
  readonly nodeKey: string
  /** Default: the node key. */
  readonly name?: string | undefined
  /** The node's runner cap, as the master is told. Default 20. */
  readonly maxRunners?: number | undefined
  /** A fetch attempt not answered within this is tried again, with the same fetch id. Default 3 s. */
  readonly fetchAttemptTimeout?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link NodeOptions}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  maxRunners: 20,
  fetchAttemptTimeout: Duration.seconds(3)
} as const

// Failures after which the master may have handed a task out and the reply went astray. Any other failure
// is an answer (an error, or a reply this worker cannot take, such as one too large): the fetch is over.
const mayHaveLostTheAnswer = (error: Failure): boolean => {
  if (error._tag !== "GrpcError") return true
  const lost = GrpcError.meaningOf(error.code).answerMayBeLost
  return lost === "reset" ? error.rstCode !== undefined : lost
}

// How long a stream whose master promised a keepalive every `interval` ms may be silent: two intervals, and a
// second for a worker's event loop held up a moment.
const silenceAfter = (interval: number) => 2 * interval + 1_000

// A message this worker does not know is skipped.
const toRequest = (message: WorkerProtocol.MasterMessage): Option.Option<MasterRequest> =>
  message.message === "cancel_task" && message.cancel_task
    ? Option.some({ _tag: "CancelTask", taskId: message.cancel_task.task_id })
    : Option.none()

/**
 * The node options, checked: a non-empty key and a whole runner cap (default 20).
 *
 * @since 0.1.0
 * @category validation
 */
export const validNode = (
  options: NodeOptions
): Effect.Effect<{ readonly nodeKey: string; readonly maxRunners: number }, Validate.InvalidOption> =>
  Effect.gen(function*() {
    if (typeof options.nodeKey !== "string" || options.nodeKey.trim() === "") {
      return yield* new Validate.InvalidOption({ option: "nodeKey", reason: "must be a non-empty string" })
    }
    return {
      nodeKey: options.nodeKey,
      maxRunners: yield* Validate.integer("maxRunners", options.maxRunners, defaults.maxRunners)
    }
  })

/**
 * A task source over `proto/worker.proto`, through the connection: every call
 * is a resilient `Connection.call`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <C extends WorkerConnection>(
  options: NodeOptions & Using<C>
): Effect.Effect<TaskSource, Validate.InvalidOption, Context.Tag.Identifier<C>> =>
  Effect.gen(function*() {
    const { maxRunners, nodeKey } = yield* validNode(options)
    const fetchAttemptTimeout = yield* Validate.positiveDuration(
      "fetchAttemptTimeout",
      options.fetchAttemptTimeout,
      defaults.fetchAttemptTimeout
    )
    const conn: Connection.Connection<typeof services> = yield* (options.connection as ConnectionTag<
      Context.Tag.Identifier<C>
    >)

    // Fetch ids are `<nonce>/<sequence>`: a fetch keeps its id until it is answered, across its retries and
    // across later fetches after a failure, and the master answers an id it has seen with the answer it gave
    // (the task again, while unconfirmed) and never with a new task. A reply lost on the way back (a cut link,
    // a deadline), or a request that arrives late, loses no task. A fetch is quick: an attempt not answered in
    // `fetchAttemptTimeout` is retried, and its deadline has the link checked.
    const nonce = globalThis.crypto.randomUUID()
    const sequence = yield* Ref.make(1)
    const fetch = (request: FetchRequest) =>
      Ref.get(sequence).pipe(
        Effect.flatMap((seq) =>
          conn.call("task", "FetchTask", {
            node_key: nodeKey,
            fetch_id: `${nonce}/${seq}`,
            wait_ms: Math.round(Duration.toMillis(request.wait)),
            max_tasks: request.max,
            running: request.running
          }, {
            idempotent: true,
            // The master answers when a task is queued or the wait is over: its answer is due after the wait.
            timeout: Duration.sum(request.wait, fetchAttemptTimeout)
          })
        ),
        // Answered: the next fetch is a new one. Failed in a way that may have lost the answer: keep the id.
        Effect.tap(() => Ref.update(sequence, (seq) => seq + 1)),
        Effect.tapError((error) => mayHaveLostTheAnswer(error) ? Effect.void : Ref.update(sequence, (seq) => seq + 1)),
        Effect.map((reply): Fetched => ({
          tasks: [...(reply.task ? [reply.task] : []), ...reply.more_tasks].map((task) => ({
            id: task.id,
            payload: task.payload,
            priority: task.priority,
            createdAt: Number(task.created_at_ms)
          })),
          waits: reply.waits
        }))
      )

    const reportRequest = (report: StatusReport) => ({
      task_id: report.taskId,
      node_key: nodeKey,
      status: report.status,
      error: report.error,
      idempotency_key: report.key
    })

    const report = (report: StatusReport) =>
      conn.call("task", "ReportStatus", reportRequest(report), { idempotent: true }).pipe(Effect.asVoid)

    // Each report a call, in order. After a failure that every call would meet now (the master out of reach, the
    // node not a member) the reports left fail with it, unsent.
    const oneByOne = (reports: ReadonlyArray<StatusReport>) =>
      Effect.gen(function*() {
        const results: Array<ReportResult> = []
        let unreachable: Failure | undefined
        for (const each of reports) {
          if (unreachable !== undefined) {
            results.push(Either.left(unreachable))
            continue
          }
          const result = yield* Effect.either(report(each))
          if (
            Either.isLeft(result) && (mayHaveLostTheAnswer(result.left) || membershipOf(result.left) === "NotMember")
          ) {
            unreachable = result.left
          }
          results.push(result)
        }
        return results
      })

    const toResult = (result: WorkerProtocol.ReportResult): ReportResult =>
      result.code === grpc.status.OK
        ? Either.void
        : Either.left(
          new GrpcError.GrpcError({
            code: result.code,
            details: result.message,
            service: "task",
            method: "ReportStatuses"
          })
        )

    // A master that predates ReportStatuses answers UNIMPLEMENTED (and one that answers it wrongly is not trusted
    // with it): from then on, for this source's lifetime, reports go one a call.
    let batches = true
    const oneByOneFromNowOn = (reports: ReadonlyArray<StatusReport>, why: string) =>
      Effect.logWarning(`the master ${why}: status reports are sent one a call from now on`).pipe(
        Effect.annotateLogs({ module: "TaskSource", node: nodeKey }),
        Effect.zipRight(Effect.sync(() => (batches = false))),
        Effect.zipRight(oneByOne(reports))
      )
    const reportAll = (reports: ReadonlyArray<StatusReport>): Effect.Effect<ReadonlyArray<ReportResult>, Failure> =>
      Effect.suspend(() =>
        batches
          ? conn.call("task", "ReportStatuses", { reports: reports.map(reportRequest) }, { idempotent: true }).pipe(
            Effect.flatMap((reply) =>
              reply.results.length === reports.length
                ? Effect.succeed(reply.results.map(toResult))
                : oneByOneFromNowOn(
                  reports,
                  `answered ${reply.results.length} results to ${reports.length} reports in one ReportStatuses call`
                )
            ),
            Effect.catchIf(
              (error) => error._tag === "GrpcError" && error.code === grpc.status.UNIMPLEMENTED,
              () => oneByOneFromNowOn(reports, "does not implement ReportStatuses")
            )
          )
          : oneByOne(reports)
      )

    const heartbeat = (running: number) =>
      conn.call("node", "SendHeartbeat", { node_key: nodeKey, running }, { idempotent: true }).pipe(
        Effect.map((reply): HeartbeatAnswer => ({
          member: reply.membership === "MEMBER" ? true : reply.membership === "NOT_MEMBER" ? false : undefined,
          incarnation: reply.incarnation
        }))
      )

    const register = (generation: number) =>
      conn.call("node", "Register", {
        node_key: nodeKey,
        name: options.name ?? nodeKey,
        max_runners: maxRunners,
        generation
      }, { idempotent: true }).pipe(Effect.map((reply): Registration => ({ incarnation: reply.incarnation })))

    const subscribe = (generation: number) =>
      Stream.unwrap(
        Effect.map(
          conn.client("node"),
          (client) => watchSilence(Call.serverStream(client, "node", "Subscribe", { node_key: nodeKey, generation }))
        )
      ).pipe(Stream.filterMap(toRequest))

    // A master that writes keepalives on the stream promises one every `interval_ms`: twice that (and a second)
    // without a message is a dead link (a blackhole says nothing), and the connection is checked at once.
    const watchSilence = (messages: Stream.Stream<WorkerProtocol.MasterMessage, GrpcError.GrpcError>) =>
      Stream.unwrapScoped(Effect.map(Stream.toPull(messages), (pull) => {
        let promised: number | undefined
        const silent = (interval: number) =>
          Effect.zipRight(
            conn.check,
            Effect.fail(Option.some(
              new GrpcError.GrpcError({
                code: grpc.status.UNAVAILABLE,
                details: `the stream was silent for ${
                  silenceAfter(interval)
                } ms; the master promised a keepalive every ${interval} ms`,
                service: "node",
                method: "Subscribe"
              })
            ))
          )
        const next = Effect.suspend(() => {
          const interval = promised
          if (interval === undefined) return pull
          // A second over two intervals: a timer firing after the event loop was held up a moment runs before the
          // socket is read, and must not take the keepalive waiting there for silence.
          return Effect.flatMap(
            Effect.timeoutOption(pull, silenceAfter(interval)),
            Option.match({ onSome: Effect.succeed, onNone: () => silent(interval) })
          )
        })
        return Stream.repeatEffectChunkOption(Effect.tap(next, (chunk) =>
          Effect.sync(() => {
            for (const message of chunk) {
              if (message.message === "keepalive" && (message.keepalive?.interval_ms ?? 0) > 0) {
                promised = message.keepalive!.interval_ms
              }
            }
          })))
      }))

    return { nodeKey, maxRunners, fetch, report, reportAll, heartbeat, register, subscribe } satisfies TaskSource
  })

/**
 * The task source over `proto/worker.proto` as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <C extends WorkerConnection>(
  options: NodeOptions & Using<C>
): Layer.Layer<TaskSource, Validate.InvalidOption, Context.Tag.Identifier<C>> => Layer.effect(TaskSource, make(options))

/**
 * The node's options as `Config` reads them: `nodeKey` (`NODE_KEY`, required), `nodeName`, `maxRunners` (which the
 * task handler on this source follows) and `fetchAttemptTimeout`. A record: spread it to override one.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  nodeKey: Config.withDescription(Config.nonEmptyString("nodeKey"), "This node's key, unique among the master's."),
  name: Cfg.optional(Config.withDescription(Config.nonEmptyString("nodeName"), "This node's name (default: its key).")),
  maxRunners: Cfg.optional(Cfg.integer("maxRunners", "Tasks at once, as the master is told.", 1)),
  fetchAttemptTimeout: Cfg.optional(
    Cfg.duration("fetchAttemptTimeout", "One FetchTask attempt's deadline beyond its wait.")
  )
} satisfies Config.Config.Wrap<NodeOptions>

/**
 * The task source over `proto/worker.proto`, with the connection to use given in code and the node read from
 * `config` (default {@link config}; see `Connection.layerConfig`
 * for where it is read from).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = <C extends WorkerConnection>(
  code: Using<C>,
  options: Config.Config.Wrap<NodeOptions> = config
): Layer.Layer<TaskSource, Validate.InvalidOption | ConfigError.ConfigError, Context.Tag.Identifier<C>> =>
  Layer.effect(TaskSource, Effect.flatMap(Cfg.read(options), (node) => make<C>({ ...node, ...code })))
