/**
 * A lock on a directory, held by one process: a lock file created
 * exclusively, naming the process (its pid, and on Linux its start time and
 * the boot it runs in). Another process finds it and fails; the lock of a
 * process that is gone (killed with SIGKILL, or from before a reboot) is
 * stale and taken over, also when the new process got the old one's pid, as
 * a restarted container does. Within one process the lock is shared, counted
 * by users, and removed when the last one closes.
 *
 * @internal
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as GlobalValue from "effect/GlobalValue"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { OutboxError } from "../../OutboxStore.js"
import { bootId, isDead, procStat } from "../shared/procStat.js"
import { isSignalable, processId } from "../shared/runtime.js"

/** A lock this process holds, and what its users keep beside it. */
export interface Held {
  readonly file: string
  /** The owners open in this directory, in this process. */
  readonly owners: Set<string>
}

interface Entry extends Held {
  users: number
  readonly ready: Deferred.Deferred<void, OutboxError>
}

/** Who holds a lock, as its file says. */
interface Holder {
  readonly pid: number
  /** Linux: the process's start time in clock ticks since boot (/proc/<pid>/stat, field 22). */
  readonly start?: string | undefined
  /** Linux: the boot it ran in (/proc/sys/kernel/random/boot_id). */
  readonly boot?: string | undefined
}

// The locks of this process by file, shared by every copy of the module loaded.
const held = GlobalValue.globalValue(Symbol.for("effect-grpc-resilience/DirectoryLock"), () => new Map<string, Entry>())

const parse = (text: string): Holder | undefined => {
  try {
    const json = JSON.parse(text) as Partial<Record<keyof Holder, unknown>>
    if (typeof json.pid !== "number" || !Number.isInteger(json.pid) || json.pid <= 0) return undefined
    return {
      pid: json.pid,
      start: typeof json.start === "string" ? json.start : undefined,
      boot: typeof json.boot === "string" ? json.boot : undefined
    }
  } catch {
    return undefined
  }
}

// Is the process the lock names still running? Not when it was from another boot, cannot be signalled,
// is dead and not yet reaped (a zombie), or its pid now belongs to a process that started at another time.
const running = (fs: FileSystem.FileSystem, holder: Holder, me: Holder) =>
  Effect.gen(function*() {
    if (holder.boot !== undefined && me.boot !== undefined && holder.boot !== me.boot) return false
    if (!isSignalable(holder.pid)) return false
    const stat = yield* procStat(fs, holder.pid)
    if (Option.isNone(stat)) return true
    if (isDead(stat.value)) return false
    return holder.start === undefined || stat.value.start === holder.start
  })

const take = (fs: FileSystem.FileSystem, directory: string, file: string) =>
  Effect.gen(function*() {
    const pid = processId()
    const [stat, boot] = yield* Effect.all([procStat(fs, "self"), bootId(fs)])
    const me: Holder = {
      pid,
      start: Option.getOrUndefined(Option.map(stat, (s) => s.start)),
      boot: Option.getOrUndefined(boot)
    }
    const unwritable = (cause: unknown) =>
      new OutboxError({ reason: "Unwritable", path: file, operation: "cannot create the lock file", cause })
    for (let attempt = 1; attempt <= 3; attempt++) {
      const created = yield* Effect.scoped(
        Effect.gen(function*() {
          const handle = yield* fs.open(file, { flag: "wx" })
          yield* handle.writeAll(new TextEncoder().encode(`${JSON.stringify(me)}\n`))
          yield* handle.sync
          return true
        })
      ).pipe(
        Effect.catchIf((error) => error._tag === "SystemError" && error.reason === "AlreadyExists", () =>
          Effect.succeed(false)),
        Effect.mapError(unwritable)
      )
      if (created) {
        return
      }
      const text = yield* fs.readFileString(file).pipe(
        Effect.catchIf(
          (error) =>
            error._tag === "SystemError" && error.reason === "NotFound",
          () => Effect.succeed("")
        ),
        Effect.mapError((cause) =>
          new OutboxError({ reason: "Unreadable", path: file, operation: "cannot read the lock file", cause })
        )
      )
      const holder = parse(text)
      // Our own pid, in a lock this process does not hold: an earlier process had it (a restarted container).
      if (holder !== undefined && holder.pid !== pid && (yield* running(fs, holder, me))) {
        return yield* new OutboxError({
          reason: "Locked",
          path: directory,
          operation: `in use by process ${holder.pid} (lock file ${file}): one process per outbox directory`
        })
      }
      const whose = holder === undefined
        ? "a process that left it unfinished"
        : `process ${holder.pid}, which is not running`
      yield* Effect.logWarning(`outbox ${directory}: taking over the lock of ${whose}`)
      // Two processes taking over one stale lock at once could both remove it; the window is the time between
      // this read and this remove, and both starting on one directory at that moment is the mistake it guards.
      yield* fs.remove(file).pipe(
        Effect.catchIf((error) => error._tag === "SystemError" && error.reason === "NotFound", () => Effect.void),
        Effect.mapError(unwritable)
      )
    }
    return yield* new OutboxError({
      reason: "Locked",
      path: directory,
      operation: "cannot take the lock: it keeps changing"
    })
  })

/**
 * Holds the lock of `directory` (its file `file`) for the scope; fails with
 * `Locked` naming the directory while another process holds it.
 */
export const acquire = (
  directory: string,
  file: string
): Effect.Effect<Held, OutboxError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const release = (entry: Entry) =>
      Effect.suspend(() => {
        entry.users -= 1
        if (entry.users > 0 || held.get(file) !== entry) return Effect.void
        held.delete(file)
        return Effect.ignore(fs.remove(file))
      })
    const entry = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const found = held.get(file)
        if (found !== undefined) {
          found.users += 1
          return { entry: found, first: false }
        }
        // Registered before the first step, so a second user in this process waits for it, never races it.
        const entry: Entry = { file, owners: new Set(), users: 1, ready: Deferred.unsafeMake(FiberId.none) }
        held.set(file, entry)
        return { entry, first: true }
      }),
      ({ entry }) => release(entry)
    )
    if (entry.first) {
      const exit = yield* Effect.exit(take(fs, directory, file))
      Deferred.unsafeDone(entry.entry.ready, exit)
      if (Exit.isFailure(exit)) held.delete(file)
    }
    yield* Deferred.await(entry.entry.ready)
    return entry.entry
  })
