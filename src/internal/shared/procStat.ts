/**
 * Linux: what `/proc/<pid>/stat` says of a process, and which boot this is,
 * read through `@effect/platform`'s `FileSystem`. The outbox lock uses them to
 * tell a live holder from a pid reused, and the process groups of tasks to
 * tell their leader from another process that got its pid.
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** A process as `/proc/<pid>/stat` has it. */
export interface ProcStat {
  /** Field 3: R, S, D, Z (a zombie: dead, not yet reaped), X (dead), ... */
  readonly state: string
  /** Field 5: the process group it belongs to. */
  readonly group: number
  /** Field 22: when it started, in clock ticks since boot; with the pid, it names one process. */
  readonly start: string
}

/** Is a process in this state dead (a zombie waiting for its parent, or gone)? */
export const isDead = (stat: ProcStat): boolean => stat.state === "Z" || stat.state === "X"

/** The process's stat, or none when it is not there (gone, no /proc, not Linux). */
export const procStat = (fs: FileSystem.FileSystem, pid: number | "self"): Effect.Effect<Option.Option<ProcStat>> =>
  fs.readFileString(`/proc/${pid}/stat`).pipe(
    // The command name may hold spaces and parentheses: count the fields after its closing one.
    Effect.map((stat) => stat.slice(stat.lastIndexOf(")") + 2).split(" ")),
    Effect.map((fields) =>
      fields[0] !== undefined && fields[2] !== undefined && fields[19] !== undefined
        ? Option.some({ state: fields[0], group: Number(fields[2]), start: fields[19] })
        : Option.none()
    ),
    Effect.orElseSucceed(() => Option.none<ProcStat>())
  )

/** This boot's id (/proc/sys/kernel/random/boot_id): a pid and a start time name a process within one boot only. */
export const bootId = (fs: FileSystem.FileSystem): Effect.Effect<Option.Option<string>> =>
  fs.readFileString("/proc/sys/kernel/random/boot_id").pipe(
    Effect.map((id) => Option.some(id.trim())),
    Effect.orElseSucceed(() => Option.none<string>())
  )
