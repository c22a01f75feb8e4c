/**
 * The bookkeeping of a master, without a transport: the node registry, the
 * task queue, the status reports and the subscriptions the master writes to.
 * `Master` serves it over a grpc-js server, `SimulatedMaster` over the
 * simulated network; both answer exactly alike because both are this.
 *
 * Times come from `Clock` and injected failures from `Random`, both read from
 * the fiber that runs the operation; a fetch, which waits without a fiber of
 * its own, reads the `Clock` of the fiber that made the master.
 *
 * Over 400 lines, as one concept: every operation is a transition of one
 * state (nodes, tasks, reports, subscriptions, held fetches), and a held
 * fetch is answered by the transition that queues its task. Its pure
 * transitions could stand in a module of their own, apart from the waiters and
 * timers that apply them; that split is still to make.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as Validate from "../../internal/shared/validate.js"
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
  /** Heard from (registered, a heartbeat, a fetch) within two heartbeat intervals, or a fetch of it is held. */
  readonly online: boolean
  /** The generation of its last registration. */
  readonly generation: number
  readonly maxRunners: number
  /** The running count of its last heartbeat. */
  readonly running: number
  /** Epoch millis of its last registration. */
  readonly registeredAt: number
  /** Epoch millis of its last heartbeat or fetch. */
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

/** A worker's fetch. */
export interface FetchRequest {
  readonly node: string
  /** The protocol's `fetch_id`: a retry has the same one. Empty or absent: no protection. */
  readonly fetchId?: string | undefined
  /** How long the master may hold the fetch for a task, in milliseconds. Default 0: it answers at once. */
  readonly wait?: number | undefined
  /** Up to this many tasks in one answer. Default 1. */
  readonly maxTasks?: number | undefined
  /** How many tasks the node runs now; absent: unchanged. */
  readonly running?: number | undefined
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

// Waits this long or longer end on a whole `coalesceTick` of the master's clock (see `endOfWait`).
const coalesceFrom = 5_000
const coalesceTick = 1_000

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
   * The registered node's next tasks (up to `maxTasks`), which become `ASSIGNED` to it; when nothing is pending
   * for it, it waits up to `wait` for a task, then answers none. A retry of a fetch (the same non-empty `fetchId`)
   * gets the same tasks. A node not registered is refused, and a node forgotten while its fetch waits too. A
   * fetch counts as a heartbeat, and a node with a fetch waiting is online.
   */
  readonly fetch: (request: FetchRequest) => Effect.Effect<ReadonlyArray<TaskInfo>, Rejection>
  /**
   * `fetch` without a fiber, for a transport that answers by callback: `answer` is called once, at once or when
   * the fetch stops waiting. Returns, for a fetch that waits, the function that withdraws it (its caller went
   * away: `answer` is then never called); undefined when it was answered at once. Logs nothing.
   */
  readonly fetchNow: (
    request: FetchRequest,
    answer: (answer: Either.Either<ReadonlyArray<TaskInfo>, Rejection>) => void
  ) => (() => void) | undefined
  /** Whether `injectFailure(operation)` may fail now: when not, a transport may skip it. */
  readonly mayFail: (operation: string) => boolean
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
  /** The master is stopping: the fetches it holds are answered now, and the next ones at once. */
  readonly stopWaiting: Effect.Effect<void>
}

