/**
 * The bookkeeping of a master, without a transport: the node registry, the
 * task queue, the status reports and the subscriptions the master writes to.
 * `Master` serves it over a grpc-js server, `SimulatedMaster` over the
 * simulated network; both answer exactly alike because both are this.
 *
 * Times come from `Clock` and injected failures from `Random`, both read from
 * the fiber that runs the operation.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as HashMap from "effect/HashMap"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as Validate from "../../internal/validate.js"
import type { MasterRequest } from "../../TaskSource.js"

// -------------------------------------------------------------------------------------------------
// Models (re-exported by Master and SimulatedMaster)
// -------------------------------------------------------------------------------------------------

/**
 * A task's status on the master. Moves only forward:
 * `PENDING` -> `ASSIGNED` -> `RUNNING` -> `FINISHED` | `ERROR` | `CANCELLED`.
 */
export type TaskStatus = "PENDING" | "ASSIGNED" | "RUNNING" | "FINISHED" | "ERROR" | "CANCELLED"

/** One accepted status of a task. */
export interface StatusChange {
  readonly status: TaskStatus
  /** Epoch millis, from the master's `Clock`. */
  readonly at: number
  /** The node that caused the change; `undefined` for the master's own changes (enqueue, cancel). */
  readonly node: string | undefined
  /** The reported error, with `ERROR`. */
  readonly error: string | undefined
}

/** A snapshot of one task. */
export interface TaskInfo {
  readonly id: string
  readonly payload: string
  readonly priority: number
  /** Epoch millis. */
  readonly createdAt: number
  readonly status: TaskStatus
  /** The node the task was enqueued for, or handed out to. */
  readonly node: string | undefined
  /**
   * How many times a fetch handed it out. More than 1 only when a hand-out went
   * unconfirmed (no RUNNING report) for `redeliverAfter`: the reply may have been
   * lost, so the same node gets it again; never another node.
   */
  readonly handedOut: number
  /** The accepted statuses, oldest first, starting with `PENDING`. */
  readonly history: ReadonlyArray<StatusChange>
}

/** A snapshot of one registered node. */
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
 */
export type CancelOutcome = "NotHandedOut" | "Notified" | "NoSubscription" | "AlreadyEnded"

/** A task to add. */
export interface EnqueueOptions {
  /** Sent to the worker as is; the protocol says JSON. */
  readonly payload: string
  /** An int32; higher is handed out first. Default 0. */
  readonly priority?: number | undefined
  /** Hand the task out to this node only. */
  readonly node?: string | undefined
}

/** What the master did with a status report. */
export type ReportOutcome = "ACCEPTED" | "DUPLICATE" | "STALE"

