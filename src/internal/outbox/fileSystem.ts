/**
 * The outbox store on the file system, through `@effect/platform`'s
 * `FileSystem`:
 *
 * ```
 * <directory>/outbox.lock                      the process that uses the directory
 * <directory>/<node>@<master>-<hash>/          one owner's records
 *   owner.json                                 the owner, exactly
 *   0000000000000007.records                   the records written together: one line each, checksummed
 *   removed.log                                records removed from a file that other records keep
 *   0000000000000042.json                      one record, as 0.2 wrote them (read, never written)
 *   damaged/<file>.<time>                      a file with a record that could not be read, set aside
 * ```
 *
 * The records written together (one batch of the outbox's writer) go into
 * one file, named by a counter that only grows: written to a temporary file,
 * synced, renamed into place, and the directory synced. The file is there
 * whole or not at all, and durable once `append` returns; each line also
 * carries a checksum of its record, so a line damaged later (a torn sector, a
 * stray program) is set aside alone, never read as a record. A record
 * rewritten (`update`) goes into a new file the same way: of two versions of
 * a record, the one in the later file is read.
 *
 * A file is deleted once none of its records is wanted. A record removed
 * while others keep its file (a RUNNING record outlives the reports written
 * beside it) is named in `removed.log` instead: appended, not synced, so
 * that a removal survives a crash of the process but may be undone by a power
 * loss (the record is then delivered again, which the master ignores by its
 * key, as the `Records` contract allows). A line there says up to which file
 * a sequence is removed: a sequence used again later, in a later file, is not
 * removed by it. The log is rewritten with only the lines that still count
 * when the store opens and when it grows large.
 *
 * @internal
 */
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { fromFields, holdOwner, OutboxError, RecordFields, toFields } from "../../OutboxStore.js"
import type { Owner, Records, StoredRecord } from "../../OutboxStore.js"
import * as DirectoryLock from "./directoryLock.js"

const legacyName = /^(\d{16})\.json$/
const batchName = /^(\d{16})\.records$/
const temporary = /^\..*\.tmp$/
const removedLog = "removed.log"

const padded = (n: number) => String(n).padStart(16, "0")
const batchFile = (counter: number) => `${padded(counter)}.records`

// A readable name for a person listing the directory; the hash keeps two owners with similar names apart.
const slug = (text: string) => text.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 40)
const hash = (text: string) => {
  // cyrb53: 53 bits, no dependency; owner.json catches the collision it makes unlikely.
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16).padStart(14, "0")
}

/** The directory name of an owner's records. */
export const ownerDirectory = (owner: Owner): string =>
  `${slug(owner.node)}@${slug(owner.master)}-${hash(JSON.stringify([owner.node, owner.master]))}`

const OwnerFile = Schema.parseJson(Schema.Struct({ node: Schema.String, master: Schema.String }))
const decodeRecord = Schema.decodeUnknownEither(Schema.parseJson(RecordFields))
const encoder = new TextEncoder()
const encode = (value: unknown) => encoder.encode(`${JSON.stringify(value)}\n`)

const isNotFound = (error: PlatformError.PlatformError) => error._tag === "SystemError" && error.reason === "NotFound"

// A line of a records file or of the removal log: its text, a tab, the checksum of the text. JSON escapes a tab in
// a string, so the last tab of a line is the separator.
export const line = (text: string): string => `${text}\t${hash(text)}\n`
const checked = (raw: string): Either.Either<string, string> => {
  const tab = raw.lastIndexOf("\t")
  if (tab < 0) return Either.left("no checksum")
  const text = raw.slice(0, tab)
  return hash(text) === raw.slice(tab + 1) ? Either.right(text) : Either.left("its checksum does not match")
}

/** The lines of a records file: each record, flat, with its checksum. */
export const encodeRecords = (records: ReadonlyArray<StoredRecord>): Uint8Array =>
  encoder.encode(records.map((record) => line(JSON.stringify(toFields(record)))).join(""))

// A file of records as the store knows it: the sequences it holds (every version in it, wanted or not) and how many
// of them are wanted (their newest version, not removed). A file of 0.2/0.3 holds one record and counts as file 0:
// older than every records file.
interface Held {
  readonly name: string
  readonly counter: number
  readonly sequences: ReadonlyArray<number>
  wanted: number
}

