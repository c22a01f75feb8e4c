/**
 * The worker's task loop. It waits for readiness at start (bounded), fetches
 * tasks for its free runners with fetches that wait at the master, runs them
 * under a runner cap, reports every status through the outbox, keeps the node
 * joined to the master, and drains on shutdown.
 *
 * Over 400 lines, as one concept: the fetch loop, the runners, the reports and
 * the drain share one task handler's counters, its readiness holds and the
 * signal that ends a waiting fetch, in one scope; split, each part would take
 * the others' state as arguments. Membership, which needs none of it, is in
 * `internal/taskHandler/`; the reports' durability is the outbox's.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberMap from "effect/FiberMap"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Connection from "./Connection.js"
import * as Cfg from "./internal/shared/config.js"
import { errorMessage, formatMillis } from "./internal/shared/format.js"
import { failOnDefect, forkLoop } from "./internal/shared/loop.js"
import * as Validate from "./internal/shared/validate.js"
import * as Membership from "./internal/taskHandler/membership.js"
import * as Metrics from "./Metrics.js"
import * as Outbox from "./Outbox.js"
import * as Readiness from "./Readiness.js"
import * as TaskProcess from "./TaskProcess.js"
import * as TaskSource from "./TaskSource.js"

/**
 * A task with its payload decoded.
 *
 * @since 0.1.0
 * @category models
 */
export interface Task<P> {
  readonly id: string
  readonly payload: P
  readonly priority: number
  readonly createdAt: number
}

/**
 * A task that failed for a reason of its own; its message is reported.
 *
 * @since 0.1.0
 * @category errors
 */
export class TaskError extends Data.TaggedError("TaskError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * What the task handler has done so far; every fetch failure is counted here.
 *
 * @since 0.1.0
 * @category models
 */
export interface WorkerStatus {
  readonly running: number
  readonly fetched: number
  readonly fetchFailures: number
  readonly finished: number
  readonly failed: number
  readonly cancelled: number
  readonly malformed: number
  readonly heartbeatFailures: number
  /** Reports the outbox could not store (disk full, read-only): kept in memory and stored again until it can. */
  readonly unpersisted: number
}

/**
 * Is this a `TaskError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isTaskError = (u: unknown): u is TaskError => Predicate.isTagged(u, "TaskError")

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<P, I, R> {
  /** Decodes a task's JSON payload; a payload that does not decode is reported as an error. */
  readonly payload: Schema.Schema<P, I, never>
  /**
   * Runs one task. A failure or a defect is reported as status ERROR with its
   * message. It is given the task's `TaskProcess.RunningTask`.
   */
  readonly run: (task: Task<P>) => Effect.Effect<unknown, unknown, R>
  /** Default: the task source's runner cap (`TaskSource.NodeOptions.maxRunners`), else 20. */
  readonly maxRunners?: number | undefined
  /**
   * How long a fetch may wait at the master for a task (the master holds it until a task is queued). Keep it
   * below the read timeout of any proxy between worker and master (nginx's is 60 s). Zero: no waiting; the
   * worker asks every `fetchInterval`. Default 25 s.
   */
  readonly fetchWait?: Duration.DurationInput | undefined
  /**
   * How often the worker asks a master that answers at once (one that predates waiting fetches), and how long it
   * pauses after a fetch failed. Default 1 s.
   */
  readonly fetchInterval?: Duration.DurationInput | undefined
  /** How long a fetch may take beyond its wait, its retries included. Default 15 s. */
  readonly fetchTimeout?: Duration.DurationInput | undefined
  /** How long the start waits for readiness before it starts anyway, with a warning. Default 30 s. */
  readonly startupWait?: Duration.DurationInput | undefined
  /**
   * How often the node tells the master it is alive when nothing else does: a heartbeat is sent only when no
   * fetch waits at the master and none was answered within it. Default 15 s.
   */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** How long running tasks may finish on shutdown before they are interrupted. Default 30 s. */
  readonly drainGrace?: Duration.DurationInput | undefined
  /** How long shutdown waits for the outbox; what is left is delivered after the next start. Default 10 s. */
  readonly flushTimeout?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  maxRunners: 20,
  fetchWait: Duration.seconds(25),
  fetchInterval: Duration.seconds(1),
  fetchTimeout: Duration.seconds(15),
  startupWait: Duration.seconds(30),
  heartbeatInterval: Duration.seconds(15),
  drainGrace: Duration.seconds(30),
  flushTimeout: Duration.seconds(10)
} as const

