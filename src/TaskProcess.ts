/**
 * The processes a task starts, and what is done with them when the worker
 * dies first.
 *
 * A task that starts operating-system processes records each one's process
 * group with its start record (the outbox's RUNNING record), durably, before
 * the process runs: `start` starts a command as the leader of a group of its
 * own and holds it until the group is recorded; `record` records a group the
 * task started itself. When the task's scope closes, what is left of a group
 * `start` made is ended. After a crash, the task handler ends the groups an
 * unfinished task recorded that still run (their leader has the same pid and
 * the same start time), SIGTERM then SIGKILL, before it reports the task
 * `ERROR`; the report says what it found.
 *
 * The operating system's side is a port, `ProcessGroups`;
 * `effect-grpc-resilience/node` has Node's (`NodeTaskProcess.layer`), with
 * start times on Linux.
 *
 * @since 0.3.0
 */
import type * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as PlatformError from "@effect/platform/Error"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import type * as Outbox from "./Outbox.js"
import { type OutboxError, ProcessGroup } from "./OutboxStore.js"

export {
  /**
   * A process group a task started: `pgid`, the pid of its leader (the
   * process that made it), and where the platform tells them (Linux) `start`,
   * the leader's start time (`/proc/<pid>/stat` field 22), and `boot`, the
   * boot it ran in: they tell the leader from a later process given the same pid.
   *
   * @since 0.3.0
   * @category models
   */
  ProcessGroup
}

/**
 * One process of a group, as the operating system has it now.
 *
 * @since 0.3.0
 * @category models
 */
export interface Member {
  readonly pid: number
  /** Its start time, where the platform tells it. */
  readonly start?: string | undefined
}

/**
 * The operating system's process groups: the port the task handler and
 * `start` use, implemented for Node by `NodeTaskProcess.layer`
 * (`effect-grpc-resilience/node`).
 *
 * @since 0.3.0
 * @category tags
 */
export class ProcessGroups extends Context.Tag("effect-grpc-resilience/ProcessGroups")<ProcessGroups, {
  /**
   * Starts the command as the leader of a new process group, held before it
   * runs: `beforeRun` gets the group, and the command runs once it succeeds.
   * When `beforeRun` fails, or this process dies first, the command never
   * runs. The process's pid is the group's id.
   */
  readonly start: <E, R>(
    command: Command.Command,
    beforeRun: (group: ProcessGroup) => Effect.Effect<void, E, R>
  ) => Effect.Effect<CommandExecutor.Process, E | PlatformError.PlatformError, R | Scope.Scope>
  /** A running process's group and start time, as far as the platform tells them; none when it is not running. */
  readonly inspect: (pid: number) => Effect.Effect<
    Option.Option<{ readonly group?: number | undefined; readonly start?: string | undefined }>
  >
  /** This boot's id, where the platform tells it: a group recorded in another boot ended with it. */
  readonly boot: Effect.Effect<Option.Option<string>>
  /** The group's live processes now (the dead waiting for their parent left out); empty when it has none. */
  readonly members: (pgid: number) => Effect.Effect<ReadonlyArray<Member>>
  /** Sends the signal to every process of the group; false when there was none to send it to. */
  readonly signal: (pgid: number, signal: "SIGTERM" | "SIGKILL") => Effect.Effect<boolean>
}>() {}

/**
 * The task running in this fiber, as its `run` sees it: the task handler
 * provides it to `run`. `record` writes the task's process groups with its
 * start record.
 *
 * @since 0.3.0
 * @category tags
 */
export class RunningTask extends Context.Tag("effect-grpc-resilience/RunningTask")<RunningTask, {
  readonly id: string
  /** Records a process group the task started with its start record; returns once it is durable. */
  readonly record: (group: ProcessGroup) => Effect.Effect<void, OutboxError>
  /** Forgets a group that has ended: left out of the next record written, not written for it alone. */
  readonly forget: (group: ProcessGroup) => Effect.Effect<void>
}>() {}

/**
 * The `RunningTask` of a started task, recording in its outbox.
 *
 * @since 0.3.0
 * @category constructors
 */
export const running = (outbox: Outbox.Outbox, taskId: string): Context.Tag.Service<RunningTask> => {
  // The groups it may still run: each record written holds them all, in place of the one before.
  const live = new Map<number, ProcessGroup>()
  return RunningTask.of({
    id: taskId,
    record: (group) =>
      Effect.suspend(() => {
        live.set(group.pgid, group)
        return outbox.recordProcesses(taskId, Array.from(live.values()))
      }).pipe(Effect.tapError(() => Effect.sync(() => live.delete(group.pgid)))),
    forget: (group) => Effect.sync(() => void live.delete(group.pgid))
  })
}