/** The store in `directory`, locked for the scope. */
export const make = (
  directory: string
): Effect.Effect<
  { readonly open: (owner: Owner) => Effect.Effect<Records, OutboxError, Scope.Scope> },
  OutboxError,
  FileSystem.FileSystem | Path.Path | Scope.Scope
> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(directory)
    yield* fs.makeDirectory(root, { recursive: true }).pipe(
      Effect.mapError((cause) =>
        new OutboxError({ reason: "Unwritable", path: root, operation: "cannot create the directory", cause })
      )
    )
    const lock = yield* DirectoryLock.acquire(root, path.join(root, "outbox.lock"))

    // Writes a whole file durably: a temporary file, synced, then renamed into place.
    const writeTemporary = (file: string, bytes: Uint8Array) =>
      Effect.scoped(
        Effect.gen(function*() {
          const handle = yield* fs.open(file, { flag: "w" })
          yield* handle.writeAll(bytes)
          yield* handle.sync
        })
      )

    const open = (owner: Owner) =>
      Effect.gen(function*() {
        const dir = path.join(root, ownerDirectory(owner))
        yield* holdOwner(lock.owners, owner, dir)

        const unreadable = (operation: string, at = dir) => (cause: unknown) =>
          new OutboxError({ reason: "Unreadable", path: at, operation, cause })
        const unwritable = (operation: string, at: string) => (cause: unknown) =>
          new OutboxError({ reason: "Unwritable", path: at, operation, cause })

        yield* fs.makeDirectory(path.join(dir, "damaged"), { recursive: true }).pipe(
          Effect.mapError(unwritable("cannot create the directory", dir))
        )
        // The directory, held open to sync it after renames. Windows cannot open a directory (EISDIR), and
        // needs no sync of it: its renames are journaled.
        const directoryHandle = yield* fs.open(dir, { flag: "r" }).pipe(
          Effect.map(Option.some),
          Effect.catchIf(
            (error) => error._tag === "SystemError" && error.reason === "BadResource",
            () => Effect.succeed(Option.none())
          ),
          Effect.mapError(unreadable("cannot open the directory"))
        )
        const syncDirectory = Option.match(directoryHandle, {
          onNone: () => Effect.void,
          onSome: (handle) => handle.sync.pipe(Effect.mapError(unwritable("cannot sync the directory", dir)))
        })
        const fileIn = (name: string) => path.join(dir, name)
        const temporaryOf = (name: string) => path.join(dir, `.${name}.tmp`)
        // A whole file in place, durably; on failure, nothing of it is left (best effort).
        const replace = (name: string, bytes: Uint8Array) =>
          writeTemporary(temporaryOf(name), bytes).pipe(
            Effect.zipRight(fs.rename(temporaryOf(name), fileIn(name))),
            Effect.zipRight(syncDirectory),
            Effect.tapError(() => Effect.ignore(fs.remove(temporaryOf(name))))
          )

        const ownerFile = fileIn("owner.json")
        const recorded = yield* fs.readFileString(ownerFile).pipe(
          Effect.map(Option.some),
          Effect.catchIf(isNotFound, () => Effect.succeed(Option.none<string>())),
          Effect.mapError(unreadable("cannot read owner.json", ownerFile))
        )
        if (Option.isNone(recorded)) {
          yield* replace("owner.json", encode(owner)).pipe(
            Effect.mapError(unwritable("cannot write owner.json", ownerFile))
          )
        } else {
          const found = Schema.decodeUnknownOption(OwnerFile)(recorded.value)
          if (Option.isNone(found) || found.value.node !== owner.node || found.value.master !== owner.master) {
            return yield* new OutboxError({
              reason: "Unreadable",
              path: ownerFile,
              operation: `the directory is not the outbox of node ${owner.node} for master ${owner.master}`
            })
          }
        }

        const names = yield* fs.readDirectory(dir).pipe(Effect.mapError(unreadable("cannot list the records")))
        // A temporary file is a write that never returned: nobody was told it is stored.
        const leftovers = names.filter((name) => temporary.test(name)).map(fileIn)
        yield* Effect.forEach(
          leftovers,
          (file) => fs.remove(file).pipe(Effect.mapError(unwritable("cannot remove a temporary file", file))),
          { discard: true }
        )

        let setAside = 0
        const asideOf = (name: string) => Effect.map(Clock.currentTimeMillis, (now) => fileIn(`damaged/${name}.${now}`))

        // A record of 0.2/0.3, alone in its file: a damaged one is moved aside.
        const readLegacy = (name: string, sequence: number) =>
          Effect.gen(function*() {
            const file = fileIn(name)
            const text = yield* fs.readFileString(file).pipe(Effect.mapError(unreadable("cannot read a record", file)))
            const decoded = decodeRecord(text)
            const why = Either.isLeft(decoded)
              ? text.length === 0
                ? "empty"
                : ParseResult.TreeFormatter.formatErrorSync(decoded.left).split("\n")[0] ?? "unparsable"
              : decoded.right.sequence !== sequence
              ? `it holds sequence ${decoded.right.sequence}`
              : undefined
            if (why === undefined && Either.isRight(decoded)) return Option.some(fromFields(decoded.right))
            const aside = yield* asideOf(name)
            const moved = yield* Effect.either(fs.rename(file, aside))
            setAside += 1
            yield* Either.match(moved, {
              onRight: () =>
                Effect.logError(
                  `outbox record ${file} is damaged (${why}); set aside as ${aside}, the other records are read`
                ),
              onLeft: (error) =>
                Effect.logError(
                  `outbox record ${file} is damaged (${why}) and could not be set aside (${error.message}); skipped`
                )
            })
            return Option.none<StoredRecord>()
          })

        // A records file: its records, in the order written. A damaged line is set aside: the file is copied into
        // damaged/, and rewritten without it.
        const readBatch = (name: string) =>
          Effect.gen(function*() {
            const file = fileIn(name)
            const text = yield* fs.readFileString(file).pipe(Effect.mapError(unreadable("cannot read records", file)))
            const records: Array<StoredRecord> = []
            const kept: Array<string> = []
            const damaged: Array<readonly [number, string]> = []
            text.split("\n").forEach((raw, i) => {
              if (raw.length === 0) return
              const decoded = Either.flatMap(
                checked(raw),
                (json) =>
                  Either.mapLeft(
                    decodeRecord(json),
                    (error) => ParseResult.TreeFormatter.formatErrorSync(error).split("\n")[0] ?? "unparsable"
                  )
              )
              if (Either.isLeft(decoded)) {
                damaged.push([i + 1, decoded.left])
                return
              }
              records.push(fromFields(decoded.right))
              kept.push(`${raw}\n`)
            })
            if (damaged.length === 0) return records
            const aside = yield* asideOf(name)
            const fixed = yield* writeTemporary(aside, encoder.encode(text)).pipe(
              Effect.zipRight(replace(name, encoder.encode(kept.join("")))),
              Effect.either
            )
            setAside += damaged.length
            for (const [at, why] of damaged) {
              yield* Either.match(fixed, {
                onRight: () =>
                  Effect.logError(
                    `outbox record at line ${at} of ${file} is damaged (${why}); set aside in ${aside}, the other ` +
                      "records are read"
                  ),
                onLeft: (error) =>
                  Effect.logError(
                    `outbox record at line ${at} of ${file} is damaged (${why}) and could not be set aside ` +
                      `(${error.message}); skipped`
                  )
              })
            }
            return records
          })

        // Removals: for each sequence, the last file it is removed from (every version in that file or an earlier
        // one is gone). A line whose checksum fails (a power loss cut it) is ignored: its records come back.
        const removedFile = fileIn(removedLog)
        const removedText = yield* fs.readFileString(removedFile).pipe(
          Effect.map(Option.some),
          Effect.catchIf(isNotFound, () => Effect.succeed(Option.none<string>())),
          Effect.mapError(unreadable("cannot read the removal log", removedFile))
        )
        const removed = new Map<number, number>()
        const markRemoved = (sequence: number, upTo: number) => {
          if ((removed.get(sequence) ?? -1) < upTo) removed.set(sequence, upTo)
        }
        for (const raw of Option.getOrElse(removedText, () => "").split("\n")) {
          const text = checked(raw)
          if (Either.isLeft(text)) continue
          for (const pair of text.right.split(" ")) {
            const [sequence, upTo] = pair.split(":").map(Number)
            if (Number.isSafeInteger(sequence) && Number.isSafeInteger(upTo)) markRemoved(sequence!, upTo!)
          }
        }

        const legacy = names.flatMap((name) => {
          const match = legacyName.exec(name)
          return match === null ? [] : [{ name, sequence: Number(match[1]) }]
        }).sort((a, b) => a.sequence - b.sequence)
        const batches = names.flatMap((name) => {
          const match = batchName.exec(name)
          return match === null ? [] : [{ name, counter: Number(match[1]) }]
        }).sort((a, b) => a.counter - b.counter)
        const read: Array<{ readonly name: string; readonly counter: number; readonly records: Array<StoredRecord> }> =
          [
            ...(yield* Effect.forEach(legacy, ({ name, sequence }) =>
              Effect.map(readLegacy(name, sequence), (record) => ({
                name,
                counter: 0,
                records: Option.toArray(record)
              })), { concurrency: 16 })),
            ...(yield* Effect.forEach(
              batches,
              ({ counter, name }) => Effect.map(readBatch(name), (records) => ({ name, counter, records })),
              { concurrency: 16 }
            ))
          ]

        // The files and the sequences they hold; for each sequence, the newest version wanted and where it is.
        const files = new Map<string, Held>()
        const holding = new Map<number, Array<Held>>()
        const newest = new Map<number, { readonly record: StoredRecord; readonly file: Held }>()
        // Files are numbered past every one named, in the directory or in the log: a later file is newer.
        let counter = 0
        for (const { counter: n } of batches) counter = Math.max(counter, n)
        for (const n of removed.values()) counter = Math.max(counter, n)
        for (const { counter, name, records } of read) {
          const file: Held = { name, counter, sequences: records.map((r) => r.sequence), wanted: 0 }
          files.set(name, file)
          for (const record of records) {
            const holders = holding.get(record.sequence)
            if (holders === undefined) holding.set(record.sequence, [file])
            else if (!holders.includes(file)) holders.push(file)
            if ((removed.get(record.sequence) ?? -1) >= counter) continue
            newest.set(record.sequence, { record, file })
          }
        }
        for (const { file } of newest.values()) file.wanted += 1
        const initial = Array.from(newest.values(), ({ record }) => record).sort((a, b) => a.sequence - b.sequence)
        const where = new Map(Array.from(newest, ([sequence, { file }]) => [sequence, file]))

        // Deletes a file none of whose records is wanted. When it cannot be deleted it stays known: its sequences
        // are still named in the removal log when removed.
        const drop = (file: Held) =>
          fs.remove(fileIn(file.name)).pipe(
            Effect.catchIf(isNotFound, () => Effect.void),
            Effect.mapError(unwritable(`cannot remove ${file.name}`, fileIn(file.name))),
            Effect.tap(() =>
              Effect.sync(() => {
                files.delete(file.name)
                for (const sequence of file.sequences) {
                  const holders = holding.get(sequence)
                  const left = holders?.filter((f) => f !== file) ?? []
                  if (left.length === 0) holding.delete(sequence)
                  else holding.set(sequence, left)
                }
              })
            )
          )

        // Rewrites the removal log with only the lines that still remove a version some file holds; deletes it when
        // none does.
        let logged = Option.isSome(removedText) ? removedText.value.length : 0
        const compact = Effect.suspend(() => {
          const pairs: Array<string> = []
          for (const [sequence, upTo] of removed) {
            if (holding.get(sequence)?.some((file) => file.counter <= upTo)) pairs.push(`${sequence}:${upTo}`)
            else removed.delete(sequence)
          }
          const text = pairs.length === 0 ? "" : line(pairs.join(" "))
          logged = text.length
          return (text.length === 0
            ? fs.remove(removedFile).pipe(Effect.catchIf(isNotFound, () => Effect.void))
            : replace(removedLog, encoder.encode(text))).pipe(
              Effect.mapError(unwritable("cannot rewrite the removal log", removedFile))
            )
        })

        // At the start: the files no record wants go, and the log keeps only what counts.
        yield* Effect.forEach(Array.from(files.values()).filter((file) => file.wanted === 0), drop, { discard: true })
        if (Option.isSome(removedText)) yield* compact

        const guard = yield* Effect.makeSemaphore(1)
        const compactAbove = 1024 * 1024

        // Marks the records of a file written: each one's newest version is there now.
        const wrote = (name: string, records: ReadonlyArray<StoredRecord>) => {
          const file: Held = {
            name,
            counter: Number(batchName.exec(name)![1]),
            sequences: records.map((r) => r.sequence),
            wanted: records.length
          }
          files.set(name, file)
          const replaced: Array<Held> = []
          for (const record of records) {
            const holders = holding.get(record.sequence)
            if (holders === undefined) holding.set(record.sequence, [file])
            else holders.push(file)
            const before = where.get(record.sequence)
            where.set(record.sequence, file)
            if (before !== undefined && --before.wanted === 0) replaced.push(before)
          }
          return replaced
        }

        const write = (records: ReadonlyArray<StoredRecord>, what: string) =>
          Effect.suspend(() => {
            const name = batchFile(++counter)
            return replace(name, encodeRecords(records)).pipe(
              Effect.mapError(unwritable(what, fileIn(name))),
              // Not stored: what was renamed into place is taken back (best effort: a leftover is a duplicate, not
              // a loss).
              Effect.tapError(() => Effect.ignore(fs.remove(fileIn(name)))),
              Effect.map(() => wrote(name, records))
            )
          })

        const append = (records: ReadonlyArray<StoredRecord>) =>
          records.length === 0 ? Effect.void : write(
            records,
            `cannot write records ${records[0]!.sequence} to ${records.at(-1)!.sequence}`
          ).pipe(
            // A sequence written again after a failed write whose file could not be taken back: the old file goes
            // when nothing in it is wanted.
            Effect.flatMap((replaced) => Effect.forEach(replaced, (file) => Effect.ignore(drop(file)))),
            Effect.asVoid
          )

        // In a file of its own: the old version is read no more, and its file goes once nothing in it is wanted.
        const update = (record: StoredRecord) =>
          write([record], `cannot rewrite record ${record.sequence}`).pipe(
            Effect.flatMap((replaced) => Effect.forEach(replaced, (file) => Effect.ignore(drop(file)))),
            Effect.asVoid
          )

        const remove = (sequences: ReadonlyArray<number>) =>
          Effect.suspend(() => {
            const emptied: Array<Held> = []
            const forgotten: Array<number> = []
            for (const sequence of sequences) {
              const file = where.get(sequence)
              if (file === undefined) continue
              where.delete(sequence)
              forgotten.push(sequence)
              if (--file.wanted === 0) emptied.push(file)
            }
            // A version left in a file that stays is named in the log, before any file goes. A file that goes and
            // cannot be deleted may bring its records back after a restart: delivered again, ignored by the master.
            const pairs: Array<string> = []
            for (const sequence of forgotten) {
              let upTo = -1
              for (const file of holding.get(sequence) ?? []) {
                if (!emptied.includes(file) && file.counter > upTo) upTo = file.counter
              }
              if (upTo < 0) continue
              markRemoved(sequence, upTo)
              pairs.push(`${sequence}:${upTo}`)
            }
            const log = pairs.length === 0 ? Effect.void : guard.withPermits(1)(
              Effect.suspend(() => {
                const text = line(pairs.join(" "))
                logged += text.length
                return fs.writeFile(removedFile, encoder.encode(text), { flag: "a" }).pipe(
                  Effect.mapError(unwritable("cannot append to the removal log", removedFile)),
                  Effect.zipRight(logged > compactAbove ? compact : Effect.void)
                )
              })
            )
            return Effect.zipRight(log, Effect.forEach(emptied, drop, { discard: true }))
          })

        return { location: dir, initial, setAside, append, update, remove } satisfies Records
      })

    return { open }
  })