/**
 * @since 0.1.0
 * @category models
 */
export interface TaskHandler {
  /** The counters now. */
  readonly status: Effect.Effect<WorkerStatus>
  /** The counters, then every change. */
  readonly changes: Stream.Stream<WorkerStatus>
  /** The ids of the tasks running now. */
  readonly running: Effect.Effect<ReadonlyArray<string>>
  readonly outbox: Outbox.Outbox
}

/**
 * @since 0.1.0
 * @category tags
 */
export const TaskHandler: Context.TagClass<TaskHandler, "effect-grpc-resilience/TaskHandler", TaskHandler> = Context
  .Tag(
    "effect-grpc-resilience/TaskHandler"
  )<TaskHandler, TaskHandler>()

// The longest wait a fetch may ask for: the protocol carries milliseconds in 32 bits, and no proxy holds a quiet
// call for longer.
const maxFetchWait = Duration.minutes(10)

/**
 * The error of a task that was running when its worker stopped (a crash, a
 * kill, a power loss): after the restart it is reported `ERROR` with this
 * message, once. It is not run again: it may have done part of its work.
 *
 * @since 0.2.0
 * @category constants
 */
export const restartMessage = "the worker restarted while running this task"

/**
 * Starts the task handler in the current scope. It returns at once; the
 * startup wait runs in its own fiber.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <P, I, R, C extends TaskSource.WorkerConnection>(
  options: Options<P, I, R> & TaskSource.Using<C>
): Effect.Effect<
  TaskHandler,
  Validate.InvalidOption | Outbox.OutboxError,
  | Context.Tag.Identifier<C>
  | TaskSource.TaskSource
  | Outbox.OutboxStore
  | Scope.Scope
  | Exclude<R, TaskProcess.RunningTask>
> =>
  Effect.gen(function*() {
    const conn: Connection.Connection = yield* (options.connection as TaskSource.ConnectionTag<
      Context.Tag.Identifier<C>
    >)
    const source = yield* TaskSource.TaskSource
    // Every line and every series of this task handler names its master and its node: two in one app are told apart.
    return yield* Effect.zipRight(Metrics.atZero(Metrics.taskHandlerSeries), makeFor(options, conn, source)).pipe(
      Effect.annotateLogs({ module: "TaskHandler", address: conn.address, node: source.nodeKey }),
      Effect.tagMetrics({ address: conn.address, node: source.nodeKey })
    )
  })

const makeFor = <P, I, R>(
  options: Options<P, I, R>,
  conn: Connection.Connection,
  source: TaskSource.TaskSource
): Effect.Effect<
  TaskHandler,
  Validate.InvalidOption | Outbox.OutboxError,
  Outbox.OutboxStore | Scope.Scope | Exclude<R, TaskProcess.RunningTask>
> =>
  Effect.gen(function*() {
    const maxRunners = yield* Validate.integer(
      "maxRunners",
      options.maxRunners,
      source.maxRunners ?? defaults.maxRunners
    )
    const duration = (name: keyof typeof defaults & keyof Options<P, I, R>) =>
      Validate.positiveDuration(
        name,
        options[name] as Duration.DurationInput | undefined,
        defaults[name] as Duration.Duration
      )
    const fetchWait = yield* Validate.option(
      "fetchWait",
      Validate.isDurationUpTo(maxFetchWait),
      options.fetchWait,
      defaults.fetchWait
    )
    const fetchInterval = yield* duration("fetchInterval")
    const fetchTimeout = yield* duration("fetchTimeout")
    const startupWait = yield* duration("startupWait")
    const heartbeatInterval = yield* duration("heartbeatInterval")
    const drainGrace = yield* duration("drainGrace")
    const flushTimeout = yield* duration("flushTimeout")

    const context = yield* Effect.context<Exclude<R, TaskProcess.RunningTask>>()
    const decode = Schema.decodeUnknownEither(Schema.parseJson(options.payload))

    // Not ready until the task handler runs: an outbox that does not open (a hung mount) holds readiness back.
    const setTasks = yield* conn.readiness.hold(
      "tasks",
      Readiness.CheckResult.Failed({ message: "the task handler is starting: its outbox is not open yet" })
    )
    // Not ready before the node has registered: held from the start, so no gap shows ready before it joined.
    const setMember = yield* conn.readiness.hold("member", Readiness.CheckResult.Pending())
    const outbox = yield* Outbox.make({
      deliver: source.report,
      deliverAll: source.reportAll,
      node: source.nodeKey,
      master: conn.address
    })
    const runners = yield* FiberMap.make<string, void, never>()
    // The counters: changed in place, in one step each (several a task), and every change offered to the
    // subscribers of `changes`, none of which holds a change back.
    let stats: WorkerStatus = {
      running: 0,
      fetched: 0,
      fetchFailures: 0,
      finished: 0,
      failed: 0,
      cancelled: 0,
      malformed: 0,
      heartbeatFailures: 0,
      unpersisted: 0
    }
    const changed = yield* PubSub.unbounded<WorkerStatus>()
    const countNow = (f: (s: WorkerStatus) => Partial<WorkerStatus>) => {
      stats = { ...stats, ...f(stats) }
      changed.unsafeOffer(stats)
      return stats
    }
    const count = (f: (s: WorkerStatus) => Partial<WorkerStatus>) => Effect.sync(() => void countNow(f))
    const wake = yield* Queue.sliding<void>(1)
    const poke = Queue.offer(wake, undefined)
    const stopping = yield* Deferred.make<void>()

    // Completed, and replaced, whenever a fetch may no longer wait: the connection left Ready (a fetch waiting on
    // a lost connection ends with the loss, not with its deadline), or a report could not be stored (no task is
    // taken until it is). A fetch races the one it took before it started: a Deferred, quick to give up on.
    const mayNotWait = yield* Ref.make(yield* Deferred.make<void>())
    const endWaiting = Effect.flatMap(
      Effect.flatMap(Deferred.make<void>(), (next) => Ref.getAndSet(mayNotWait, next)),
      (previous) => Deferred.succeed(previous, undefined)
    )

    // A report that could not be stored is held by the outbox, stored again until it is, and counted here;
    // meanwhile no task is fetched. The retries are interruptible: a drain can end them.
    const held = (change: number) =>
      Effect.flatMap(
        Effect.sync(() => countNow((s) => ({ unpersisted: s.unpersisted + change }))),
        (s) =>
          Effect.zipRight(
            Metric.set(Metrics.outboxUnpersisted, s.unpersisted).pipe(
              // Nothing held any more: fetching goes on. One held: a waiting fetch ends, no task is taken.
              Effect.zipRight(s.unpersisted === 0 ? poke : endWaiting)
            ),
            Effect.flatMap(Deferred.isDone(stopping), (stopped) =>
              stopped ? Effect.void : setTasks(
                s.unpersisted === 0 ? Readiness.CheckResult.Passed() : Readiness.CheckResult.Failed({
                  message: `${s.unpersisted} reports could not be stored; held in memory until they are`
                })
              ))
          )
      )
    const holding = Effect.sync(() => stats.unpersisted > 0)
    const persist = (stored: TaskSource.StatusReport) =>
      outbox.addUntilStored(stored, (storing) => Effect.acquireUseRelease(held(1), () => storing, () => held(-1)))

    // The counter of each final status, with this task handler's labels resolved once: the series `Metric.increment`
    // would find under the fiber's labels, found without building its key again at every report.
    const labels = yield* FiberRef.get(FiberRef.currentMetricLabels)
    const counter = (status: TaskSource.ReportedStatus) => {
      const series = Metric.taggedWithLabels(Metrics.tasks, Arr.union([MetricLabel.make("status", status)], labels))
      return Effect.sync(() => series.unsafeUpdate(1, []))
    }
    const ended = { FINISHED: counter("FINISHED"), ERROR: counter("ERROR"), CANCELLED: counter("CANCELLED") }
    const report = (taskId: string, status: TaskSource.ReportedStatus, error = "") => {
      const stored = persist({ key: `${taskId}:${status}`, taskId, status, error })
      return status === "RUNNING" ? stored : Effect.zipRight(ended[status], stored)
    }

    // After a reconnection: when the connection became Ready, until the first task is fetched.
    const reconnectedAt = yield* Ref.make<number | undefined>(undefined)

    // One task, from the payload to its last report; an interruption (cancel, shutdown) is reported CANCELLED. It
    // runs in a fiber of its own, whose log annotations are set once, never restored (`annotateLogs` would).
    const runTask = (incoming: TaskSource.IncomingTask): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        yield* FiberRef.update(
          FiberRef.currentLogAnnotations,
          (annotations) => HashMap.set(HashMap.set(annotations, "fiber", "runner"), "task", incoming.id)
        )
        const payload = decode(incoming.payload)
        if (Either.isLeft(payload)) {
          const issues = ParseResult.ArrayFormatter.formatErrorSync(payload.left)
          const message = `malformed task payload: ${
            issues.map((issue) => `${issue.path.length > 0 ? `${issue.path.join(".")}: ` : ""}${issue.message}`).join(
              "; "
            )
          }`
          yield* Effect.logError(`task ${incoming.id}: ${message}`)
          yield* count((s) => ({ malformed: s.malformed + 1 }))
          return yield* report(incoming.id, "ERROR", message)
        }
        const task: Task<P> = {
          id: incoming.id,
          payload: payload.right,
          priority: incoming.priority,
          createdAt: incoming.createdAt
        }
        yield* report(task.id, "RUNNING")
        // Its start at Debug, its end at Info: one line a task at Info, which tells an operator it ran and how it
        // ended (at Debug, the start too: the process-level tests count a task's starts with it).
        yield* Effect.logDebug(`task ${task.id} started`)
        yield* options.run(task).pipe(
          Effect.onExit((exit) => {
            if (Exit.isSuccess(exit)) {
              return Effect.logInfo(`task ${task.id} finished`).pipe(
                Effect.zipRight(count((s) => ({ finished: s.finished + 1 }))),
                Effect.zipRight(report(task.id, "FINISHED"))
              )
            }
            if (Cause.isInterruptedOnly(exit.cause)) {
              return Effect.logWarning(`task ${task.id} cancelled`).pipe(
                Effect.zipRight(count((s) => ({ cancelled: s.cancelled + 1 }))),
                Effect.zipRight(report(task.id, "CANCELLED", "cancelled"))
              )
            }
            const failure = Cause.failureOption(exit.cause)
            const message = Option.isSome(failure)
              ? errorMessage(failure.value)
              : `defect: ${errorMessage(Cause.squash(exit.cause))}`
            return Effect.logWarning(`task ${task.id} failed: ${message}`).pipe(
              Effect.zipRight(count((s) => ({ failed: s.failed + 1 }))),
              Effect.zipRight(report(task.id, "ERROR", message))
            )
          }),
          Effect.ignore
        )
      })

    // Whether the master hears the node without a heartbeat: it holds a waiting fetch of the node (`waits`), or
    // answered one within the heartbeat interval.
    const fetching = yield* Ref.make({ waits: false, held: false, answeredAt: Number.NEGATIVE_INFINITY })
    // The registration (`Member.join`) whose fetch the master last answered.
    const answeredJoin = yield* Ref.make(0)
    // After a reply too large for this worker, one task a fetch, until a fetch brings one: an oversized task in a
    // batch would fail the tasks beside it.
    const oneAtATime = yield* Ref.make(false)
    const heardFor = Effect.zipWith(
      Ref.get(fetching),
      Clock.currentTimeMillis,
      (f, now) =>
        !f.waits
          ? 0
          : f.held
          ? Duration.toMillis(heartbeatInterval)
          : f.answeredAt + Duration.toMillis(heartbeatInterval) - now
    )

    // Takes what one fetch brought: each task runs, once. How many it started.
    const take = (tasks: ReadonlyArray<TaskSource.IncomingTask>) =>
      Effect.gen(function*() {
        let started = 0
        countNow((s) => ({ fetched: s.fetched + tasks.length }))
        // The fetch's own fiber refs and runtime flags, as a fork would take them.
        const { fiberRefs, runtimeFlags } = yield* Effect.runtime<never>()
        for (const incoming of tasks) {
          yield* Effect.logDebug(`task ${incoming.id} fetched`)
          // A task handed out again (its first reply may have been lost) runs once: not when it runs now,
          // nor when its reports still wait in the outbox.
          const known = (yield* FiberMap.has(runners, incoming.id)) || (yield* outbox.tracks(incoming.id))
          if (known) {
            yield* Effect.logWarning(`task ${incoming.id} was handed out again; it runs here already, not twice`)
            continue
          }
          countNow((s) => ({ running: s.running + 1 }))
          // Its runner starts in a runtime of its own, with one context for the task: the app's services and the
          // task's own, given in one step rather than provided around the task and restored after it.
          const runtime = Runtime.make({
            context: Context.add(
              context,
              TaskProcess.RunningTask,
              TaskProcess.running(outbox, incoming.id)
            ) as Context.Context<R>,
            fiberRefs,
            runtimeFlags
          })
          // Started, observed and in the map in one uninterruptible step: a shutdown between them would leave a
          // runner the drain does not wait for, or a count never lowered.
          yield* Effect.uninterruptible(Effect.suspend(() => {
            const runner = Runtime.runFork(runtime)(runTask(incoming))
            // Once it has ended, however (a runner interrupted before its first step too): a freed runner may fetch
            // the next task at once.
            runner.addObserver(() => {
              countNow((s) => ({ running: s.running - 1 }))
              wake.unsafeOffer(undefined)
            })
            return FiberMap.set(runners, incoming.id, runner)
          }))
          started++
        }
        if (started > 0) {
          const since = yield* Ref.getAndSet(reconnectedAt, undefined)
          if (since !== undefined) {
            yield* Metric.update(Metrics.readyToFirstFetchSeconds, ((yield* Clock.currentTimeMillis) - since) / 1000)
          }
        }
        return started
      })

    /**
     * One fetch, made as a member for the free runners, and what follows it:
     * - `Again`: fetch again at once (it brought tasks, or the master held it for its whole wait);
     * - `Pause`: fetch again after `fetchInterval` or a wake (no task from a master that answers at once, a
     *   failure, a task handed out again);
     * - `Wake`: wait for a wake (the connection left the member's generation, a report is held).
     */
    const fetchOne = (
      membership: Membership.Membership,
      member: Membership.Member,
      free: number,
      guard: Deferred.Deferred<void>
    ): Effect.Effect<"Again" | "Pause" | "Wake"> =>
      Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        const running = yield* FiberMap.size(runners)
        // A registration's first fetch is answered at once: the answer shows the master serves the registration,
        // and says whether it holds fetches.
        const firstOfJoin = member.join !== (yield* Ref.get(answeredJoin))
        const wait = firstOfJoin ? Duration.zero : fetchWait
        const timeout = Duration.sum(wait, fetchTimeout)
        yield* Ref.update(fetching, (f) => ({ ...f, held: f.waits && Duration.greaterThan(wait, Duration.zero) }))
        const max = (yield* Ref.get(oneAtATime)) ? 1 : free
        const fetched = yield* source.fetch({ wait, max, running }).pipe(
          // A fetch that dies (a bug in a task source of the app's own) has failed: the loop goes on.
          failOnDefect("the fetch", (message) => new TaskError({ message })),
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new TaskError({ message: `fetch took longer than ${formatMillis(timeout)}` })
          }),
          Effect.either,
          Effect.raceFirst(Effect.as(Deferred.await(guard), undefined)),
          Effect.ensuring(Ref.update(fetching, (f) => ({ ...f, held: false })))
        )
        if (fetched === undefined) return "Wake"
        if (Either.isLeft(fetched)) {
          const error = fetched.left
          yield* Effect.logWarning(`fetch failed: ${errorMessage(error)}`)
          yield* count((s) => ({ fetchFailures: s.fetchFailures + 1 }))
          yield* Metric.increment(Metrics.fetchFailures)
          if (error._tag === "GrpcError" && error.code === grpc.status.RESOURCE_EXHAUSTED) {
            yield* Ref.set(oneAtATime, true)
          }
          if (error._tag !== "TaskError") {
            yield* membership.observe(member, error)
          }
          return "Pause"
        }
        const answeredAt = yield* Clock.currentTimeMillis
        yield* membership.served(member)
        yield* Ref.set(answeredJoin, member.join)
        const { tasks, waits } = fetched.right
        yield* Ref.set(fetching, { waits, held: false, answeredAt })
        if (tasks.length > 0) {
          yield* Ref.set(oneAtATime, false)
          // A task handed out again, and nothing new: the master hands it out until it hears RUNNING; do not spin.
          return (yield* take(tasks)) > 0 ? "Again" : "Pause"
        }
        // No task: a master that held the fetch for its wait is asked again at once; one that answered sooner
        // (it answers at once, or it is stopping) after the interval.
        if (!waits || Duration.isZero(fetchWait)) return "Pause"
        return firstOfJoin || answeredAt - startedAt >= Duration.toMillis(wait) ? "Again" : "Pause"
      })

    // Fetches while runners are free, the node is a member on the current generation (a generation's first fetch
    // waits for its Register) and no report is held; otherwise it waits for what it waits on: a runner freed, a
    // registration, the held reports stored. Nothing ticks while the worker is busy, idle at a waiting master, or
    // disconnected.
    const fetchLoop = (membership: Membership.Membership): Effect.Effect<never> =>
      Effect.gen(function*() {
        while (true) {
          // The runners that end with the one that woke this loop end first: one fetch for all they free.
          yield* Effect.yieldNow()
          // Taken before the look: a change after the look still ends the fetch.
          const guard = yield* Ref.get(mayNotWait)
          // From the count, which a runner lowers as it ends, before it pokes.
          const free = maxRunners - stats.running
          const member = yield* membership.current
          if (free <= 0 || (yield* holding) || Option.isNone(member)) {
            yield* Queue.take(wake)
            continue
          }
          const next = yield* fetchOne(membership, member.value, free, guard)
          if (next === "Pause") yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(fetchInterval))
          else if (next === "Wake") yield* Queue.take(wake)
        }
      })

    // The master's cancel interrupts the task's runner, which reports it CANCELLED.
    const cancel = (taskId: string) =>
      FiberMap.has(runners, taskId).pipe(
        Effect.flatMap((running) =>
          running
            ? Effect.logWarning(`the master cancels task ${taskId}`).pipe(
              Effect.zipRight(FiberMap.remove(runners, taskId))
            )
            : Effect.logInfo(`the master cancels task ${taskId}, which is not running here`)
        )
      )

    const start = Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      // Recorded as started, never ended: the worker stopped while they ran. Reported once: the report ends the record,
      // after what they started and left running is ended.
      yield* Effect.forEach(outbox.unfinished, (taskId) =>
        Effect.gen(function*() {
          const left = yield* Effect.flatMap(outbox.processes(taskId), TaskProcess.endLeftBehind)
          const message = Option.match(left, { onNone: () => restartMessage, onSome: (l) => `${restartMessage}; ${l}` })
          yield* Effect.logWarning(`task ${taskId} was running when the worker stopped: reported ERROR (${message})`)
          yield* count((s) => ({ failed: s.failed + 1 }))
          yield* report(taskId, "ERROR", message)
        }), { concurrency: "unbounded", discard: true })
      // The connection's own readiness: the node registers, and the task handler has started, only after it.
      const waited = yield* conn.transitions.pipe(
        Stream.filter((state) => state._tag === "Ready"),
        Stream.runHead,
        Effect.timeoutOption(startupWait)
      )
      if (Option.isNone(waited)) {
        const now = yield* conn.readiness.status
        yield* Effect.logWarning(
          `starting task handler before the connection is ready (waited ${formatMillis(startupWait)}): ${
            Readiness.describeFailure(now.report)
          }`
        )
      } else {
        yield* Effect.logInfo("connection ready, starting task handler")
      }
      yield* Metric.set(Metrics.startupSeconds, ((yield* Clock.currentTimeMillis) - startedAt) / 1000)
      const membership = yield* Membership.start({
        connection: conn,
        source,
        heartbeatInterval,
        running: FiberMap.size(runners),
        heardFor,
        cancel,
        onHeartbeatFailure: count((s) => ({ heartbeatFailures: s.heartbeatFailures + 1 })),
        setMember
      })
      yield* forkLoop(
        "ready",
        conn.transitions.pipe(
          Stream.filter((state) => state._tag === "Ready" && state.generation > 1),
          Stream.runForEach((state) => state._tag === "Ready" ? Ref.set(reconnectedAt, state.since) : Effect.void)
        )
      )
      // Fetch at once on every registration: after a reconnection, and after the master forgot the node.
      yield* forkLoop("joined", Stream.runForEach(membership.joined, () => poke))
      yield* forkLoop(
        "fetch-guard",
        conn.transitions.pipe(Stream.filter((state) => state._tag !== "Ready"), Stream.runForEach(() => endWaiting))
      )
      yield* forkLoop("fetch", Effect.raceFirst(fetchLoop(membership), Deferred.await(stopping)))
    })
    yield* setTasks(Readiness.CheckResult.Passed())
    yield* forkLoop("start", start)

    // Added last, so it runs first on close: stop fetching, let runners finish, then flush the outbox.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* Deferred.succeed(stopping, undefined)
        yield* setTasks(Readiness.CheckResult.Failed({ message: "the task handler is stopping" }))
        yield* Effect.logInfo("stopping: no new tasks are fetched")
        const running = yield* FiberMap.size(runners)
        if (running > 0) {
          yield* Effect.logInfo(`draining: ${running} tasks may finish within ${formatMillis(drainGrace)}`)
          // Finalizers run uninterruptibly: the waits are made interruptible so their timeouts can end them.
          const finished = yield* Effect.timeoutOption(Effect.interruptible(FiberMap.awaitEmpty(runners)), drainGrace)
          if (Option.isNone(finished)) {
            yield* Effect.logWarning(`drain grace over: cancelling ${yield* FiberMap.size(runners)} tasks`)
            yield* FiberMap.clear(runners)
          }
        }
        const flushed = yield* Effect.timeoutOption(Effect.interruptible(outbox.flush), flushTimeout)
        if (Option.isNone(flushed)) {
          const left = yield* outbox.size
          yield* Effect.logWarning(`${left} reports left in the outbox; they are delivered after the next start`)
        }
      }).pipe(
        Effect.annotateLogs({ module: "TaskHandler", fiber: "drain", address: conn.address, node: source.nodeKey })
      )
    )

    return {
      status: Effect.zipWith(Effect.sync(() => stats), FiberMap.size(runners), (s, running) => ({ ...s, running })),
      // Subscribed before the counters are read: no change is missed between them.
      changes: Stream.unwrapScoped(
        Effect.map(PubSub.subscribe(changed), (later) => Stream.concat(Stream.succeed(stats), Stream.fromQueue(later)))
      ),
      running: Effect.sync(() => Array.from(runners, ([id]) => id)),
      outbox
    } satisfies TaskHandler
  })

