/**
 * The embedded master's bookkeeping (the same node registry, task queue and
 * subscriptions as `Master`) reached over the simulated network, for
 * virtual-time tests of task handlers: `TestClock` drives everything, with no
 * socket and no real timer.
 *
 * `taskSource` is a `TaskSource` whose every call looks its client up through
 * the `Connection`, as the real source does (so lookups wait, and fail with
 * `ClientUnavailable`, as in production), then crosses the simulated network
 * on that client's channel. The connection must be built with
 * `services: TaskSource.services`.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type * as Connection from "../Connection.js"
import { GrpcError } from "../GrpcError.js"
import type * as Validate from "../internal/shared/validate.js"
import * as Retry from "../Retry.js"
import * as TaskSource from "../TaskSource.js"
import * as WorkerProtocol from "../WorkerProtocol.js"
import * as MasterState from "./internal/masterState.js"
import { SimulatedNetwork } from "./SimulatedNetwork.js"

// Its models and errors are the embedded master's: `Master.TaskInfo`, `Master.MasterError`, ...

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** A node not heard from within two intervals is offline. Default 15 s. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** A hand-out not confirmed by a RUNNING report within this goes to the same node again. Default 10 s. */
  readonly redeliverAfter?: Duration.DurationInput | undefined
  /** A task handed out this many times, never confirmed, ends `ERROR`: the node cannot take it. Default 5. */
  readonly maxHandOuts?: number | undefined
  /** The fraction (0 to 1) of Register, SendHeartbeat, FetchTask, ReportStatus and ReportStatuses calls failed with UNAVAILABLE. Default 0. */
  readonly failureRate?: number | undefined
}

/**
 * The test's handle on the simulated master.
 *
 * @since 0.1.0
 * @category models
 */
