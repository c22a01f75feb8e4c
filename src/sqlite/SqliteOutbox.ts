/**
 * The outbox store in a SQLite database, through `@effect/sql-sqlite-node`
 * (better-sqlite3): one row per report in the table `outbox_record`, keyed by
 * owner (node, master) and sequence; a RUNNING row holds, in its `processes`
 * column, the process groups its task started (JSON; the column is added to
 * a database of 0.2.0 when it opens). The database runs in WAL mode with
 * `synchronous = FULL`, so a commit is on the disk before `add` returns, and
 * in `EXCLUSIVE` locking mode: the process holds the database's lock for as
 * long as the layer, a second process fails at its start with `Locked`
 * naming the file, and the lock of a process that died goes with it (the
 * operating system releases it).
 *
 * Its dependencies are optional peers of this package: install
 * `@effect/sql-sqlite-node` and `@effect/sql` to use it.
 *
 * @since 0.2.0
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlError from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { mkdirSync } from "node:fs"
import { dirname, resolve } from "node:path"
import * as Env from "../Env.js"
import * as OutboxStore from "../OutboxStore.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** The database file; created, with its directory, when missing. */
  readonly filename: string
}

interface Row {
  readonly sequence: number
  readonly key: unknown
  readonly task_id: unknown
  readonly status: unknown
  readonly error: unknown
  readonly processes: unknown
}

// The process groups of a RUNNING record are a JSON array in their column; NULL when there are none.
const RowFields = Schema.Struct({
  ...OutboxStore.RecordFields.fields,
  processes: Schema.NullOr(Schema.parseJson(Schema.Array(OutboxStore.ProcessGroup)))
})
const decodeRow = Schema.decodeUnknownEither(RowFields)
const encodeProcesses = Schema.encodeSync(Schema.parseJson(Schema.Array(OutboxStore.ProcessGroup)))
const processesColumn = (record: OutboxStore.StoredRecord) =>
  record.processes === undefined ? null : encodeProcesses(record.processes)

// SQLite's answer when another connection holds the lock.
const isBusy = (error: SqlError.SqlError) => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED"
}

// Placeholders per statement stay well under SQLite's limit (32,766): 8 per record. The outbox appends at
// most 256 at once.
const maxRows = 1_000

