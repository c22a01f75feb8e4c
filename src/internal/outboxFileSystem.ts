/**
 * The outbox store on the file system, through `@effect/platform`'s
 * `FileSystem`:
 *
 * ```
 * <directory>/outbox.lock                      the process that uses the directory
 * <directory>/<node>@<master>-<hash>/          one owner's records
 *   owner.json                                 the owner, exactly
 *   0000000000000042.json                      one record, named by its sequence
 *   damaged/0000000000000041.json.<time>       a record that could not be read, set aside
 * ```
 *
 * A record is written to a temporary file, synced, renamed into place, and
 * the directory synced: it is there whole or not at all, and durable once
 * `append` returns. Records written together share the directory sync. A
 * record rewritten (`update`) is renamed over the old one the same way.
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
import * as DirectoryLock from "./directoryLock.js"
import { fromFields, OutboxError, RecordFields, toFields } from "./outboxStore.js"
import type { Owner, Records, StoredRecord } from "./outboxStore.js"

const recordName = /^(\d{16})\.json$/
const temporary = /^\..*\.tmp$/

const nameOf = (sequence: number) => `${String(sequence).padStart(16, "0")}.json`

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
        const id = JSON.stringify([owner.node, owner.master])
        if (lock.owners.has(id)) {
          return yield* new OutboxError({
            reason: "Locked",
            path: dir,
            operation: `the outbox of node ${owner.node} for master ${owner.master} is open already`
          })
        }
        yield* Effect.acquireRelease(
          Effect.sync(() => lock.owners.add(id)),
          () => Effect.sync(() => lock.owners.delete(id))
        )

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

        const ownerFile = path.join(dir, "owner.json")
        const recorded = yield* fs.readFileString(ownerFile).pipe(
          Effect.map(Option.some),
          Effect.catchIf(isNotFound, () => Effect.succeed(Option.none<string>())),
          Effect.mapError(unreadable("cannot read owner.json", ownerFile))
        )
        if (Option.isNone(recorded)) {
          const temp = path.join(dir, ".owner.json.tmp")
          yield* writeTemporary(temp, encode(owner)).pipe(
            Effect.zipRight(fs.rename(temp, ownerFile)),
            Effect.zipRight(syncDirectory),
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
        // A temporary file is an add that never returned: nobody was told it is stored.
        const leftovers = names.filter((name) => temporary.test(name)).map((name) => path.join(dir, name))
        yield* Effect.forEach(
          leftovers,
          (file) => fs.remove(file).pipe(Effect.mapError(unwritable("cannot remove a temporary file", file))),
          { discard: true }
        )

        let setAside = 0
        const setAsideRecord = (name: string, why: string) =>
          Effect.gen(function*() {
            const file = path.join(dir, name)
            const aside = path.join(dir, "damaged", `${name}.${yield* Clock.currentTimeMillis}`)
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
          })

        const read = (name: string, sequence: number) =>
          fs.readFileString(path.join(dir, name)).pipe(
            Effect.mapError(unreadable("cannot read a record", path.join(dir, name))),
            Effect.flatMap((text) => {
              const decoded = decodeRecord(text)
              if (Either.isLeft(decoded)) {
                const why = text.length === 0
                  ? "empty"
                  : ParseResult.TreeFormatter.formatErrorSync(decoded.left).split("\n")[0]
                return Effect.as(setAsideRecord(name, why ?? "unparsable"), Option.none<StoredRecord>())
              }
              if (decoded.right.sequence !== sequence) {
                return Effect.as(
                  setAsideRecord(name, `it holds sequence ${decoded.right.sequence}`),
                  Option.none<StoredRecord>()
                )
              }
              return Effect.succeed(Option.some(fromFields(decoded.right)))
            })
          )

        const found = names.flatMap((name) => {
          const match = recordName.exec(name)
          return match === null ? [] : [{ name, sequence: Number(match[1]) }]
        }).sort((a, b) => a.sequence - b.sequence)
        const initial = (yield* Effect.forEach(found, ({ name, sequence }) =>
          read(name, sequence), { concurrency: 16 }))
          .flatMap(Option.toArray)

        const fileOf = (sequence: number) => path.join(dir, nameOf(sequence))
        const temporaryOf = (sequence: number) => path.join(dir, `.${nameOf(sequence)}.tmp`)

        const append = (records: ReadonlyArray<StoredRecord>) =>
          Effect.gen(function*() {
            yield* Effect.forEach(
              records,
              (record) =>
                writeTemporary(temporaryOf(record.sequence), encode(toFields(record))).pipe(
                  Effect.mapError(unwritable(`cannot write record ${record.sequence}`, fileOf(record.sequence)))
                ),
              { concurrency: 8, discard: true }
            )
            // Side by side too: the directory sync after them makes every one durable, whatever their order.
            yield* Effect.forEach(
              records,
              (record) =>
                fs.rename(temporaryOf(record.sequence), fileOf(record.sequence)).pipe(
                  Effect.mapError(
                    unwritable(`cannot rename record ${record.sequence} into place`, fileOf(record.sequence))
                  )
                ),
              { concurrency: 8, discard: true }
            )
            yield* syncDirectory
          }).pipe(
            // None of them is stored: what was written is taken back (best effort: a leftover is a duplicate, not a loss).
            Effect.tapError(() =>
              Effect.forEach(records, (record) =>
                Effect.ignore(fs.remove(temporaryOf(record.sequence))).pipe(
                  Effect.zipRight(Effect.ignore(fs.remove(fileOf(record.sequence))))
                ), { concurrency: 8, discard: true })
            )
          )

        // The same steps as an add: a kill between any two leaves the old record whole or the new one in place.
        const update = (record: StoredRecord) =>
          writeTemporary(temporaryOf(record.sequence), encode(toFields(record))).pipe(
            Effect.zipRight(fs.rename(temporaryOf(record.sequence), fileOf(record.sequence))),
            Effect.zipRight(syncDirectory),
            Effect.mapError(unwritable(`cannot rewrite record ${record.sequence}`, fileOf(record.sequence))),
            // The old record stays; only what was written beside it is taken back.
            Effect.tapError(() => Effect.ignore(fs.remove(temporaryOf(record.sequence))))
          )

        const remove = (sequences: ReadonlyArray<number>) =>
          Effect.forEach(sequences, (sequence) =>
            fs.remove(fileOf(sequence)).pipe(
              Effect.catchIf(isNotFound, () => Effect.void),
              Effect.mapError(unwritable(`cannot remove record ${sequence}`, fileOf(sequence)))
            ), { concurrency: 8, discard: true })

        return { location: dir, initial, setAside, append, update, remove } satisfies Records
      })

    return { open }
  })
