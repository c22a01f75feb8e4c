/**
 * The outbox of status reports. `add` returns once the report is durable in
 * the store (adds made at the same time are written together); the report is
 * then delivered in order, several in one call when the task source can
 * (`TaskSource.reportAll`), retried across disconnects for as long as it
 * takes, and removed once the master has it. A task's reports reach the
 * master in the order they were added. The idempotency key of a report never
 * changes, so the master applies it once however often it arrives.
 *
 * The store keeps one record per report with a sequence number: the order of
 * `add` is the order of delivery of each task's reports, across restarts
 * too, and adding or removing a record costs the same at any depth. Each
 * outbox is scoped to its owner, a node and the master it reports to: two
 * outboxes in one store never touch each other's records. `layerFileSystem` is the default store (one file per
 * batch of records, each line checksummed, written to a temporary file,
 * synced, renamed into place and the directory synced);
 * `effect-grpc-resilience/sqlite` has a SQLite store.
 *
 * The outbox also remembers which tasks run: the RUNNING record of a task is
 * kept, after it is delivered, until the task's final report is added, with
 * the process groups the task started (`recordProcesses`). An outbox opened
 * after a crash lists the tasks that were running in `unfinished`, and what
 * each had started in `processes`.
 *
 * Over 400 lines, as one concept: the writer, the delivery loop and the
 * records of running tasks share one queue of reports in order and one open
 * set of records; what a store is, and the file-system store, are
 * `OutboxStore` and `internal/outbox/`.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as GrpcError from "./GrpcError.js"
import * as OutboxFileSystem from "./internal/outbox/fileSystem.js"
import * as Cfg from "./internal/shared/config.js"
import { formatMillis } from "./internal/shared/format.js"
import * as Metrics from "./Metrics.js"
import type { Owner, ProcessGroup, Records, StoredRecord } from "./OutboxStore.js"
import { holdOwner, isOutboxError, OutboxError, OutboxStore } from "./OutboxStore.js"
import * as Retry from "./Retry.js"
import * as TaskSource from "./TaskSource.js"

// -------------------------------------------------------------------------------------------------
// Models
// -------------------------------------------------------------------------------------------------

export {
  /**
   * Is this an `OutboxError`?
   *
   * @since 0.3.0
   * @category guards
   */
  isOutboxError,
  /**
   * A store could not do what the outbox asked; `path` says where. The same as `OutboxStore.OutboxError`.
   *
   * @since 0.1.0
   * @category errors
   */
  OutboxError,
  /**
   * Where outboxes keep their records. The same as `OutboxStore.OutboxStore`.
   *
   * @since 0.2.0
   * @category tags
   */
  OutboxStore
}