export interface SimulatedMaster {
  /** Adds a `PENDING` task and returns its id. */
  readonly enqueue: (options: MasterState.EnqueueOptions) => Effect.Effect<string, MasterState.MasterError>
  /** Every task, in creation order. */
  readonly tasks: Effect.Effect<ReadonlyArray<MasterState.TaskInfo>>
  readonly task: (id: string) => Effect.Effect<MasterState.TaskInfo, MasterState.MasterError>
  /** Every registered node, in registration order. */
  readonly nodes: Effect.Effect<ReadonlyArray<MasterState.NodeInfo>>
  /** How many subscriptions (joined node generations) are open. */
  readonly subscriptions: Effect.Effect<number>
  /** Ends the task `CANCELLED`, and tells the newest subscription of its node. */
  readonly cancel: (id: string) => Effect.Effect<MasterState.CancelOutcome, MasterState.MasterError>
  /** Fails this share (0 to 1) of calls with UNAVAILABLE: of every call, or only of the methods named (`ReportStatus`). */
  readonly setFailureRate: (
    rate: number,
    options?: { readonly only?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<void, MasterState.MasterError>
  /**
   * Forgets the node, as `Master.forget` does: its subscriptions end with
   * NODE_NOT_REGISTERED and its fetches are refused until it registers again.
   *
   * @since 0.3.0
   */
  readonly forget: (node: string) => Effect.Effect<boolean>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const SimulatedMaster: Context.TagClass<
  SimulatedMaster,
  "effect-grpc-resilience/testing/SimulatedMaster",
  SimulatedMaster
> = Context.Tag(
  "effect-grpc-resilience/testing/SimulatedMaster"
)<SimulatedMaster, SimulatedMaster>()

// The bookkeeping behind each handle, for the task sources; not part of the handle.
const states = new WeakMap<SimulatedMaster, MasterState.MasterState>()

/**
 * A simulated master with no tasks and no nodes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<SimulatedMaster, MasterState.MasterError> =>
  Effect.map(MasterState.make(options), (state) => {
    const master: SimulatedMaster = {
      enqueue: state.enqueue,
      tasks: state.tasks,
      task: state.task,
      nodes: state.nodes,
      subscriptions: state.subscriptions,
      cancel: state.cancel,
      setFailureRate: state.setFailureRate,
      forget: state.forget
    }
    states.set(master, state)
    return master
  })

/**
 * A simulated master as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<SimulatedMaster, MasterState.MasterError> =>
  Layer.effect(SimulatedMaster, make(options))

// A refusal as the real master answers it: the same status code and details.
const toGrpcError = (service: string, method: string) => (rejection: MasterState.Rejection) =>
  new GrpcError({
    code: grpc.status[MasterState.canonicalCode[rejection.reason]],
    details: rejection.message,
    service,
    method,
    errorInfo: rejection.reason === "UnknownNode" ? { ...TaskSource.notRegistered, metadata: {} } : undefined
  })

/**
 * A task source over the simulated master, for the node `options` describes:
 * each call looks up its client through the connection (the lookup retried on
 * `Retry.lookup`, as in production), then crosses the simulated network on
 * that client's channel. `subscribe` streams the master's requests for that
 * node and generation until the channel drops (UNAVAILABLE); like `fetch`, it
 * needs the node registered (`register`), as the real master does
 * (FAILED_PRECONDITION with NODE_NOT_REGISTERED).
 *
 * Calls are not retried and go through no breaker: a failure reaches the
 * caller as the first attempt's.
 *
 * @since 0.1.0
 * @category layers
 */
export const taskSource = <
  C extends TaskSource.WorkerConnection
>(
  options: TaskSource.NodeOptions & TaskSource.Using<C>
): Layer.Layer<
  TaskSource.TaskSource,
  Validate.InvalidOption,
  Context.Tag.Identifier<C> | SimulatedNetwork | SimulatedMaster
> =>
  Layer.effect(
    TaskSource.TaskSource,
    Effect.gen(function*() {
      const { maxRunners, nodeKey } = yield* TaskSource.validNode(options)
      const conn: Connection.Connection<typeof TaskSource.services> =
        yield* (options.connection as TaskSource.ConnectionTag<
          Context.Tag.Identifier<C>
        >)
      const network = yield* SimulatedNetwork
      const master = yield* SimulatedMaster
      const state = states.get(master)
      if (state === undefined) return yield* Effect.dieMessage("SimulatedMaster.taskSource: not a simulated master")

      const lookup = <K extends keyof typeof TaskSource.services>(service: K) =>
        conn.client(service).pipe(Retry.transient(Retry.lookup, { label: `lookup ${service}` }))

      // One unary call: lookup, the network, then the master, whose refusals become the real master's statuses.
      const call = <A>(
        service: keyof typeof TaskSource.services,
        method: string,
        handle: Effect.Effect<A, MasterState.Rejection>
      ) =>
        Effect.flatMap(lookup(service), (client) =>
          network.callOn(
            client,
            `${WorkerProtocol.serviceNames[service]}/${method}`,
            Effect.zipRight(state.injectFailure(method), handle).pipe(Effect.mapError(toGrpcError(service, method)))
          ))

      const fetch = (request: TaskSource.FetchRequest) =>
        Effect.map(
          call(
            "task",
            "FetchTask",
            state.fetch({
              node: nodeKey,
              wait: Duration.toMillis(request.wait),
              maxTasks: request.max,
              running: request.running
            })
          ),
          (tasks): TaskSource.Fetched => ({
            tasks: tasks.map((task) => ({
              id: task.id,
              payload: task.payload,
              priority: task.priority,
              createdAt: task.createdAt
            })),
            waits: true
          })
        )

      const toReport = (report: TaskSource.StatusReport): MasterState.Report => ({
        taskId: report.taskId,
        node: nodeKey,
        status: report.status,
        error: report.error,
        key: report.key
      })

      const report = (report: TaskSource.StatusReport) =>
        call("task", "ReportStatus", state.report(toReport(report))).pipe(Effect.asVoid)

      // As the embedded master's ReportStatuses: each report as ReportStatus takes it, a refusal of one its result.
      const reportAll = (reports: ReadonlyArray<TaskSource.StatusReport>) =>
        call(
          "task",
          "ReportStatuses",
          Effect.forEach(reports, (each) =>
            state.report(toReport(each)).pipe(
              Effect.asVoid,
              Effect.mapError(toGrpcError("task", "ReportStatuses")),
              Effect.either
            ))
        )

      const heartbeat = (running: number) =>
        Effect.map(
          call("node", "SendHeartbeat", state.heartbeat(nodeKey, running)),
          (member): TaskSource.HeartbeatAnswer => ({ member, incarnation: state.incarnation })
        )

      const register = (generation: number) =>
        Effect.as(
          call(
            "node",
            "Register",
            state.register({ node: nodeKey, name: options.name ?? nodeKey, maxRunners, generation })
          ),
          { incarnation: state.incarnation }
        )

      // As the real source: the stream's client is looked up once, without a retry.
      const subscribe = (generation: number) =>
        Stream.unwrap(
          Effect.map(conn.client("node"), (client) =>
            network.streamOn(
              client,
              `${WorkerProtocol.serviceNames.node}/Subscribe`,
              Stream.unwrapScoped(
                Effect.map(
                  Effect.mapError(state.subscribe(nodeKey, generation), toGrpcError("node", "Subscribe")),
                  Stream.mapError(toGrpcError("node", "Subscribe"))
                )
              )
            ))
        )

      return {
        nodeKey,
        maxRunners,
        fetch,
        report,
        reportAll,
        heartbeat,
        register,
        subscribe
      } satisfies TaskSource.TaskSource
    })
  )