/** A master operation that could not be done (`BindFailed` comes from a transport). */
export class MasterError extends Data.TaggedError("MasterError")<{
  readonly reason: "InvalidOption" | "BindFailed" | "UnknownTask"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A worker's request the master refused; `message` is what the worker is told.
 *
 * - `InvalidArgument`: an empty key or id, a negative runner cap, a status a worker may not report.
 * - `UnknownTask`: no such task.
 * - `UnknownNode`: the node is not a member: it never registered, or the master forgot it. Answered with the
 *   protocol's `NODE_NOT_REGISTERED` detail, so the worker registers again.
 * - `NotHandedOut`: a report for a task not handed out to that node.
 * - `InjectedFailure`: failed on purpose (`failureRate`).
 */
export class Rejection extends Data.TaggedError("Rejection")<{
  readonly reason: "InvalidArgument" | "UnknownTask" | "UnknownNode" | "NotHandedOut" | "InjectedFailure"
  readonly message: string
}> {}

/** The canonical RPC status (google.rpc.Code) each rejection is answered with. */
export const canonicalCode = {
  InvalidArgument: "INVALID_ARGUMENT",
  UnknownTask: "NOT_FOUND",
  UnknownNode: "FAILED_PRECONDITION",
  NotHandedOut: "FAILED_PRECONDITION",
  InjectedFailure: "UNAVAILABLE"
} as const satisfies Record<Rejection["reason"], string>

/** A node's registration. */
export interface Registration {
  readonly node: string
  readonly name: string
  readonly maxRunners: number
  readonly generation: number
}

/** One status report of a worker. */
export interface Report {
  readonly taskId: string
  readonly node: string
  /** Checked at run time too: a transport may carry anything. */
  readonly status: TaskStatus
  readonly error: string
  readonly key: string
}

/** The master's options that are not about a transport. */
export interface Options {
  /** A node not heard from within two intervals is offline. Default 15 s. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** A hand-out not confirmed (by a RUNNING report) within this is handed out again to the same node. Default 10 s. */
  readonly redeliverAfter?: Duration.DurationInput | undefined
  /**
   * A task handed out this many times without a RUNNING report ends `ERROR` instead of going out again:
   * the node cannot take it (a reply too large for it, say). Default 5.
   */
  readonly maxHandOuts?: number | undefined
  /** The fraction (0 to 1) of the calls `injectFailure` fails. Default 0. */
  readonly failureRate?: number | undefined
}

export const defaults = {
  heartbeatInterval: Duration.seconds(15),
  redeliverAfter: Duration.seconds(10),
  maxHandOuts: 5,
  failureRate: 0
} as const

/** The master's bookkeeping. */
export interface MasterState {
  // The test's side.
  /** Adds a `PENDING` task and returns its id. */
  readonly enqueue: (options: EnqueueOptions) => Effect.Effect<string, MasterError>
  /** Every task, in creation order. */
  readonly tasks: Effect.Effect<ReadonlyArray<TaskInfo>>
  readonly task: (id: string) => Effect.Effect<TaskInfo, MasterError>
  /** Every registered node, in registration order; `online` as of now. */
  readonly nodes: Effect.Effect<ReadonlyArray<NodeInfo>>
  /** How many subscriptions are open. */
  readonly subscriptions: Effect.Effect<number>
  /** Ends the task `CANCELLED`, and tells the newest subscription of its node. */
  readonly cancel: (id: string) => Effect.Effect<CancelOutcome, MasterError>
  /** Fails this share of calls with UNAVAILABLE: of every call, or only of the operations named (`ReportStatus`). */
  readonly setFailureRate: (
    rate: number,
    options?: { readonly only?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<void, MasterError>
  /** Ends every subscription (their transport died) and forgets them. */
  readonly dropSubscriptions: Effect.Effect<void>

  // The worker's side.
  /** Fails `InjectedFailure` with the probability of the failure rate. */
  readonly injectFailure: (operation: string) => Effect.Effect<void, Rejection>
  /** Registers the node, or updates its registration (generation, name, cap). */
  readonly register: (registration: Registration) => Effect.Effect<void, Rejection>
  /** Records a heartbeat of a registered node; false for a node that is not registered (nothing recorded). */
  readonly heartbeat: (node: string, running: number) => Effect.Effect<boolean, Rejection>
  /**
   * The registered node's next task, which becomes `ASSIGNED` to it; none when nothing is pending for it. A
   * retry of a fetch (the same non-empty `fetchId`) gets the same task. A node not registered is refused.
   */
  readonly fetch: (node: string, fetchId?: string) => Effect.Effect<Option.Option<TaskInfo>, Rejection>
  /** Idempotent by `key`, forward only. */
  readonly report: (report: Report) => Effect.Effect<ReportOutcome, Rejection>
  /**
   * Opens the subscription of a registered node for one generation, for as
   * long as the scope: the master's requests, until a newer subscription of
   * the same node and generation replaces it or the subscriptions are dropped.
   * Closing the scope removes this subscription only, never a newer one.
   */
  readonly subscribe: (
    node: string,
    generation: number
  ) => Effect.Effect<Stream.Stream<MasterRequest, Rejection>, Rejection, Scope.Scope>
  /**
   * Forgets the node, as a master that expired it or failed over would: its
   * registration goes, its subscriptions end with `UnknownNode`, and its calls
   * are refused until it registers again. Its tasks stay as they are. False
   * when the node was not registered.
   */
  readonly forget: (node: string) => Effect.Effect<boolean>
  /** New on every `make`: a master with empty memory has another. */
  readonly incarnation: string
}

// -------------------------------------------------------------------------------------------------
// State: one immutable value in a Ref, changed by pure transitions
// -------------------------------------------------------------------------------------------------

interface TaskRecord extends TaskInfo {
  readonly seq: number
  readonly reportKeys: ReadonlySet<string>
  /** Epoch millis of the last hand-out. */
  readonly handedOutAt: number | undefined
  /** The fetch id of the last hand-out: a retry of that fetch gets the task again. */
  readonly fetchId: string | undefined
  /** Hand-outs to distinct fetches: a retried fetch getting its answer again is not one more. */
  readonly deliveries: number
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

interface Subscription {
  readonly id: number
  readonly node: string
  readonly generation: number
  readonly mailbox: Mailbox.Mailbox<MasterRequest, Rejection>
}

interface State {
  /** How many tasks, nodes and subscriptions were ever added: ids and creation order. */
  readonly taskCount: number
  readonly nodeCount: number
  readonly subscriptionCount: number
  readonly tasks: HashMap.HashMap<string, TaskRecord>
  readonly nodes: HashMap.HashMap<string, NodeRecord>
  /** By node, then generation: an old stream's end removes only its own entry. */
  readonly subscriptions: HashMap.HashMap<string, HashMap.HashMap<number, Subscription>>
  /** By node: the fetches answered, so a retry or a late duplicate gets the same answer. */
  readonly fetches: HashMap.HashMap<string, FetchLedger>
}

// A worker's fetch ids are `<nonce>/<sequence>`: the nonce is new on every start, the sequence grows by one
// per answered fetch. A sequence already seen is a retry, or a request that arrived late: it gets the answer
// its fetch got (the task again while it waits to be confirmed), never a new task.
interface FetchLedger {
  readonly nonce: string
  readonly last: number
  /** The most recent answers, by sequence: a task id, or null for "no task". */
  readonly answers: ReadonlyArray<readonly [number, string | null]>
}

const parseFetchId = (fetchId: string): { readonly nonce: string; readonly seq: number } | undefined => {
  const match = /^(.+)\/(\d+)$/.exec(fetchId)
  return match ? { nonce: match[1]!, seq: Number(match[2]) } : undefined
}

const emptyState: State = {
  taskCount: 0,
  nodeCount: 0,
  subscriptionCount: 0,
  tasks: HashMap.empty(),
  nodes: HashMap.empty(),
  subscriptions: HashMap.empty(),
  fetches: HashMap.empty()
}

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

const toInfo = (
  { deliveries: _deliveries, fetchId: _fetchId, handedOutAt: _at, reportKeys: _keys, seq: _seq, ...info }: TaskRecord
): TaskInfo => info

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

const putTask = (state: State, task: TaskRecord): State => ({
  ...state,
  tasks: HashMap.set(state.tasks, task.id, task)
})

// The node's own tasks first (pending, or handed out to it and unconfirmed for `redeliverAfter`), then
// unassigned ones; by priority descending, then creation order.
const nextTask = (state: State, node: string, now: number, redeliverAfter: number): TaskRecord | undefined => {
  let best: TaskRecord | undefined
  const score = (task: TaskRecord) => (task.node === node ? 1 : 0)
  const eligible = (task: TaskRecord) =>
    task.status === "PENDING"
      ? task.node === undefined || task.node === node
      : task.status === "ASSIGNED" && task.node === node && now - (task.handedOutAt ?? now) >= redeliverAfter
  for (const task of HashMap.values(state.tasks)) {
    if (!eligible(task)) continue
    if (
      best === undefined ||
      score(task) > score(best) ||
      (score(task) === score(best) &&
        (task.priority > best.priority || (task.priority === best.priority && task.seq < best.seq)))
    ) best = task
  }
  return best
}

// The task a fetch with this id was answered with, while it waits for the node to confirm it.
const fetchedBefore = (state: State, node: string, fetchId: string): TaskRecord | undefined => {
  if (fetchId === "") return undefined
  for (const task of HashMap.values(state.tasks)) {
    if (task.fetchId === fetchId && task.node === node && task.status === "ASSIGNED") return task
  }
  return undefined
}

const handOut = (state: State, task: TaskRecord, node: string, fetchId: string, now: number, replay: boolean) => {
  const deliveries = replay ? task.deliveries : task.deliveries + 1
  const handedOut = { ...task, node, handedOut: task.handedOut + 1, handedOutAt: now, fetchId, deliveries }
  // A redelivery leaves the status, and the history, as they are.
  const assigned = task.status === "ASSIGNED" ? handedOut : change(handedOut, "ASSIGNED", now, node)
  return [Option.some(toInfo(assigned)), putTask(state, assigned)] as const
}

// The node's hand-outs due again that already went out to `maxHandOuts` distinct fetches end ERROR: it cannot
// take them. A retried fetch answered again does not count: the node may be running the task, its RUNNING late.
const giveUpUnconfirmed = (state: State, node: string, now: number, redeliverAfter: number, maxHandOuts: number) => {
  let next = state
  for (const task of HashMap.values(state.tasks)) {
    if (
      task.status === "ASSIGNED" && task.node === node && task.deliveries >= maxHandOuts &&
      now - (task.handedOutAt ?? now) >= redeliverAfter
    ) {
      const error = `handed out ${task.deliveries} times to node ${node} and never confirmed: the node cannot take it`
      next = putTask(next, change(task, "ERROR", now, undefined, error))
    }
  }
  return next
}

const fetchTask =
  (node: string, fetchId: string, now: number, redeliverAfter: number, maxHandOuts: number) =>
  (current: State): readonly [Option.Option<TaskInfo>, State] => {
    const state = giveUpUnconfirmed(current, node, now, redeliverAfter, maxHandOuts)
    const id = parseFetchId(fetchId)
    if (id === undefined) {
      const again = fetchedBefore(state, node, fetchId)
      if (again !== undefined) return handOut(state, again, node, fetchId, now, true)
      const task = nextTask(state, node, now, redeliverAfter)
      return task === undefined ? [Option.none(), state] : handOut(state, task, node, fetchId, now, false)
    }
    const ledger = Option.getOrUndefined(HashMap.get(state.fetches, node))
    if (ledger !== undefined && ledger.nonce === id.nonce && id.seq <= ledger.last) {
      const answered = ledger.answers.find(([seq]) => seq === id.seq)?.[1]
      const task = answered ? Option.getOrUndefined(HashMap.get(state.tasks, answered)) : undefined
      return task !== undefined && task.status === "ASSIGNED" && task.node === node
        ? handOut(state, task, node, fetchId, now, true)
        : [Option.none(), state]
    }
    const task = nextTask(state, node, now, redeliverAfter)
    const answers = ledger !== undefined && ledger.nonce === id.nonce ? ledger.answers : []
    const recorded: State = {
      ...state,
      fetches: HashMap.set(state.fetches, node, {
        nonce: id.nonce,
        last: id.seq,
        answers: [...answers, [id.seq, task?.id ?? null] as const].slice(-32)
      })
    }
    return task === undefined ? [Option.none(), recorded] : handOut(recorded, task, node, fetchId, now, false)
  }

const reportStatus = (report: Report, now: number) => (state: State): readonly [ReportOutcome | Rejection, State] => {
  const task = Option.getOrUndefined(HashMap.get(state.tasks, report.taskId))
  if (task === undefined) {
    return [new Rejection({ reason: "UnknownTask", message: `task ${report.taskId} not found` }), state]
  }
  if (task.handedOut === 0 || task.node !== report.node) {
    const message = `task ${task.id} was not handed out to node ${report.node}`
    return [new Rejection({ reason: "NotHandedOut", message }), state]
  }
  if (task.reportKeys.has(report.key)) return ["DUPLICATE", state]
  // Forward only: a late report never overwrites a newer status.
  if (rank[report.status] <= rank[task.status]) return ["STALE", state]
  const next = change(
    { ...task, reportKeys: new Set([...task.reportKeys, report.key]) },
    report.status,
    now,
    report.node,
    report.error
  )
  return ["ACCEPTED", putTask(state, next)]
}

const registerNode = (registration: Registration, now: number) => (state: State): State => {
  const existing = Option.getOrUndefined(HashMap.get(state.nodes, registration.node))
  const node: NodeRecord = {
    seq: existing?.seq ?? state.nodeCount,
    key: registration.node,
    name: registration.name,
    generation: registration.generation,
    maxRunners: registration.maxRunners,
    running: existing?.running ?? 0,
    registeredAt: now,
    lastHeartbeat: existing?.lastHeartbeat
  }
  return {
    ...state,
    nodeCount: existing === undefined ? state.nodeCount + 1 : state.nodeCount,
    nodes: HashMap.set(state.nodes, registration.node, node)
  }
}

const newestSubscription = (state: State, node: string): Subscription | undefined => {
  let newest: Subscription | undefined
  for (const sub of HashMap.values(Option.getOrElse(HashMap.get(state.subscriptions, node), HashMap.empty))) {
    if (newest === undefined || sub.generation > newest.generation) newest = sub
  }
  return newest
}

const cancelTask =
  (id: string, now: number) =>
  (state: State): readonly [MasterError | CancelOutcome | Subscription | undefined, State] => {
    const task = Option.getOrUndefined(HashMap.get(state.tasks, id))
    if (task === undefined) return [new MasterError({ reason: "UnknownTask", message: `task ${id} not found` }), state]
    if (isEnded(task.status)) return ["AlreadyEnded", state]
    const next = putTask(state, change(task, "CANCELLED", now, undefined))
    if (task.handedOut === 0) return ["NotHandedOut", next]
    return [task.node === undefined ? undefined : newestSubscription(state, task.node), next]
  }

// Adds a subscription of a registered node; one per node and generation, so it replaces the one it finds.
const addSubscription = (node: string, generation: number, mailbox: Mailbox.Mailbox<MasterRequest, Rejection>) =>
(
  state: State
): readonly [Rejection | { readonly sub: Subscription; readonly replaced: Subscription | undefined }, State] => {
  if (!HashMap.has(state.nodes, node)) return [notRegistered(node), state]
  const sub: Subscription = { id: state.subscriptionCount, node, generation, mailbox }
  const byGeneration = Option.getOrElse(HashMap.get(state.subscriptions, node), HashMap.empty<number, Subscription>)
  const replaced = Option.getOrUndefined(HashMap.get(byGeneration, generation))
  return [{ sub, replaced }, {
    ...state,
    subscriptionCount: state.subscriptionCount + 1,
    subscriptions: HashMap.set(state.subscriptions, node, HashMap.set(byGeneration, generation, sub))
  }]
}

// Removes the entry only while it is still this stream's, never a newer one of the same node.
const removeSubscription = (sub: Subscription) => (state: State): State => {
  const byGeneration = Option.getOrUndefined(HashMap.get(state.subscriptions, sub.node))
  const current = byGeneration === undefined
    ? undefined
    : Option.getOrUndefined(HashMap.get(byGeneration, sub.generation))
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
// Operations
// -------------------------------------------------------------------------------------------------

const invalid = (option: string, message: string) =>
  new MasterError({ reason: "InvalidOption", message: `invalid option ${option}: ${message}` })

// An option of the master, checked by the library's own rule for it.
export const checked = <I, A>(option: string, rule: Validate.Rule<I, A>, input: I): Effect.Effect<A, MasterError> =>
  Either.match(rule(input), { onLeft: (reason) => Effect.fail(invalid(option, reason)), onRight: Effect.succeed })

/** A failure rate from 0 to 1. */
export const validRate = (rate: number): Effect.Effect<number, MasterError> =>
  checked("failureRate", Validate.isNumberWithin(0, 1), rate)

const validInterval = (
  input: Duration.DurationInput,
  option = "heartbeatInterval"
): Effect.Effect<Duration.Duration, MasterError> => checked(option, Validate.isPositiveDuration, input)

const isInt32 = (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31

const required = (field: string, value: string): Effect.Effect<string, Rejection> =>
  value === ""
    ? Effect.fail(new Rejection({ reason: "InvalidArgument", message: `${field} is empty` }))
    : Effect.succeed(value)

const notRegistered = (node: string) =>
  new Rejection({ reason: "UnknownNode", message: `node ${node} is not registered; call Register first` })

// The start of a master's memory: the wall clock (not `Clock`: a test's clock starts at 0 on every run) and 32
// random bits, in base 36.
const newIncarnation = (): string =>
  `${Date.now().toString(36)}${globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36)}`

/** An empty master. */
export const make = (options: Options = {}): Effect.Effect<MasterState, MasterError> =>
  Effect.gen(function*() {
    const heartbeatInterval = yield* validInterval(options.heartbeatInterval ?? defaults.heartbeatInterval)
    const redeliverAfter = Duration.toMillis(
      yield* validInterval(options.redeliverAfter ?? defaults.redeliverAfter, "redeliverAfter")
    )
    const maxHandOuts = yield* checked(
      "maxHandOuts",
      Validate.isWholeNumber(1),
      options.maxHandOuts ?? defaults.maxHandOuts
    )
    const offlineAfter = 2 * Duration.toMillis(heartbeatInterval)
    const failureRate = yield* Ref.make<{ readonly rate: number; readonly only?: ReadonlySet<string> | undefined }>({
      rate: yield* validRate(options.failureRate ?? defaults.failureRate)
    })
    const state = yield* Ref.make(emptyState)
    // The master's memory starts here: task ids carry it, so a master started again never hands out an old id.
    const incarnation = newIncarnation()

    const injectFailure = (operation: string) =>
      Effect.gen(function*() {
        const { only, rate } = yield* Ref.get(failureRate)
        if (rate > 0 && (only === undefined || only.has(operation)) && (yield* Random.next) < rate) {
          return yield* new Rejection({
            reason: "InjectedFailure",
            message: `${operation} failed on purpose (failureRate ${rate})`
          })
        }
      })

    const register = (registration: Registration) =>
      Effect.gen(function*() {
        yield* required("node_key", registration.node)
        if (registration.maxRunners < 0) {
          return yield* new Rejection({
            reason: "InvalidArgument",
            message: `max_runners ${registration.maxRunners} is negative`
          })
        }
        const now = yield* Clock.currentTimeMillis
        yield* Ref.update(state, registerNode(registration, now))
      })

    const heartbeat = (node: string, running: number) =>
      Effect.gen(function*() {
        yield* required("node_key", node)
        const now = yield* Clock.currentTimeMillis
        const known = yield* Ref.modify(state, (s) =>
          Option.match(HashMap.get(s.nodes, node), {
            onNone: () => [false, s] as const,
            onSome: (record) =>
              [true, { ...s, nodes: HashMap.set(s.nodes, node, { ...record, lastHeartbeat: now, running }) }] as const
          }))
        return known
      })

    const fetch = (node: string, fetchId = "") =>
      Effect.gen(function*() {
        yield* required("node_key", node)
        const now = yield* Clock.currentTimeMillis
        const task = yield* Ref.modify(
          state,
          (s) =>
            HashMap.has(s.nodes, node)
              ? fetchTask(node, fetchId, now, redeliverAfter, maxHandOuts)(s)
              : [undefined, s] as const
        )
        if (task === undefined) return yield* notRegistered(node)
        yield* Effect.logDebug(`FetchTask ${node} ${fetchId || "(no fetch id)"}: ${
          Option.match(task, {
            onNone: () => "no task",
            onSome: (t) => `${t.id} (handed out ${t.handedOut} times)`
          })
        }`)
        return task
      })

    const report = (report: Report) =>
      Effect.gen(function*() {
        yield* required("task_id", report.taskId)
        yield* required("node_key", report.node)
        yield* required("idempotency_key", report.key)
        const status: unknown = report.status
        if (!reportable.has(status)) {
          const message = typeof status === "string" && status in rank
            ? `status ${status} is set by the master; a worker reports RUNNING, FINISHED, ERROR or CANCELLED`
            : `unknown status ${String(status)}`
          return yield* new Rejection({ reason: "InvalidArgument", message })
        }
        const now = yield* Clock.currentTimeMillis
        const outcome = yield* Ref.modify(state, reportStatus(report, now))
        if (outcome instanceof Rejection) return yield* outcome
        return outcome
      })

    const subscribe = (node: string, generation: number) =>
      Effect.gen(function*() {
        yield* required("node_key", node)
        const mailbox = yield* Mailbox.make<MasterRequest, Rejection>()
        const added = yield* Effect.acquireRelease(
          Ref.modify(state, addSubscription(node, generation, mailbox)),
          (added) => added instanceof Rejection ? Effect.void : Ref.update(state, removeSubscription(added.sub))
        )
        if (added instanceof Rejection) return yield* added
        // One subscription per node and generation: the one it replaces ends.
        if (added.replaced !== undefined) yield* added.replaced.mailbox.end
        return Mailbox.toStream(mailbox)
      })

    const cancel = (id: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const result = yield* Ref.modify(state, cancelTask(id, now))
        if (result instanceof MasterError) return yield* result
        if (typeof result === "string") return result
        if (result === undefined) return "NoSubscription" as const
        const delivered = yield* result.mailbox.offer({ _tag: "CancelTask", taskId: id })
        return delivered ? "Notified" as const : "NoSubscription" as const
      })

    const enqueue = (task: EnqueueOptions) =>
      Effect.gen(function*() {
        const priority = task.priority ?? 0
        if (typeof task.payload !== "string") return yield* invalid("payload", "expected a string")
        if (!isInt32(priority)) return yield* invalid("priority", `expected an int32, got ${priority}`)
        const now = yield* Clock.currentTimeMillis
        return yield* Ref.modify(state, (s): readonly [string, State] => {
          const id = `task-${incarnation}-${s.taskCount + 1}`
          const record: TaskRecord = {
            id,
            seq: s.taskCount,
            payload: task.payload,
            priority,
            createdAt: now,
            status: "PENDING",
            node: task.node === "" ? undefined : task.node,
            handedOut: 0,
            handedOutAt: undefined,
            fetchId: undefined,
            deliveries: 0,
            history: [{ status: "PENDING", at: now, node: undefined, error: undefined }],
            reportKeys: new Set()
          }
          return [id, putTask({ ...s, taskCount: s.taskCount + 1 }, record)]
        })
      })

    const dropSubscriptions = Effect.flatMap(
      Ref.getAndUpdate(state, (s) => ({ ...s, subscriptions: HashMap.empty() })),
      (s) =>
        Effect.forEach(
          Array.from(HashMap.values(s.subscriptions)).flatMap((byGeneration) =>
            Array.from(HashMap.values(byGeneration))
          ),
          (sub) => sub.mailbox.end,
          { discard: true }
        )
    )

    const forget = (node: string) =>
      Effect.gen(function*() {
        const before = yield* Ref.getAndUpdate(state, (s) => ({
          ...s,
          nodes: HashMap.remove(s.nodes, node),
          subscriptions: HashMap.remove(s.subscriptions, node),
          fetches: HashMap.remove(s.fetches, node)
        }))
        const subscriptions = Option.getOrElse(HashMap.get(before.subscriptions, node), HashMap.empty)
        yield* Effect.forEach(HashMap.values(subscriptions), (sub) => sub.mailbox.fail(notRegistered(node)), {
          discard: true
        })
        const known = HashMap.has(before.nodes, node)
        if (known) yield* Effect.logInfo(`forgot node ${node}`)
        return known
      })

    return {
      incarnation,
      forget,
      enqueue,
      tasks: Effect.map(
        Ref.get(state),
        (s) => Array.from(HashMap.values(s.tasks)).sort((a, b) => a.seq - b.seq).map(toInfo)
      ),
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
        (s) =>
          Array.from(HashMap.values(s.subscriptions)).reduce((n, byGeneration) => n + HashMap.size(byGeneration), 0)
      ),
      cancel,
      setFailureRate: (rate, options) =>
        Effect.flatMap(
          validRate(rate),
          (valid) =>
            Ref.set(failureRate, { rate: valid, only: options?.only === undefined ? undefined : new Set(options.only) })
        ),
      dropSubscriptions,
      injectFailure,
      register,
      heartbeat,
      fetch,
      report,
      subscribe
    } satisfies MasterState
  })