const chunks = <A>(items: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/**
 * The store in the database `filename`, for the scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Context.Tag.Service<OutboxStore.OutboxStore>, OutboxStore.OutboxError, Scope.Scope> =>
  Effect.gen(function*() {
    const filename = resolve(options.filename)
    const fail = (reason: OutboxStore.OutboxError["reason"], operation: string) => (cause: unknown) =>
      new OutboxStore.OutboxError({ reason, path: filename, operation, cause })

    yield* Effect.try({
      try: () => mkdirSync(dirname(filename), { recursive: true }),
      catch: fail("Unwritable", "cannot create the directory")
    })
    // better-sqlite3 throws when it cannot open the file: a defect of the client's layer, made an error here.
    const context = yield* Layer.build(SqliteClient.layer({ filename, disableWAL: true })).pipe(
      Effect.catchAllCause((cause) => Effect.fail(fail("Unreadable", "cannot open the database")(Cause.squash(cause))))
    )
    const sql = Context.get(context, SqlClient.SqlClient)

    // The client opens the file without WAL (`disableWAL`): locking must be EXCLUSIVE before the journal is WAL, so
    // that the WAL index lives in this process's memory, not in a shared-memory file, and no other process opens
    // the database. No wait for a lock: in EXCLUSIVE mode the only other holder is another process, which is the
    // mistake.
    yield* Effect.all([
      sql.unsafe("PRAGMA busy_timeout = 0"),
      sql.unsafe("PRAGMA locking_mode = EXCLUSIVE"),
      sql.unsafe("PRAGMA journal_mode = WAL"),
      sql.unsafe("PRAGMA synchronous = FULL"),
      sql`CREATE TABLE IF NOT EXISTS outbox_record (
        node TEXT NOT NULL,
        master TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        key TEXT,
        task_id TEXT,
        status TEXT,
        error TEXT,
        processes TEXT,
        PRIMARY KEY (node, master, sequence)
      )`,
      sql`CREATE TABLE IF NOT EXISTS outbox_damaged (
        node TEXT NOT NULL,
        master TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        row TEXT NOT NULL,
        reason TEXT NOT NULL,
        set_aside_at INTEGER NOT NULL
      )`
    ]).pipe(
      // A database of 0.2.0 has no column for process groups: added, empty (0.2.0 reads on, it names its columns).
      Effect.zipRight(Effect.flatMap(
        sql<{ readonly name: string }>`SELECT name FROM pragma_table_info('outbox_record')`,
        (columns) =>
          columns.some((column) => column.name === "processes")
            ? Effect.void
            : sql`ALTER TABLE outbox_record ADD COLUMN processes TEXT`
      )),
      Effect.mapError((error) =>
        isBusy(error)
          ? new OutboxStore.OutboxError({
            reason: "Locked",
            path: filename,
            operation: "in use by another process: one process per outbox database",
            cause: error.cause
          })
          : fail("Unreadable", "cannot prepare the database")(error.cause ?? error)
      )
    )

    const open = new Set<string>()

    return OutboxStore.OutboxStore.of({
      open: (owner) =>
        Effect.gen(function*() {
          const location = `${filename} (node ${owner.node}, master ${owner.master})`
          yield* OutboxStore.holdOwner(open, owner, location)
          const failAt = (reason: OutboxStore.OutboxError["reason"], operation: string) => (error: SqlError.SqlError) =>
            new OutboxStore.OutboxError({ reason, path: location, operation, cause: error.cause ?? error })

          const rows = yield* sql<Row>`SELECT sequence, key, task_id, status, error, processes FROM outbox_record
            WHERE node = ${owner.node} AND master = ${owner.master} ORDER BY sequence`.pipe(
            Effect.mapError(failAt("Unreadable", "cannot read the records"))
          )
          const initial: Array<OutboxStore.StoredRecord> = []
          let setAside = 0
          for (const row of rows) {
            const { error, key, processes, sequence, status, task_id: taskId } = row
            const decoded = decodeRow({ sequence, key, taskId, status, error, processes })
            if (Either.isRight(decoded)) {
              const { processes, ...fields } = decoded.right
              initial.push(OutboxStore.fromFields(processes === null ? fields : { ...fields, processes }))
              continue
            }
            // A row this store did not write whole (another program, another version): set aside, alone.
            const why = ParseResult.TreeFormatter.formatErrorSync(decoded.left).split("\n")[0] ?? "unreadable"
            const at = yield* Clock.currentTimeMillis
            // Copied, then deleted: a crash between leaves it in both, and the next start sets it aside again.
            const damaged = { ...owner, sequence, row: JSON.stringify(row), reason: why, set_aside_at: at }
            yield* Effect.zipRight(
              sql`INSERT INTO outbox_damaged ${sql.insert(damaged)}`,
              sql`DELETE FROM outbox_record WHERE node = ${owner.node} AND master = ${owner.master} AND sequence = ${sequence}`
            ).pipe(Effect.mapError(failAt("Unwritable", `cannot set aside record ${sequence}`)))
            setAside += 1
            yield* Effect.logError(
              `outbox record ${sequence} of ${location} is damaged (${why}); set aside in table outbox_damaged, ` +
                "the other records are read"
            )
          }

          // One statement, so one transaction of SQLite's own: all or none, and durable when it returns.
          // (Not `withTransaction`: a COMMIT that fails, as on a full disk, is a defect there.)
          const insert = (records: ReadonlyArray<OutboxStore.StoredRecord>) =>
            sql`INSERT INTO outbox_record ${
              sql.insert(records.map((record) => ({
                node: owner.node,
                master: owner.master,
                sequence: record.sequence,
                key: record.report.key,
                task_id: record.report.taskId,
                status: record.report.status,
                error: record.report.error,
                processes: processesColumn(record)
              })))
            }`
          const append = (records: ReadonlyArray<OutboxStore.StoredRecord>) =>
            (records.length === 0 ? Effect.void : records.length <= maxRows
              ? Effect.asVoid(insert(records))
              : Effect.dieMessage(
                `SqliteOutbox: at most ${maxRows} records are appended at once, not ${records.length}`
              ))
              .pipe(
                Effect.mapError(failAt(
                  "Unwritable",
                  records.length === 1
                    ? `cannot write record ${records[0]!.sequence}`
                    : `cannot write ${records.length} records`
                ))
              )

          // One statement, durable when it returns; the row is the record's, whoever added it.
          const update = (record: OutboxStore.StoredRecord) =>
            sql`UPDATE outbox_record SET key = ${record.report.key}, task_id = ${record.report.taskId},
              status = ${record.report.status}, error = ${record.report.error}, processes = ${processesColumn(record)}
              WHERE node = ${owner.node} AND master = ${owner.master} AND sequence = ${record.sequence}`.pipe(
              Effect.asVoid,
              Effect.mapError(failAt("Unwritable", `cannot rewrite record ${record.sequence}`))
            )

          const remove = (sequences: ReadonlyArray<number>) =>
            Effect.forEach(chunks(sequences, 500), (chunk) =>
              sql`DELETE FROM outbox_record
                WHERE node = ${owner.node} AND master = ${owner.master} AND sequence IN ${sql.in(chunk)}`, {
              discard: true
            }).pipe(
              Effect.mapError(failAt("Unwritable", "cannot remove records"))
            )

          return { location, initial, setAside, append, update, remove } satisfies OutboxStore.Records
        })
    })
  }).pipe(Effect.annotateLogs({ module: "SqliteOutbox" }))

/**
 * The outbox store in a SQLite database.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<OutboxStore.OutboxStore, OutboxStore.OutboxError> =>
  Layer.scoped(OutboxStore.OutboxStore, make(options))

/**
 * What `layerConfig` reads by default: `outboxSqlite` (`OUTBOX_SQLITE`), the database file (default
 * `.outbox.sqlite`).
 *
 * @since 0.2.0
 * @category config
 */
export const config = {
  filename: Config.nonEmptyString("outboxSqlite").pipe(
    Config.withDefault(".outbox.sqlite"),
    Config.withDescription("The SQLite outbox's database file.")
  )
} satisfies Config.Config.Wrap<Options>

/**
 * {@link layer} with its options read from `Config`, as every `layerConfig` reads it (`Env.read`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<OutboxStore.OutboxStore, OutboxStore.OutboxError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Env.read(options), layer))
