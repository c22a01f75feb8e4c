/**
 * Where outboxes keep their records: what a store is (`OutboxStore`, which
 * opens one owner's `Records` for a scope), the record and its encoding, and
 * the outbox's error. `Outbox.layerFileSystem`, `Outbox.layerMemory` and
 * `effect-grpc-resilience/sqlite` are stores; another store implements this
 * module's interface (docs/outbox.md says what it must do).
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { errorMessage } from "./internal/shared/format.js"
import type * as TaskSource from "./TaskSource.js"

/**
 * Whose records these are: the node that reports and the master it reports to.
 *
 * @since 0.2.0
 * @category models
 */
export interface Owner {
  /** The node key. */
  readonly node: string
  /** The master's address, as the connection dials it. */
  readonly master: string
}

/**
 * A process group a task started: its id (the pid of its first process, its
 * leader) and, where the platform tells them (Linux), the leader's start time
 * and the boot it ran in, which tell the leader from a later process that got
 * the same pid. `TaskProcess.ProcessGroup` is the same.
 *
 * @since 0.3.0
 * @category schemas
 */
export const ProcessGroup = Schema.Struct({
  pgid: Schema.Int.pipe(Schema.greaterThan(1)),
  /** Clock ticks since boot (/proc/<pid>/stat, field 22); absent where the platform does not say. */
  start: Schema.optional(Schema.String),
  /** The boot (/proc/sys/kernel/random/boot_id): start times count from it, and its processes end with it. */
  boot: Schema.optional(Schema.String)
})

/**
 * A process group a task started.
 *
 * @since 0.3.0
 * @category models
 */
export interface ProcessGroup extends Schema.Schema.Type<typeof ProcessGroup> {}

/**
 * One record: a report and its place in the order of `add`.
 *
 * @since 0.2.0
 * @category models
 */
export interface StoredRecord {
  /** A record with a smaller sequence was added first. */
  readonly sequence: number
  readonly report: TaskSource.StatusReport
  /** A RUNNING record: the process groups its task started and recorded. Absent in records of 0.2.0. */
  readonly processes?: ReadonlyArray<ProcessGroup> | undefined
}

/**
 * A store could not do what the outbox asked. `path` says where: a
 * directory, a file, a database.
 *
 * - `Unreadable`: the records could not be read when the outbox opened.
 * - `Unwritable`: a record could not be made durable (disk full, permission, read-only).
 * - `Locked`: another process uses the store, or this owner's outbox is open already.
 * - `Closed`: the outbox closed before the report was durable.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutboxError extends Data.TaggedError("OutboxError")<{
  readonly reason: "Unreadable" | "Unwritable" | "Locked" | "Closed"
  readonly path: string
  /** What was being done, in a few words: "cannot write record 42". */
  readonly operation: string
  readonly cause?: unknown
}> {
  override get message() {
    return `outbox ${this.path}: ${this.operation}${this.cause === undefined ? "" : `: ${errorMessage(this.cause)}`}`
  }
}

/**
 * Is this an `OutboxError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isOutboxError = (u: unknown): u is OutboxError => Predicate.isTagged(u, "OutboxError")

/**
 * One owner's records in a store, open for a scope.
 *
 * @since 0.2.0
 * @category models
 */
export interface Records {
  /** Where they are, for messages: a directory, a database file. */
  readonly location: string
  /** The records found when they were opened, oldest first. Damaged ones were set aside, each logged. */
  readonly initial: ReadonlyArray<StoredRecord>
  /** How many damaged records were set aside when they were opened. */
  readonly setAside: number
  /**
   * Stores the records; succeeds once every one of them is durable. When it fails they may be stored again: a store
   * should keep none of them (the file system's takes back what it wrote, best effort), and one it kept anyway is
   * read again at the next open, where the outbox delivers a report stored twice once.
   */
  readonly append: (records: ReadonlyArray<StoredRecord>) => Effect.Effect<void, OutboxError>
  /**
   * Rewrites a record that is stored, under its sequence (a RUNNING record with
   * the process groups its task started); succeeds once the new record is
   * durable, and leaves the old one whole when it fails. The outbox never
   * rewrites a record it may be removing. Optional, for the stores written
   * for 0.2.0: without it no process group is recorded.
   */
  readonly update?: ((record: StoredRecord) => Effect.Effect<void, OutboxError>) | undefined
  /**
   * Forgets the records. Need not be durable: a record that comes back (after
   * a power loss) is delivered again, which the master ignores by its key.
   */
  readonly remove: (sequences: ReadonlyArray<number>) => Effect.Effect<void, OutboxError>
}

/**
 * A record as a store writes it: flat, the sequence beside the report's fields.
 *
 * @since 0.3.0
 * @category schemas
 */
export const RecordFields = Schema.Struct({
  sequence: Schema.Int.pipe(Schema.positive()),
  key: Schema.String,
  taskId: Schema.String,
  status: Schema.Literal("RUNNING", "FINISHED", "ERROR", "CANCELLED"),
  error: Schema.String,
  // Optional: the records of 0.2.0 have none, and 0.2.0 reads these (it ignores a field it does not know).
  processes: Schema.optional(Schema.Array(ProcessGroup))
})

/**
 * A record in the flat form a store writes.
 *
 * @since 0.3.0
 * @category encoding
 */
export const toFields = (record: StoredRecord): typeof RecordFields.Type => ({
  sequence: record.sequence,
  ...record.report,
  ...(record.processes === undefined ? {} : { processes: record.processes })
})

/**
 * A record from the flat form a store writes.
 *
 * @since 0.3.0
 * @category encoding
 */
export const fromFields = ({ processes, sequence, ...report }: typeof RecordFields.Type): StoredRecord =>
  processes === undefined ? { sequence, report } : { sequence, report, processes }

/**
 * Where outboxes keep their records.
 *
 * @since 0.2.0
 * @category tags
 */
export class OutboxStore extends Context.Tag("effect-grpc-resilience/OutboxStore")<OutboxStore, {
  /** Opens one owner's records for the scope; `Locked` while they are open elsewhere. */
  readonly open: (owner: Owner) => Effect.Effect<Records, OutboxError, Scope.Scope>
}>() {}

/**
 * Holds an owner as open for the scope, in a set of the owners open in a store: `Locked` (at `location`) while
 * the owner is open already, so each owner's records have one outbox at a time. A store calls it first in `open`.
 * The check and the hold are one step: two opens at once cannot both pass.
 *
 * @since 0.3.0
 * @category utils
 */
export const holdOwner = (
  open: Set<string>,
  owner: Owner,
  location: string
): Effect.Effect<void, OutboxError, Scope.Scope> => {
  const id = JSON.stringify([owner.node, owner.master])
  return Effect.acquireRelease(
    Effect.suspend(() => {
      if (open.has(id)) {
        return Effect.fail(
          new OutboxError({
            reason: "Locked",
            path: location,
            operation: `the outbox of node ${owner.node} for master ${owner.master} is open already`
          })
        )
      }
      open.add(id)
      return Effect.void
    }),
    () => Effect.sync(() => void open.delete(id))
  )
}