/**
 * A process that cannot be recorded as a task's: it does not run
 * (`NotRunning`), or it runs in another process's group (`NotLeader`: start
 * it detached, in a group of its own).
 *
 * @since 0.3.0
 * @category errors
 */
export class ProcessGroupError extends Data.TaggedError("ProcessGroupError")<{
  readonly reason: "NotRunning" | "NotLeader"
  readonly pid: number
}> {
  override get message() {
    return this.reason === "NotRunning"
      ? `process ${this.pid} is not running`
      : `process ${this.pid} does not lead a process group of its own: start it detached`
  }
}

/**
 * Is this a `ProcessGroupError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isProcessGroupError = (u: unknown): u is ProcessGroupError => Predicate.isTagged(u, "ProcessGroupError")

/**
 * What ending a group came to.
 *
 * - `Ended`: it ran and it ended, on `SIGTERM` within the grace or on `SIGKILL` (`signal` says which).
 * - `Gone`: none of its processes ran (or it was recorded in another boot).
 * - `Reused`: its pid belongs to another process now (another start time): left alone.
 * - `Leaderless`: its leader is gone and others of the group run: left alone, as they cannot be told from
 *   a later group given the same id.
 * - `Unchecked`: no start time was recorded (a platform without one), or no `ProcessGroups` in context: left alone.
 * - `Survived`: some of it still ran after `SIGKILL` (a process in uninterruptible sleep, another user's).
 *
 * @since 0.3.0
 * @category models
 */