// -------------------------------------------------------------------------------------------------
// State: one immutable value, changed by pure transitions
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
  /**
   * The tasks a fetch may hand out or hand out again, `PENDING` or `ASSIGNED`, the same records as in `tasks`: a
   * fetch looks through these only, not through every task the master ever had.
   */
  readonly open: HashMap.HashMap<string, TaskRecord>
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
  /** The most recent answers, by sequence: the ids of the tasks handed out, none for "no task". */
  readonly answers: ReadonlyArray<readonly [number, ReadonlyArray<string>]>
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
  open: HashMap.empty(),
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
  tasks: HashMap.set(state.tasks, task.id, task),
  open: task.status === "PENDING" || task.status === "ASSIGNED"
    ? HashMap.set(state.open, task.id, task)
    : HashMap.remove(state.open, task.id)
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
  for (const task of HashMap.values(state.open)) {
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

// The tasks a fetch with this id was answered with, while they wait for the node to confirm them.
const fetchedBefore = (state: State, node: string, fetchId: string): ReadonlyArray<TaskRecord> => {
  if (fetchId === "") return []
  const found: Array<TaskRecord> = []
  for (const task of HashMap.values(state.open)) {
    if (task.fetchId === fetchId && task.node === node && task.status === "ASSIGNED") found.push(task)
  }
  return found.sort((a, b) => a.seq - b.seq)
}

const handOut = (state: State, task: TaskRecord, node: string, fetchId: string, now: number, replay: boolean) => {
  const deliveries = replay ? task.deliveries : task.deliveries + 1
  const handedOut = { ...task, node, handedOut: task.handedOut + 1, handedOutAt: now, fetchId, deliveries }
  // A redelivery leaves the status, and the history, as they are.
  const assigned = task.status === "ASSIGNED" ? handedOut : change(handedOut, "ASSIGNED", now, node)
  return [toInfo(assigned), putTask(state, assigned)] as const
}

// Hands out each task in turn: the answer, in order, and the state after it.
const handOutAll = (
  state: State,
  tasks: ReadonlyArray<TaskRecord>,
  node: string,
  fetchId: string,
  now: number,
  replay: boolean
): readonly [ReadonlyArray<TaskInfo>, State] => {
  let next = state
  const infos: Array<TaskInfo> = []
  for (const task of tasks) {
    const [info, after] = handOut(next, task, node, fetchId, now, replay)
    infos.push(info)
    next = after
  }
  return [infos, next]
}

// Up to `max` of the node's next tasks, best first: each taken as `nextTask` would, as if the ones before it were
// handed out already.
const nextTasks = (state: State, node: string, now: number, redeliverAfter: number, max: number) => {
  const taken: Array<TaskRecord> = []
  let scratch = state
  while (taken.length < max) {
    const task = nextTask(scratch, node, now, redeliverAfter)
    if (task === undefined) break
    taken.push(task)
    // Only to leave it out of the next pick: marked as handed out now.
    scratch = putTask(scratch, { ...task, status: "ASSIGNED", node, handedOutAt: now })
  }
  return taken
}

// When the node's next hand-out that waits for its confirmation may go out again; undefined when none waits.
const nextRedelivery = (state: State, node: string, redeliverAfter: number): number | undefined => {
  let next: number | undefined
  for (const task of HashMap.values(state.open)) {
    if (task.status === "ASSIGNED" && task.node === node && task.handedOutAt !== undefined) {
      const due = task.handedOutAt + redeliverAfter
      if (next === undefined || due < next) next = due
    }
  }
  return next
}

// The node's hand-outs due again that already went out to `maxHandOuts` distinct fetches end ERROR: it cannot
// take them. A retried fetch answered again does not count: the node may be running the task, its RUNNING late.
const giveUpUnconfirmed = (state: State, node: string, now: number, redeliverAfter: number, maxHandOuts: number) => {
  let next = state
  for (const task of HashMap.values(state.open)) {
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

/** One try of a fetch: the tasks, or none yet (`Wait`) while the fetch may still wait for one. */
type FetchTry = ReadonlyArray<TaskInfo> | "Wait"

// One try of a fetch. A fetch id seen before gets its answer again (the tasks it got, while unconfirmed). A new
// fetch that finds no task and may still wait records nothing: a retry of it, or the same call tried again when
// a task is queued, is the same fetch.
const fetchTasks = (
  node: string,
  fetchId: string,
  now: number,
  settings: { readonly redeliverAfter: number; readonly maxHandOuts: number },
  max: number,
  final: boolean
) =>
(current: State): readonly [FetchTry, State] => {
  const state = giveUpUnconfirmed(current, node, now, settings.redeliverAfter, settings.maxHandOuts)
  const id = parseFetchId(fetchId)
  if (id === undefined) {
    const again = fetchedBefore(state, node, fetchId)
    if (again.length > 0) return handOutAll(state, again, node, fetchId, now, true)
    const tasks = nextTasks(state, node, now, settings.redeliverAfter, max)
    if (tasks.length === 0) return [final ? [] : "Wait", state]
    return handOutAll(state, tasks, node, fetchId, now, false)
  }
  const ledger = Option.getOrUndefined(HashMap.get(state.fetches, node))
  if (ledger !== undefined && ledger.nonce === id.nonce && id.seq <= ledger.last) {
    const answered = ledger.answers.find(([seq]) => seq === id.seq)?.[1] ?? []
    const tasks = answered.flatMap((taskId) => {
      const task = Option.getOrUndefined(HashMap.get(state.tasks, taskId))
      return task !== undefined && task.status === "ASSIGNED" && task.node === node ? [task] : []
    })
    return handOutAll(state, tasks, node, fetchId, now, true)
  }
  const tasks = nextTasks(state, node, now, settings.redeliverAfter, max)
  if (tasks.length === 0 && !final) return ["Wait", state]
  const answers = ledger !== undefined && ledger.nonce === id.nonce ? ledger.answers : []
  const recorded: State = {
    ...state,
    fetches: HashMap.set(state.fetches, node, {
      nonce: id.nonce,
      last: id.seq,
      answers: [...answers, [id.seq, tasks.map((task) => task.id)] as const].slice(-32)
    })
  }
  return handOutAll(recorded, tasks, node, fetchId, now, false)
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

// The stream opened last, not the one of the highest generation: a worker that restarted counts from 1 again,
// while a stream of its previous process (a generation 5) may linger until its connection is found dead.
const newestSubscription = (state: State, node: string): Subscription | undefined => {
  let newest: Subscription | undefined
  for (const sub of HashMap.values(Option.getOrElse(HashMap.get(state.subscriptions, node), HashMap.empty))) {
    if (newest === undefined || sub.id > newest.id) newest = sub
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

const emptyField = (field: string) => new Rejection({ reason: "InvalidArgument", message: `${field} is empty` })

const required = (field: string, value: string): Effect.Effect<string, Rejection> =>
  value === "" ? Effect.fail(emptyField(field)) : Effect.succeed(value)

/** The log line of an answered fetch. */
export const describeFetch = (request: FetchRequest, tasks: ReadonlyArray<TaskInfo>): string =>
  `FetchTask ${request.node} ${request.fetchId || "(no fetch id)"}: ${
    tasks.length === 0 ? "no task" : tasks.map((t) => `${t.id} (handed out ${t.handedOut} times)`).join(", ")
  }`

// A fetch the master holds: answered once, by the look that finds its answer, unless withdrawn first.
interface Waiter {
  readonly node: string
  readonly fetchId: string
  readonly max: number
  /** When the wait ends, on the master's clock. */
  readonly end: number
  /** Whether `end` is on a whole second, shared with the other waits ending then (see `endOfWait`). */
  readonly coalesced: boolean
  readonly answer: (answer: Either.Either<ReadonlyArray<TaskInfo>, Rejection>) => void
  /** Answered or withdrawn. */
  done: boolean
  /** The shared second it waits for, when it waits for one. */
  tick: number | undefined
  /** Its own timer (a short wait's end, a redelivery due), when it has one. */
  cancelTimer: (() => void) | undefined
}

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
    let failureRate: { readonly rate: number; readonly only?: ReadonlySet<string> | undefined } = {
      rate: yield* validRate(options.failureRate ?? defaults.failureRate)
    }
    const settings = { redeliverAfter, maxHandOuts }
    // The state, changed by one pure transition at a time, as a `Ref` would be, but also without a fiber: the
    // fetches a master holds look at it from plain callbacks.
    let current = emptyState
    const modifyNow = <A>(f: (s: State) => readonly [A, State]): A => {
      const [result, next] = f(current)
      current = next
      return result
    }
    const modify = <A>(f: (s: State) => readonly [A, State]): Effect.Effect<A> => Effect.sync(() => modifyNow(f))
    const update = (f: (s: State) => State): Effect.Effect<void> =>
      Effect.sync(() => {
        current = f(current)
      })
    const getAndUpdate = (f: (s: State) => State): Effect.Effect<State> =>
      Effect.sync(() => {
        const before = current
        current = f(current)
        return before
      })
    const get = Effect.sync(() => current)
    // The master's runtime and clock: a held fetch's timers run on them.
    const runtime = yield* Effect.runtime<never>()
    const clock = yield* Effect.clock
    const scheduler = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentScheduler)
    // The master's memory starts here: task ids carry it, so a master started again never hands out an old id.
    const incarnation = newIncarnation()

    const mayFail = (operation: string) =>
      failureRate.rate > 0 && (failureRate.only === undefined || failureRate.only.has(operation))
    const injectFailure = (operation: string) =>
      Effect.gen(function*() {
        const { rate } = failureRate
        if (mayFail(operation) && (yield* Random.next) < rate) {
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
        yield* update(registerNode(registration, now))
      })

    const heartbeat = (node: string, running: number) =>
      Effect.gen(function*() {
        yield* required("node_key", node)
        const now = yield* Clock.currentTimeMillis
        const known = yield* modify((s) =>
          Option.match(HashMap.get(s.nodes, node), {
            onNone: () => [false, s] as const,
            onSome: (record) =>
              [true, { ...s, nodes: HashMap.set(s.nodes, node, { ...record, lastHeartbeat: now, running }) }] as const
          })
        )
        return known
      })

    // The fetches held now, by node: a task queued for the node (a task for any node wakes every node), the
    // node forgotten and the master stopping wake its waiters, each of which then looks again (see `signal`).
    // Plain callbacks, not fibers: an idle fleet's master holds one fetch a worker, and what a held fetch costs is
    // what it costs the master to keep it and to end it.
    const waiters = new Map<string, Set<Waiter>>()
    // Set when the master stops: the fetches it holds are answered at once, and no new one waits.
    let stopped = false
    // Runs `f` after `ms` of the master's clock (its `Clock`, a `TestClock`'s virtual time too); the function
    // returned cancels it.
    const after = (ms: number, f: () => void): () => void => {
      const fiber = Runtime.runFork(runtime)(Effect.sleep(Math.max(0, ms)))
      fiber.addObserver((exit) => {
        if (Exit.isSuccess(exit)) f()
      })
      return () => fiber.unsafeInterruptAsFork(FiberId.none)
    }
    // The end of a long wait: on a whole second of the master's clock, so the waits that end within the same second
    // end together, on one timer (an idle fleet's fetches then cost the master one wake-up a second, not one per
    // fetch). Up to a second late, never early: a worker gives a fetch its wait and more, and reads a fetch answered
    // before its wait as the master's own cap, after which it pauses before asking again.
    const endOfWait = (start: number, wait: number) =>
      wait >= coalesceFrom ? Math.ceil((start + wait) / coalesceTick) * coalesceTick : start + wait
    // One timer per second at which waits end, shared by every fetch that waits for that second.
    const ticks = new Map<number, { readonly waiters: Set<Waiter>; readonly cancel: () => void }>()
    const joinTick = (waiter: Waiter, at: number, now: number) => {
      let tick = ticks.get(at)
      if (tick === undefined) {
        const joined = new Set<Waiter>()
        tick = {
          waiters: joined,
          cancel: after(at - now, () => {
            ticks.delete(at)
            for (const each of joined) {
              each.tick = undefined
              look(each)
            }
          })
        }
        ticks.set(at, tick)
      }
      tick.waiters.add(waiter)
      waiter.tick = at
    }
    // The waiter's timers go: it is answered, withdrawn, or about to set new ones.
    const disarm = (waiter: Waiter) => {
      const at = waiter.tick
      if (at !== undefined) {
        const tick = ticks.get(at)
        waiter.tick = undefined
        if (tick !== undefined && tick.waiters.delete(waiter) && tick.waiters.size === 0) {
          ticks.delete(at)
          tick.cancel()
        }
      }
      waiter.cancelTimer?.()
      waiter.cancelTimer = undefined
    }
    const release = (waiter: Waiter) => {
      disarm(waiter)
      const ofNode = waiters.get(waiter.node)
      if (ofNode !== undefined && ofNode.delete(waiter) && ofNode.size === 0) waiters.delete(waiter.node)
    }
    const finish = (waiter: Waiter, answer: Either.Either<ReadonlyArray<TaskInfo>, Rejection>) => {
      if (waiter.done) return
      waiter.done = true
      release(waiter)
      waiter.answer(answer)
    }
    // One look of a fetch: its answer, or it waits until a change, the wait's end, or a hand-out of the node's that
    // may go out again, whichever is first. True when it was answered.
    const look = (waiter: Waiter): boolean => {
      if (waiter.done) return true
      const now = clock.unsafeCurrentTimeMillis()
      const { node } = waiter
      const tried = HashMap.has(current.nodes, node)
        ? modifyNow(fetchTasks(node, waiter.fetchId, now, settings, waiter.max, now >= waiter.end || stopped))
        : undefined
      if (tried === undefined) {
        finish(waiter, Either.left(notRegistered(node)))
        return true
      }
      if (tried !== "Wait") {
        finish(waiter, Either.right(tried))
        return true
      }
      const due = nextRedelivery(current, node, redeliverAfter)
      const until = Math.min(waiter.end, due === undefined ? Infinity : Math.max(due, now + 1))
      if (until === waiter.end && waiter.coalesced) {
        // Already on that second's timer (woken by a task it did not get): it stays there.
        if (waiter.tick !== waiter.end) {
          disarm(waiter)
          joinTick(waiter, waiter.end, now)
        }
      } else {
        disarm(waiter)
        waiter.cancelTimer = after(until - now, () => {
          waiter.cancelTimer = undefined
          look(waiter)
        })
      }
      let ofNode = waiters.get(node)
      if (ofNode === undefined) waiters.set(node, ofNode = new Set())
      ofNode.add(waiter)
      return false
    }
    // Every waiter of the node (of every node when none is given) looks again, on the runtime's next turn, as a
    // fiber woken then would: the tasks queued in one go (one fiber's step) go out in one answer, up to its
    // `max_tasks`, not the first alone.
    const woken = new Set<Waiter>()
    const wake = () => {
      const due = Array.from(woken)
      woken.clear()
      for (const waiter of due) look(waiter)
    }
    const signal = (node?: string | undefined) =>
      Effect.sync(() => {
        const first = woken.size === 0
        if (node === undefined) {
          for (const ofNode of waiters.values()) for (const waiter of ofNode) woken.add(waiter)
        } else {
          for (const waiter of waiters.get(node) ?? []) woken.add(waiter)
        }
        if (first && woken.size > 0) scheduler.scheduleTask(wake, 0)
      })
    // A node's fetch is a heartbeat too: the node is alive, and runs this many tasks.
    const heardNow = (node: string, running: number | undefined, now: number) => {
      const record = Option.getOrUndefined(HashMap.get(current.nodes, node))
      if (record === undefined) return
      current = {
        ...current,
        nodes: HashMap.set(current.nodes, node, { ...record, lastHeartbeat: now, running: running ?? record.running })
      }
    }
    const heard = (node: string, running: number | undefined, now: number) =>
      Effect.sync(() => heardNow(node, running, now))

    const fetchNow = (
      request: FetchRequest,
      answer: (answer: Either.Either<ReadonlyArray<TaskInfo>, Rejection>) => void
    ): (() => void) | undefined => {
      const { node } = request
      if (node === "") {
        answer(Either.left(emptyField("node_key")))
        return undefined
      }
      const wait = Math.max(0, request.wait ?? 0)
      const start = clock.unsafeCurrentTimeMillis()
      const end = endOfWait(start, wait)
      heardNow(node, request.running, start)
      const waiter: Waiter = {
        node,
        fetchId: request.fetchId ?? "",
        max: Math.max(1, request.maxTasks ?? 1),
        end,
        coalesced: end !== start + wait,
        answer,
        done: false,
        tick: undefined,
        cancelTimer: undefined
      }
      if (look(waiter)) return undefined
      return () => {
        if (waiter.done) return
        waiter.done = true
        release(waiter)
      }
    }

    const fetch = (request: FetchRequest) =>
      Effect.tap(
        Effect.async<ReadonlyArray<TaskInfo>, Rejection>((resume) => {
          const withdraw = fetchNow(request, (answer) => resume(answer))
          return withdraw === undefined ? undefined : Effect.sync(withdraw)
        }),
        (tasks) => Effect.logDebug(describeFetch(request, tasks))
      )

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
        // Every call of a node is a sign of life.
        yield* heard(report.node, undefined, now)
        const outcome = yield* modify(reportStatus(report, now))
        if (outcome instanceof Rejection) return yield* outcome
        return outcome
      })

    const subscribe = (node: string, generation: number) =>
      Effect.gen(function*() {
        yield* required("node_key", node)
        const mailbox = yield* Mailbox.make<MasterRequest, Rejection>()
        const added = yield* Effect.acquireRelease(
          modify(addSubscription(node, generation, mailbox)),
          (added) => added instanceof Rejection ? Effect.void : update(removeSubscription(added.sub))
        )
        if (added instanceof Rejection) return yield* added
        // One subscription per node and generation: the one it replaces ends.
        if (added.replaced !== undefined) yield* added.replaced.mailbox.end
        return Mailbox.toStream(mailbox)
      })

    const cancel = (id: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const result = yield* modify(cancelTask(id, now))
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
        return yield* modify((s): readonly [string, State] => {
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
        }).pipe(Effect.zipLeft(signal(task.node === "" ? undefined : task.node)))
      })

    const dropSubscriptions = Effect.flatMap(
      getAndUpdate((s) => ({ ...s, subscriptions: HashMap.empty() })),
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
        const before = yield* getAndUpdate((s) => ({
          ...s,
          nodes: HashMap.remove(s.nodes, node),
          subscriptions: HashMap.remove(s.subscriptions, node),
          fetches: HashMap.remove(s.fetches, node)
        }))
        const subscriptions = Option.getOrElse(HashMap.get(before.subscriptions, node), HashMap.empty)
        yield* Effect.forEach(HashMap.values(subscriptions), (sub) => sub.mailbox.fail(notRegistered(node)), {
          discard: true
        })
        yield* signal(node)
        const known = HashMap.has(before.nodes, node)
        if (known) yield* Effect.logInfo(`forgot node ${node}`)
        return known
      })

    return {
      incarnation,
      stopWaiting: Effect.zipRight(
        Effect.sync(() => {
          stopped = true
        }),
        signal()
      ),
      forget,
      enqueue,
      tasks: Effect.map(
        get,
        (s) => Array.from(HashMap.values(s.tasks)).sort((a, b) => a.seq - b.seq).map(toInfo)
      ),
      task: (id) =>
        Effect.flatMap(get, (s) =>
          Option.match(HashMap.get(s.tasks, id), {
            onNone: () => Effect.fail(new MasterError({ reason: "UnknownTask", message: `task ${id} not found` })),
            onSome: (task) => Effect.succeed(toInfo(task))
          })),
      nodes: Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const s = current
        return Array.from(HashMap.values(s.nodes)).sort((a, b) => a.seq - b.seq).map(({ seq: _seq, ...node }) => ({
          ...node,
          // Computed on read: no loop has to mark nodes offline. A node whose fetch the master holds is alive.
          online: waiters.has(node.key) ||
            now - Math.max(node.registeredAt, node.lastHeartbeat ?? 0) <= offlineAfter
        }))
      }),
      subscriptions: Effect.map(
        get,
        (s) =>
          Array.from(HashMap.values(s.subscriptions)).reduce((n, byGeneration) => n + HashMap.size(byGeneration), 0)
      ),
      cancel,
      setFailureRate: (rate, options) =>
        Effect.flatMap(
          validRate(rate),
          (valid) =>
            Effect.sync(() => {
              failureRate = { rate: valid, only: options?.only === undefined ? undefined : new Set(options.only) }
            })
        ),
      dropSubscriptions,
      injectFailure,
      register,
      heartbeat,
      fetch,
      fetchNow,
      mayFail,
      report,
      subscribe
    } satisfies MasterState
  })