/**
 * What the outbox has done so far.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboxStats {
  readonly delivered: number
  /** Reports the master refused for good (not transient): logged with their content, then dropped. */
  readonly rejected: number
  /** Delivery attempts that failed and were tried again. */
  readonly retries: number
  /** Damaged records set aside when the outbox opened. */
  readonly setAside: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Outbox {
  /**
   * Stores a report and queues it for delivery; returns once the report is
   * durable. A key already queued is not queued twice. A RUNNING report also
   * records the task as started, until its final report is added.
   */
  readonly add: (report: TaskSource.StatusReport) => Effect.Effect<void, OutboxError>
  /**
   * Adds the report as `add` does; when the store cannot take it (a full disk), keeps it in memory and stores it
   * again (on `Retry.untilDone`) until it can, each failure logged, with `holding` around the wait: a task
   * handler counts the report there, and holds back its fetches and its readiness. Interrupted (a drain), or
   * refused for good (the outbox closed), the report is given up with an error line naming it. Never fails.
   *
   * @since 0.3.0
   */
  readonly addUntilStored: (
    report: TaskSource.StatusReport,
    holding?: (storing: Effect.Effect<void, OutboxError>) => Effect.Effect<void, OutboxError>
  ) => Effect.Effect<void>
  /** The reports not delivered yet, oldest first. */
  readonly pending: Effect.Effect<ReadonlyArray<TaskSource.StatusReport>>
  /** How many reports wait. */
  readonly size: Effect.Effect<number>
  /** How many reports wait, now and after every change. */
  readonly depth: Stream.Stream<number>
  /** Does the outbox know the task: a report of it waits, or it was started and has no final report? */
  readonly tracks: (taskId: string) => Effect.Effect<boolean>
  /**
   * Records the process groups a started task runs now with its RUNNING
   * record, in place of those recorded before; returns once they are durable.
   * Fails with `Closed` when the task has no RUNNING record, or its final
   * report is stored.
   */
  readonly recordProcesses: (
    taskId: string,
    processes: ReadonlyArray<ProcessGroup>
  ) => Effect.Effect<void, OutboxError>
  /** The process groups recorded for a task started and not ended: for an unfinished one, what it left. */
  readonly processes: (taskId: string) => Effect.Effect<ReadonlyArray<ProcessGroup>>
  /**
   * The tasks recorded as started, with no final report, when the outbox
   * opened: they were running when the worker stopped. Their RUNNING reports
   * are queued again; adding a final report ends each.
   */
  readonly unfinished: ReadonlyArray<string>
  readonly stats: Effect.Effect<OutboxStats>
  /** Waits until every report queued so far is delivered. */
  readonly flush: Effect.Effect<void>
  /** Where the records are: a directory, a database file, `memory`. */
  readonly location: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends Owner {
  /** Delivers one report to the master. */
  readonly deliver: (report: TaskSource.StatusReport) => Effect.Effect<void, TaskSource.Failure>
  /**
   * Delivers several reports in one call, each with its result (`TaskSource.reportAll`). Optional: without it,
   * reports are delivered one a call with `deliver`.
   *
   * @since 0.3.0
   */
  readonly deliverAll?:
    | ((
      reports: ReadonlyArray<TaskSource.StatusReport>
    ) => Effect.Effect<ReadonlyArray<TaskSource.ReportResult>, TaskSource.Failure>)
    | undefined
  /** Spaces the retries of a report. Default: exponential from 500 ms, x2, capped at 10 s, jittered, forever. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

const defaultRetry = Retry.untilDone

// The adds waiting to be written are written together, up to this many: one directory sync, one commit.
const maxBatch = 256

// The reports delivered in one call, at most: this many, and about this many bytes of their text, well under
// the 4 MiB a gRPC server takes by default.
const maxDelivery = 256
const maxDeliveryBytes = 1024 * 1024
// The pause after a delivery died, before its reports are tried again.
const afterDefect = 10_000

// A call over a message size limit is never taken, however often it is tried: its reports go one a call instead.
const tooLarge = (error: TaskSource.Failure): boolean => error._tag === "GrpcError" && error.tooLarge !== undefined

/**
 * Is a report that failed this way worth another try? Yes, unless the master
 * refused it for good: a lost report is worse than a late one.
 *
 * @since 0.1.0
 * @category classification
 */
export const tryAgain = (error: TaskSource.Failure): boolean =>
  error._tag === "GrpcError"
    // A master that refuses a node it does not count as a member takes the report once the node joins again.
    // Only a refusal for good drops it (GrpcError.statusCodes); everything else is tried again.
    ? !GrpcError.meaningOf(error.code).refusal || TaskSource.membershipOf(error) === "NotMember"
    : error._tag !== "ClientUnavailable" || error.reason !== "Closed"

// -------------------------------------------------------------------------------------------------
// The outbox
// -------------------------------------------------------------------------------------------------

// A task between its RUNNING record and its final report. Its RUNNING record stays in the store until
// both are true: delivered, and ended (a final report is durable).
interface Started {
  readonly sequence: number
  readonly report: TaskSource.StatusReport
  delivered: boolean
  ended: boolean
  processes: ReadonlyArray<ProcessGroup>
}

// The writer's work, in the order it came: a report to add, or a started task's process groups to record.
type Request = Add | Rewrite

interface Add {
  readonly _tag: "Add"
  readonly report: TaskSource.StatusReport
  readonly done: Deferred.Deferred<void, OutboxError>
}

interface Rewrite {
  readonly _tag: "Rewrite"
  readonly taskId: string
  readonly processes: ReadonlyArray<ProcessGroup>
  readonly done: Deferred.Deferred<void, OutboxError>
}

/**
 * An outbox over the `OutboxStore` in context, for one owner, delivering in a
 * fiber of the current scope. Fails with `Unreadable` when the records cannot
 * be read, `Locked` when this owner's outbox is open already.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Outbox, OutboxError, OutboxStore | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* OutboxStore
    const records = yield* store.open({ node: options.node, master: options.master })
    const where = records.location

    // The queue in sequence order (a Map keeps insertion order: add and remove cost the same at any depth),
    // how many reports each task has queued, and the tasks started without a final report.
    const queue = new Map<string, StoredRecord>()
    const queuedPerTask = new Map<string, number>()
    const started = new Map<string, Started>()
    const writing = new Map<string, Deferred.Deferred<void, OutboxError>>()
    let next = 1

    const enqueue = (record: StoredRecord) => {
      queue.set(record.report.key, record)
      queuedPerTask.set(record.report.taskId, (queuedPerTask.get(record.report.taskId) ?? 0) + 1)
    }
    const dequeue = (record: StoredRecord) => {
      queue.delete(record.report.key)
      const left = (queuedPerTask.get(record.report.taskId) ?? 1) - 1
      if (left === 0) queuedPerTask.delete(record.report.taskId)
      else queuedPerTask.set(record.report.taskId, left)
    }

    const ended = new Set(records.initial.filter((r) => r.report.status !== "RUNNING").map((r) => r.report.taskId))
    const duplicates: Array<number> = []
    for (const record of records.initial) {
      next = Math.max(next, record.sequence + 1)
      // A report stored twice (an add retried after a write that failed late) is delivered once.
      if (queue.has(record.report.key)) {
        duplicates.push(record.sequence)
        continue
      }
      enqueue(record)
      if (record.report.status === "RUNNING") {
        started.set(record.report.taskId, {
          sequence: record.sequence,
          report: record.report,
          delivered: false,
          ended: ended.has(record.report.taskId),
          processes: record.processes ?? []
        })
      }
    }
    const unfinished = Array.from(started).flatMap(([taskId, s]) => (s.ended ? [] : [taskId]))

    const log = Effect.annotateLogs({ module: "Outbox", address: options.master, node: options.node })
    const forget = (sequences: ReadonlyArray<number>) =>
      sequences.length === 0 ? Effect.void : records.remove(sequences).pipe(
        // The record stays where it is: it is delivered again after the next start, and the master ignores it.
        Effect.catchAll((error) =>
          Effect.logWarning(`${error.message}; the report may be delivered again after a restart`)
        ),
        log
      )
    yield* forget(duplicates)
    if (queue.size > 0) yield* Effect.logInfo(`outbox ${where}: ${queue.size} reports to deliver from before`).pipe(log)
    if (unfinished.length > 0) {
      yield* Effect.logWarning(`outbox ${where}: ${unfinished.length} tasks were running when the worker stopped`).pipe(
        log
      )
    }

    const depth = yield* SubscriptionRef.make(queue.size)
    const publish = Effect.suspend(() =>
      Effect.zipRight(SubscriptionRef.set(depth, queue.size), Metric.set(Metrics.outboxDepth, queue.size))
    )
    const stats = yield* Ref.make<OutboxStats>({ delivered: 0, rejected: 0, retries: 0, setAside: records.setAside })
    const nonEmpty = yield* Effect.makeLatch(queue.size > 0)
    yield* Metric.set(Metrics.outboxDepth, queue.size)

    // Adds are written by one fiber, in the order they came, as many at once as are waiting.
    const requests = yield* Queue.unbounded<Request>()
    let open = true
    const closed = (request: Request) =>
      new OutboxError({
        reason: "Closed",
        path: where,
        operation: request._tag === "Add"
          ? `closed before report ${request.report.key} was stored`
          : `closed before the process groups of task ${request.taskId} were recorded`
      })

    const written = (batch: ReadonlyArray<Add>, appended: ReadonlyArray<StoredRecord>) =>
      Effect.suspend(() => {
        const done: Array<number> = []
        for (const record of appended) {
          const { status, taskId } = record.report
          if (status === "RUNNING") {
            started.set(taskId, {
              sequence: record.sequence,
              report: record.report,
              delivered: false,
              ended: false,
              processes: []
            })
            continue
          }
          const task = started.get(taskId)
          if (task === undefined) continue
          if (task.delivered) {
            started.delete(taskId)
            done.push(task.sequence)
          } else {
            task.ended = true
          }
        }
        // The RUNNING records of tasks that ended here go before the final reports can be delivered: a final report
        // delivered and removed while its RUNNING record is still on disk would name the task unfinished after a kill.
        const deliverable = Effect.suspend(() => {
          for (const record of appended) enqueue(record)
          for (const request of batch) {
            writing.delete(request.report.key)
            Deferred.unsafeDone(request.done, Exit.void)
          }
          nonEmpty.unsafeOpen()
          return publish
        })
        return Effect.zipRight(forget(done), deliverable)
      })

    const writeAdds = (batch: ReadonlyArray<Add>) => {
      const appended = batch.map((request): StoredRecord => ({ sequence: next++, report: request.report }))
      return records.append(appended).pipe(
        Effect.matchCauseEffect({
          onSuccess: () => written(batch, appended),
          onFailure: (cause) =>
            Effect.sync(() => {
              for (const request of batch) {
                writing.delete(request.report.key)
                Deferred.unsafeDone(request.done, Exit.failCause(cause))
              }
            })
        })
      )
    }

    // Here, in the writer, a RUNNING record is never rewritten while its task's final report is being stored,
    // so it is never rewritten after it is removed.
    const writeProcesses = (request: Rewrite) =>
      Effect.suspend(() => {
        const task = started.get(request.taskId)
        if (task === undefined || task.ended) {
          Deferred.unsafeDone(
            request.done,
            Exit.fail(
              new OutboxError({
                reason: "Closed",
                path: where,
                operation: `task ${request.taskId} has no RUNNING record open (never stored, or its final report ` +
                  "is): its process groups cannot be recorded"
              })
            )
          )
          return Effect.void
        }
        const update = records.update ?? ((record: StoredRecord) =>
          Effect.fail(
            new OutboxError({
              reason: "Unwritable",
              path: where,
              operation: `this store cannot rewrite record ${record.sequence}: process groups are not recorded`
            })
          ))
        return update({ sequence: task.sequence, report: task.report, processes: request.processes }).pipe(
          Effect.exit,
          Effect.map((exit) => {
            if (Exit.isSuccess(exit)) task.processes = request.processes
            Deferred.unsafeDone(request.done, exit)
          })
        )
      })

    // Woken by the first add, the writer lets the fibers ready to run go first: the adds they make join the batch,
    // one write for the tasks that ended together rather than one for the first and one for the rest.
    const writeBatch = Effect.flatMap(Queue.take(requests), (first) =>
      Effect.gen(function*() {
        yield* Effect.yieldNow()
        const rest = yield* Queue.takeUpTo(requests, maxBatch - 1)
        // In the order they came: adds side by side are written together, a rewrite on its own.
        const segments: Array<Array<Add> | Rewrite> = []
        for (const request of [first, ...rest]) {
          const last = segments.at(-1)
          if (request._tag === "Rewrite") segments.push(request)
          else if (Array.isArray(last)) last.push(request)
          else segments.push([request])
        }
        yield* Effect.forEach(
          segments,
          (segment) => (Array.isArray(segment) ? writeAdds(segment) : writeProcesses(segment)),
          { discard: true }
        )
      }).pipe(
        // A batch once taken is written, and its requests are answered, even when the outbox closes meanwhile.
        Effect.uninterruptible
      ))

    yield* writeBatch.pipe(
      Effect.forever,
      Effect.ensuring(
        Effect.flatMap(Queue.takeAll(requests), (left) =>
          Effect.sync(() => {
            open = false
            for (const request of left) Deferred.unsafeDone(request.done, Exit.fail(closed(request)))
          }))
      ),
      log,
      Effect.annotateLogs({ fiber: "writer" }),
      Effect.forkScoped,
      Effect.interruptible
    )

    const add = (report: TaskSource.StatusReport): Effect.Effect<void, OutboxError> =>
      Effect.suspend(() => {
        if (queue.has(report.key)) return Effect.void
        const running = started.get(report.taskId)
        if (report.status === "RUNNING" && running !== undefined) return Effect.void
        const waiting = writing.get(report.key)
        if (waiting !== undefined) return Deferred.await(waiting)
        const done = Deferred.unsafeMake<void, OutboxError>(FiberId.none)
        const request: Add = { _tag: "Add", report, done }
        if (!open) return Effect.fail(closed(request))
        writing.set(report.key, done)
        requests.unsafeOffer(request)
        return Deferred.await(done)
      })

    const recordProcesses = (taskId: string, processes: ReadonlyArray<ProcessGroup>) =>
      Effect.suspend(() => {
        const request: Rewrite = {
          _tag: "Rewrite",
          taskId,
          processes,
          done: Deferred.unsafeMake<void, OutboxError>(FiberId.none)
        }
        if (!open) return Effect.fail(closed(request))
        requests.unsafeOffer(request)
        return Deferred.await(request.done)
      })

    // Reports done with: out of the queue, and their records out of the store unless one still marks a task started.
    const settle = (settled: ReadonlyArray<StoredRecord>) =>
      Effect.suspend(() => {
        const done: Array<number> = []
        for (const record of settled) {
          dequeue(record)
          const task = record.report.status === "RUNNING" ? started.get(record.report.taskId) : undefined
          if (task !== undefined && task.sequence === record.sequence) {
            task.delivered = true
            if (!task.ended) continue
            started.delete(record.report.taskId)
          }
          done.push(record.sequence)
        }
        if (queue.size === 0) nonEmpty.unsafeClose()
        return Effect.zipRight(publish, forget(done))
      })

    const schedule = options.retry ?? defaultRetry
    const retried = (error: TaskSource.Failure) =>
      tryAgain(error) ? Ref.update(stats, (s) => ({ ...s, retries: s.retries + 1 })) : Effect.void
    const refused = (record: StoredRecord, error: TaskSource.Failure) =>
      error._tag === "GrpcError"
        ? Effect.logError(
          `the master refused report ${record.report.key} (task ${record.report.taskId} ${record.report.status}) ` +
            `for good: ${error.message}`
        ).pipe(Effect.zipRight(Ref.update(stats, (s) => ({ ...s, rejected: s.rejected + 1 }))))
        // The connection is closed: the report stays in the store for the next start.
        : Effect.never

    // One report on its own: retried while worth it, dropped once refused for good.
    const deliverOne = (record: StoredRecord) =>
      options.deliver(record.report).pipe(
        Effect.tapError(retried),
        Effect.retry({ schedule, while: tryAgain }),
        Effect.matchEffect({
          onSuccess: () =>
            Effect.zipRight(Ref.update(stats, (s) => ({ ...s, delivered: s.delivered + 1 })), settle([record])),
          onFailure: (error) => Effect.zipRight(refused(record, error), settle([record]))
        })
      )

    // The next reports to deliver, oldest first, and at most one of each task: a task's reports reach the master
    // in order even when one of a batch is tried again on its own.
    const nextBatch = (max: number): ReadonlyArray<StoredRecord> => {
      const batch: Array<StoredRecord> = []
      const tasks = new Set<string>()
      let bytes = 0
      for (const record of queue.values()) {
        const { error, key, taskId } = record.report
        if (tasks.has(taskId)) continue
        bytes += key.length + taskId.length + error.length
        if (batch.length === max || (batch.length > 0 && bytes > maxDeliveryBytes)) break
        tasks.add(taskId)
        batch.push(record)
      }
      return batch
    }

    // A batch in one call, its retries as one report's. Each report's result is its own: taken, refused for good
    // (dropped, as one report alone), or worth another try (delivered on its own). When the call cannot be made
    // to work (refused for good as a whole, too large, not answered report by report), each goes on its own.
    const deliverBatch = (
      deliverAll: NonNullable<Options["deliverAll"]>,
      batch: ReadonlyArray<StoredRecord>
    ) =>
      deliverAll(batch.map((record) => record.report)).pipe(
        Effect.tapError(retried),
        Effect.retry({ schedule, while: (error) => tryAgain(error) && !tooLarge(error) }),
        Effect.option,
        Effect.flatMap((results) => {
          if (Option.isNone(results) || results.value.length !== batch.length) {
            return Effect.forEach(batch, deliverOne, { discard: true })
          }
          const taken: Array<StoredRecord> = []
          const dropped: Array<readonly [StoredRecord, TaskSource.Failure]> = []
          const again: Array<StoredRecord> = []
          results.value.forEach((result, i) => {
            const record = batch[i]!
            if (Either.isRight(result)) taken.push(record)
            else if (tryAgain(result.left)) again.push(record)
            else dropped.push([record, result.left])
          })
          return Effect.all([
            Ref.update(
              stats,
              (s) => ({ ...s, delivered: s.delivered + taken.length, retries: s.retries + again.length })
            ),
            settle(taken),
            Effect.forEach(dropped, ([record, error]) => Effect.zipRight(refused(record, error), settle([record])), {
              discard: true
            }),
            Effect.forEach(again, deliverOne, { discard: true })
          ], { discard: true })
        })
      )

    const deliverHead = Effect.gen(function*() {
      yield* nonEmpty.await
      // The reports stored with the first one, and those the fibers ready to run store now, go in the same call.
      yield* Effect.yieldNow()
      const batch = nextBatch(options.deliverAll === undefined ? 1 : maxDelivery)
      if (batch.length === 0) {
        nonEmpty.unsafeClose()
        return
      }
      if (options.deliverAll === undefined || batch.length === 1) {
        return yield* deliverOne(batch[0]!)
      }
      yield* deliverBatch(options.deliverAll, batch)
    })

    yield* deliverHead.pipe(
      // A delivery that dies (a bug in a task source of the app's own) would end the loop, and with it every
      // delivery. Its batch stays at the head of the queue: logged, and tried again after a pause.
      Effect.catchAllDefect((defect) =>
        Effect.logError(`delivering reports died; trying again in ${formatMillis(afterDefect)}`, defect).pipe(
          Effect.zipRight(Effect.sleep(afterDefect))
        )
      ),
      Effect.forever,
      log,
      Effect.annotateLogs({ fiber: "delivery" }),
      Effect.forkScoped,
      Effect.interruptible
    )

    const lost = (report: TaskSource.StatusReport, why: string) =>
      Effect.logError(`report ${report.key} is lost, ${why}: ${JSON.stringify(report)}`)
    const storeAgain = (report: TaskSource.StatusReport, first: OutboxError) =>
      Effect.logError(
        `report ${report.key} could not be stored; held in memory, stored again until it is: ${first.message}`
      ).pipe(
        Effect.zipRight(
          add(report).pipe(
            Effect.tapError((again) =>
              Effect.logWarning(`report ${report.key} still cannot be stored: ${again.message}`)
            ),
            Effect.retry({ schedule: Retry.untilDone, while: (again) => again.reason !== "Closed" }),
            Effect.interruptible
          )
        ),
        Effect.zipRight(Effect.logInfo(`report ${report.key} stored`)),
        Effect.onInterrupt(() => lost(report, "the task handler stopped before it could be stored"))
      )
    const addUntilStored = (
      report: TaskSource.StatusReport,
      holding: (storing: Effect.Effect<void, OutboxError>) => Effect.Effect<void, OutboxError> = (storing) => storing
    ) =>
      add(report).pipe(
        Effect.catchAll((error) => holding(storeAgain(report, error))),
        Effect.catchAll((error) => lost(report, error.message))
      )

    return {
      add,
      addUntilStored,
      pending: Effect.sync(() => Array.from(queue.values(), (record) => record.report)),
      size: Effect.sync(() => queue.size),
      depth: depth.changes.pipe(Stream.changes),
      tracks: (taskId) => Effect.sync(() => queuedPerTask.has(taskId) || started.has(taskId)),
      recordProcesses,
      processes: (taskId) => Effect.sync(() => started.get(taskId)?.processes ?? []),
      unfinished,
      stats: Ref.get(stats),
      flush: depth.changes.pipe(Stream.filter((n) => n === 0), Stream.runHead, Effect.asVoid),
      location: where
    } satisfies Outbox
  })

// -------------------------------------------------------------------------------------------------
// Stores
// -------------------------------------------------------------------------------------------------

/**
 * The store on the file system: in `directory`, one subdirectory per owner,
 * and one file per batch of records written together, a line per record with
 * its checksum. A batch is written to a temporary file, synced, renamed into
 * place, and the directory synced before its adds return. A damaged record
 * is set aside in the owner's `damaged/` subdirectory, with a log line, and
 * costs no other record. Records written by 0.2 (one file each) are
 * read. The directory is locked for the layer's
 * lifetime: a second process on it fails with `Locked` naming it; the lock of
 * a process that died (SIGKILL, power loss) does not hold its successor back.
 *
 * Needs `FileSystem` and `Path` (`effect-grpc-resilience/node` provides Node's).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (
  directory: string
): Layer.Layer<OutboxStore, OutboxError, FileSystem.FileSystem | Path.Path> =>
  Layer.scoped(OutboxStore, Effect.map(OutboxFileSystem.make(directory), OutboxStore.of))

/**
 * A store in memory, for tests: records survive an outbox closed and opened
 * again for as long as the layer, not a restart.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<OutboxStore> = Layer.sync(OutboxStore, () => {
  const owners = new Map<string, Map<number, StoredRecord>>()
  const open = new Set<string>()
  return OutboxStore.of({
    open: (owner) =>
      Effect.gen(function*() {
        const id = JSON.stringify([owner.node, owner.master])
        const location = `memory:${owner.node}@${owner.master}`
        yield* holdOwner(open, owner, location)
        const stored = owners.get(id) ?? new Map<number, StoredRecord>()
        owners.set(id, stored)
        const initial = Array.from(stored.values()).sort((a, b) => a.sequence - b.sequence)
        return {
          location,
          initial,
          setAside: 0,
          append: (records) => Effect.sync(() => records.forEach((r) => stored.set(r.sequence, r))),
          update: (record) => Effect.sync(() => void stored.set(record.sequence, record)),
          remove: (sequences) => Effect.sync(() => sequences.forEach((sequence) => stored.delete(sequence)))
        } satisfies Records
      })
  })
})

/**
 * Where the file-system store keeps its records, as `Config` reads it: `outboxDir` (`OUTBOX_DIR`, default
 * `.outbox`).
 *
 * @since 0.2.0
 * @category config
 */
export const config = {
  directory: Config.nonEmptyString("outboxDir").pipe(
    Config.withDefault(".outbox"),
    Config.withDescription("Where undelivered status reports wait.")
  )
} satisfies Config.Config.Wrap<{ readonly directory: string }>

/**
 * The store on the file system, in the directory read from `Config` (default {@link config}: `OUTBOX_DIR`), as
 * every `layerConfig` reads it (`Env.read`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<{ readonly directory: string }> = config
): Layer.Layer<OutboxStore, OutboxError | ConfigError.ConfigError, FileSystem.FileSystem | Path.Path> =>
  Layer.unwrapEffect(Effect.map(Cfg.read(options), ({ directory }) => layerFileSystem(directory)))