export interface Outcome {
  readonly group: ProcessGroup
  readonly result: "Ended" | "Gone" | "Reused" | "Leaderless" | "Unchecked" | "Survived"
  readonly signal?: "SIGTERM" | "SIGKILL" | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface EndOptions {
  /** How long the group has between `SIGTERM` and `SIGKILL`. Default 2 s. */
  readonly grace?: Duration.DurationInput | undefined
  /**
   * Whose group it is known to be. `"leader"` (the default, after a restart):
   * only a group whose leader runs with the recorded start time is signalled.
   * `"group"`: the group is this process's own, started and not yet out of
   * sight (the end of a task's scope), so it is ended even when its leader is gone.
   */
  readonly trust?: "leader" | "group" | undefined
}

/**
 * The defaults of {@link EndOptions}, and how long `SIGKILL` is given and how often a group is looked at.
 *
 * @since 0.3.0
 * @category constants
 */
export const defaults = {
  grace: Duration.seconds(2),
  killWait: Duration.seconds(1),
  poll: Duration.millis(50)
} as const

/**
 * Ends a process group: `SIGTERM` to every process of it, up to `grace` for
 * them to end, then `SIGKILL`. A group whose leader is not the recorded one
 * is left alone (see {@link EndOptions}).
 *
 * @since 0.3.0
 * @category ending
 */
export const end = (group: ProcessGroup, options: EndOptions = {}): Effect.Effect<Outcome, never, ProcessGroups> =>
  Effect.gen(function*() {
    const os = yield* ProcessGroups
    if (group.boot !== undefined && Option.exists(yield* os.boot, (boot) => boot !== group.boot)) {
      return { group, result: "Gone" } as const
    }
    const members = yield* os.members(group.pgid)
    if (members.length === 0) return { group, result: "Gone" } as const
    if (options.trust !== "group") {
      if (group.start === undefined) return { group, result: "Unchecked" } as const
      const leader = members.find((member) => member.pid === group.pgid)
      if (leader === undefined) return { group, result: "Leaderless" } as const
      if (leader.start !== group.start) return { group, result: "Reused" } as const
    }
    const goneWithin = (within: Duration.DurationInput) =>
      Effect.gen(function*() {
        while ((yield* os.members(group.pgid)).length > 0) yield* Effect.sleep(defaults.poll)
      }).pipe(Effect.timeoutOption(within), Effect.map(Option.isSome))
    yield* os.signal(group.pgid, "SIGTERM")
    if (yield* goneWithin(options.grace ?? defaults.grace)) {
      return { group, result: "Ended", signal: "SIGTERM" } as const
    }
    yield* os.signal(group.pgid, "SIGKILL")
    if (yield* goneWithin(defaults.killWait)) return { group, result: "Ended", signal: "SIGKILL" } as const
    return { group, result: "Survived" } as const
  })

const named = (outcomes: ReadonlyArray<Outcome>) =>
  `${outcomes.length === 1 ? "group" : "groups"} ${outcomes.map((o) => o.group.pgid).join(", ")}`

/**
 * What a task's recorded groups came to, in words for its report: "its
 * processes (group 4242) were ended", or "nothing it started was left
 * running" when every group was gone or its pid reused.
 *
 * @since 0.3.0
 * @category ending
 */
export const describe = (outcomes: ReadonlyArray<Outcome>): string => {
  const of = (result: Outcome["result"]) => outcomes.filter((o) => o.result === result)
  const parts: Array<string> = []
  const say = (result: Outcome["result"], what: string) => {
    const these = of(result)
    if (these.length > 0) parts.push(`its processes (${named(these)}) ${what}`)
  }
  say("Ended", "were ended")
  say("Survived", "were sent SIGKILL and still ran")
  say(
    "Leaderless",
    "were left alone: the first process of the group is gone, the others cannot be told from a later group"
  )
  say("Unchecked", "were not checked: the platform gave no start time, or the task handler has no ProcessGroups")
  return parts.length === 0 ? "nothing it started was left running" : parts.join("; ")
}

/**
 * After a restart: ends the groups an unfinished task recorded that still
 * run (same leader, same start time), all at once, and says what it found
 * (see {@link describe}); none when the task recorded no group. Without
 * `ProcessGroups` in context the groups are left alone, and the words say so.
 *
 * @since 0.3.0
 * @category ending
 */
export const endLeftBehind = (groups: ReadonlyArray<ProcessGroup>): Effect.Effect<Option.Option<string>> =>
  groups.length === 0 ? Effect.succeedNone : Effect.gen(function*() {
    const os = yield* Effect.serviceOption(ProcessGroups)
    const outcomes = Option.isNone(os)
      ? groups.map((group): Outcome => ({ group, result: "Unchecked" }))
      : yield* Effect.forEach(groups, (group) => end(group), { concurrency: "unbounded" }).pipe(
        Effect.provideService(ProcessGroups, os.value)
      )
    for (const outcome of outcomes) {
      const line = `process group ${outcome.group.pgid} (start ${outcome.group.start ?? "unknown"}): ${outcome.result}${
        outcome.signal === undefined ? "" : ` on ${outcome.signal}`
      }`
      // Nothing of it ran: said, not warned about.
      yield* (outcome.result === "Gone" || outcome.result === "Reused" ? Effect.logInfo(line) : Effect.logWarning(line))
    }
    return Option.some(describe(outcomes))
  })

/**
 * Starts the command for the running task, as the leader of a process group
 * of its own, recorded with the task's start record before the command runs:
 * a worker killed at any instant leaves it either not run, or recorded. When
 * the scope closes, what is left of the group is ended (`SIGTERM`, `grace`,
 * `SIGKILL`), whether the command is still running or left children behind.
 *
 * Unlike `Command.start`, a command that cannot be run (not found, not
 * executable) does not fail here: it exits 127 or 126, as in a shell.
 *
 * @since 0.3.0
 * @category constructors
 */
export const start = (
  command: Command.Command,
  options: { readonly grace?: Duration.DurationInput | undefined } = {}
): Effect.Effect<
  CommandExecutor.Process,
  PlatformError.PlatformError | OutboxError,
  RunningTask | ProcessGroups | Scope.Scope
> =>
  Effect.gen(function*() {
    const task = yield* RunningTask
    const os = yield* ProcessGroups
    let started: ProcessGroup | undefined
    const process = yield* os.start(command, (group) => {
      started = group
      return task.record(group)
    })
    const group = started ?? { pgid: process.pid }
    // Added after the process's own release, so it runs first: the group ends gracefully before it is reaped.
    yield* Effect.addFinalizer(() =>
      end(group, { grace: options.grace, trust: "group" }).pipe(
        Effect.tap((outcome) =>
          outcome.signal === undefined
            ? Effect.void
            : Effect.logInfo(`task ${task.id}: process group ${group.pgid} ended on ${outcome.signal}`)
        ),
        Effect.zipRight(task.forget(group)),
        Effect.provideService(ProcessGroups, os)
      )
    )
    return process
  })

/**
 * Records a process group the running task started itself (the pid of its
 * leader: a process started detached). It is recorded once this returns; a
 * worker killed between the start and the record leaves it unrecorded, which
 * `start` does not. Ending it is the task's: after a restart it is ended as
 * those of `start` are.
 *
 * @since 0.3.0
 * @category constructors
 */
export const record = (
  pid: number
): Effect.Effect<ProcessGroup, ProcessGroupError | OutboxError, RunningTask | ProcessGroups> =>
  Effect.gen(function*() {
    const task = yield* RunningTask
    const os = yield* ProcessGroups
    const found = yield* os.inspect(pid)
    if (Option.isNone(found)) return yield* new ProcessGroupError({ reason: "NotRunning", pid })
    if (pid <= 1 || (found.value.group !== undefined && found.value.group !== pid)) {
      return yield* new ProcessGroupError({ reason: "NotLeader", pid })
    }
    const boot = yield* os.boot
    const group: ProcessGroup = {
      pgid: pid,
      ...(found.value.start === undefined ? {} : { start: found.value.start }),
      ...(Option.isNone(boot) ? {} : { boot: boot.value })
    }
    yield* task.record(group)
    return group
  })