/**
 * The task handler as a layer: it runs for as long as the layer's scope, and
 * drains when the scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <P, I, R, C extends TaskSource.WorkerConnection>(
  options: Options<P, I, R> & TaskSource.Using<C>
): Layer.Layer<
  TaskHandler,
  Validate.InvalidOption | Outbox.OutboxError,
  Context.Tag.Identifier<C> | TaskSource.TaskSource | Outbox.OutboxStore | Exclude<R, TaskProcess.RunningTask>
> => Layer.scoped(TaskHandler, make(options))

/**
 * The task handler's timings as `Config` reads them, each optional: `fetchWait`, `fetchInterval`, `fetchTimeout`,
 * `startupWait`, `heartbeatInterval`, `drainGrace` and `flushTimeout` (in the environment `FETCH_WAIT`, ...). Its
 * runner cap is the task source's (`TaskSource.config`'s `maxRunners`). A record: spread it to override one.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  fetchWait: Cfg.optional(
    Cfg.durationUpTo("fetchWait", maxFetchWait, "How long a fetch may wait at the master for a task.")
  ),
  fetchInterval: Cfg.optional(
    Cfg.duration("fetchInterval", "The time between fetches from a master that answers at once.")
  ),
  fetchTimeout: Cfg.optional(Cfg.duration("fetchTimeout", "One fetch's bound beyond its wait.")),
  startupWait: Cfg.optional(Cfg.duration("startupWait", "How long the start waits for readiness.")),
  heartbeatInterval: Cfg.optional(
    Cfg.duration("heartbeatInterval", "The time between heartbeats when the master hears nothing else.")
  ),
  drainGrace: Cfg.optional(Cfg.duration("drainGrace", "Running tasks' time to finish on shutdown.")),
  flushTimeout: Cfg.optional(Cfg.duration("flushTimeout", "The outbox's time to deliver on shutdown."))
} satisfies Config.Config.Wrap<Timings>

/**
 * The options of a task handler that `Config` can hold: all but the task's schema, its handler and the connection.
 *
 * @since 0.2.0
 * @category models
 */
export type Timings = Omit<Options<never, never, never>, "payload" | "run">

/**
 * The task handler as a layer, with what only code can say given in code (the task's schema, its handler, the
 * connection) and its timings read from `config` (default {@link config}; see `Connection.layerConfig` for where
 * it is read from).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = <P, I, R, C extends TaskSource.WorkerConnection>(
  code: Pick<Options<P, I, R>, "payload" | "run"> & TaskSource.Using<C>,
  timings: Config.Config.Wrap<Timings> = config
): Layer.Layer<
  TaskHandler,
  Validate.InvalidOption | Outbox.OutboxError | ConfigError.ConfigError,
  Context.Tag.Identifier<C> | TaskSource.TaskSource | Outbox.OutboxStore | Exclude<R, TaskProcess.RunningTask>
> => Layer.scoped(TaskHandler, Effect.flatMap(Cfg.read(timings), (read) => make<P, I, R, C>({ ...read, ...code })))
