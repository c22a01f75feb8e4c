/**
 * The process groups of tasks on Node (`TaskProcess.ProcessGroups`): a
 * command started with `child_process` as the leader of a new group
 * (`detached`), held by a `/bin/sh` before it runs until its group is
 * recorded, signals sent with `process.kill` to the whole group, and, on
 * Linux, start times and group members read from `/proc`. Elsewhere (macOS)
 * no start time is known, and a group left by a crash is not signalled after
 * the restart. Not for Windows, which has no process groups.
 *
 * @since 0.3.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as NodeStream from "@effect/platform-node/NodeStream"
import type * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import type { Writable } from "node:stream"
import { bootId, isDead, procStat } from "../internal/shared/procStat.js"
import * as TaskProcess from "../TaskProcess.js"

// The holder: reads "run" from fd 3, then runs the command in its place (same pid, same start time, same group).
// This process gone before it wrote "run" (killed, crashed) closes fd 3: the read ends empty and nothing runs.
const hold = "IFS= read -r go <&3 && [ \"$go\" = run ] || exit 125; exec 3<&-; exec \"$@\""

type Signal = "SIGTERM" | "SIGKILL" | 0

// Sends a signal to a group; never to 0 or -1 (this process's group, every process it may signal).
const send = (pgid: number, signal: Signal): "sent" | "none" | "denied" => {
  if (!Number.isInteger(pgid) || pgid <= 1) return "none"
  try {
    process.kill(-pgid, signal)
    return "sent"
  } catch (error) {
    return (error as { code?: unknown }).code === "EPERM" ? "denied" : "none"
  }
}

const failure = (method: string, description: string, cause?: unknown) =>
  new PlatformError.SystemError({
    reason: (cause as { code?: unknown } | undefined)?.code === "ENOENT" ? "NotFound" : "Unknown",
    module: "Command",
    method,
    description,
    ...(cause === undefined ? {} : { cause })
  })

const ProcessProto = {
  [CommandExecutor.ProcessTypeId]: CommandExecutor.ProcessTypeId,
  ...Inspectable.BaseProto,
  toJSON(this: CommandExecutor.Process) {
    return { _id: "@effect/platform/CommandExecutor/Process", pid: this.pid }
  }
}

const stdio = (option: Command.Command.Input | Command.Command.Output) =>
  option === "inherit" ? "inherit" as const : "pipe" as const

/**
 * Node's process groups, reading `/proc` through `fs`.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (fs: FileSystem.FileSystem): Effect.Effect<Context.Tag.Service<TaskProcess.ProcessGroups>> =>
  Effect.gen(function*() {
    const linux = Option.isSome(yield* procStat(fs, "self"))
    const boot = yield* bootId(fs)

    const start = <E, R>(
      command: Command.Command,
      beforeRun: (group: TaskProcess.ProcessGroup) => Effect.Effect<void, E, R>
    ): Effect.Effect<CommandExecutor.Process, E | PlatformError.PlatformError, R | Scope.Scope> =>
      Effect.gen(function*() {
        if (command._tag !== "StandardCommand") {
          return yield* new PlatformError.BadArgument({
            module: "Command",
            method: "start",
            description: "a piped command: run it through a shell (Command.make(\"sh\", \"-c\", ...))"
          })
        }
        if (process.platform === "win32") {
          return yield* new PlatformError.BadArgument({
            module: "Command",
            method: "start",
            description: "process groups are not supported on Windows"
          })
        }
        const argv = command.shell === false
          ? [command.command, ...command.args]
          : [command.shell === true ? "/bin/sh" : command.shell, "-c", [command.command, ...command.args].join(" ")]
        const described = argv.join(" ")
        const exit = yield* Deferred.make<readonly [number | null, NodeJS.Signals | null]>()
        const child = yield* Effect.acquireRelease(
          Effect.async<ChildProcess.ChildProcess, PlatformError.PlatformError>((resume) => {
            let settled = false
            const settle = (effect: Effect.Effect<ChildProcess.ChildProcess, PlatformError.PlatformError>) => {
              if (!settled) resume(effect)
              settled = true
            }
            const handle = ChildProcess.spawn("/bin/sh", ["-c", hold, "effect-grpc-resilience-task", ...argv], {
              stdio: [stdio(command.stdin), stdio(command.stdout), stdio(command.stderr), "pipe"],
              cwd: Option.getOrUndefined(command.cwd),
              env: command.extendEnv ? { ...process.env, ...Object.fromEntries(command.env) } : Object.fromEntries(
                command.env
              ),
              detached: true,
              ...Option.match(command.uid, { onNone: () => ({}), onSome: (uid) => ({ uid }) }),
              ...Option.match(command.gid, { onNone: () => ({}), onSome: (gid) => ({ gid }) })
            })
            handle.on(
              "error",
              (error) => settle(Effect.fail(failure("start", `${described}: ${error.message}`, error)))
            )
            handle.on("exit", (code, signal) => Deferred.unsafeDone(exit, Exit.succeed([code, signal] as const)))
            handle.on("spawn", () => settle(Effect.succeed(handle)))
          }),
          // The last resort: the caller's own finalizer ends the group gracefully first.
          (handle) =>
            Effect.flatMap(
              Deferred.isDone(exit),
              (done) => done ? Effect.void : Effect.sync(() => void send(handle.pid!, "SIGKILL"))
            )
        )
        const pid = child.pid!
        const gate = child.stdio[3] as Writable
        // A write after the holder is gone (killed meanwhile) fails here; its exit code says what happened.
        gate.on("error", () => {})

        const stat = linux ? yield* procStat(fs, pid) : Option.none()
        const group: TaskProcess.ProcessGroup = {
          pgid: pid,
          ...Option.match(stat, { onNone: () => ({}), onSome: (s) => ({ start: s.start }) }),
          ...Option.match(boot, { onNone: () => ({}), onSome: (id) => ({ boot: id }) })
        }
        yield* beforeRun(group).pipe(Effect.onExit((done) =>
          Effect.sync(() => {
            if (Exit.isSuccess(done)) gate.end("run\n")
            else gate.destroy()
          })
        ))

        const exitCode = Effect.flatMap(Deferred.await(exit), ([code, signal]) =>
          code !== null
            ? Effect.succeed(CommandExecutor.ExitCode(code))
            : Effect.fail(failure("exitCode", `${described}: ended on signal ${signal}`)))
        const kill = (signal: CommandExecutor.Signal = "SIGTERM") =>
          Effect.suspend(() => {
            if (send(pid, signal as Signal) === "none") child.kill(signal)
            return Deferred.await(exit)
          }).pipe(Effect.asVoid)
        const output = (readable: NodeJS.ReadableStream | null, name: string) =>
          readable === null ? Stream.empty : NodeStream.fromReadable<PlatformError.PlatformError, Uint8Array>(
            () => readable,
            (error) => failure(`fromReadable(${name})`, described, error)
          )
        const stdout = output(child.stdout, "stdout")
        const stdin: Sink.Sink<void, unknown, never, PlatformError.PlatformError> = child.stdin === null
          ? Sink.drain
          : NodeSink.fromWritable(() => child.stdin!, (error) => failure("toWritable", described, error))
        const running: CommandExecutor.Process = Object.assign(Object.create(ProcessProto), {
          pid: CommandExecutor.ProcessId(pid),
          exitCode,
          isRunning: Effect.negate(Deferred.isDone(exit)),
          kill,
          stdin,
          stdout: typeof command.stdout === "string" ? stdout : Stream.transduce(stdout, command.stdout),
          stderr: output(child.stderr, "stderr")
        })
        if (typeof command.stdin !== "string") {
          yield* Effect.forkScoped(Stream.run(command.stdin, running.stdin))
        }
        return running
      })

    // Every process whose group is `pgid`, alive: from /proc on Linux, else only whether the group has any.
    const members = (pgid: number) =>
      Effect.gen(function*() {
        if (send(pgid, 0) === "none") return []
        if (!linux) return [{ pid: pgid }]
        const names = yield* fs.readDirectory("/proc").pipe(Effect.orElseSucceed(() => []))
        const stats = yield* Effect.forEach(
          names.filter((name) => /^\d+$/.test(name)),
          (name) => Effect.map(procStat(fs, Number(name)), Option.map((stat) => ({ pid: Number(name), ...stat }))),
          { concurrency: 16 }
        )
        return stats.flatMap(Option.toArray)
          .filter((stat) => stat.group === pgid && !isDead(stat))
          .map(({ pid, start }): TaskProcess.Member => ({ pid, start }))
      })

    const inspect = (pid: number) =>
      Effect.gen(function*() {
        if (!Number.isInteger(pid) || pid <= 0) return Option.none()
        if (linux) {
          const stat = yield* procStat(fs, pid)
          return Option.isSome(stat) && !isDead(stat.value)
            ? Option.some({ group: stat.value.group, start: stat.value.start })
            : Option.none()
        }
        try {
          process.kill(pid, 0)
          return Option.some({})
        } catch (error) {
          return (error as { code?: unknown }).code === "EPERM" ? Option.some({}) : Option.none()
        }
      })

    return TaskProcess.ProcessGroups.of({
      start,
      inspect,
      boot: Effect.succeed(boot),
      members,
      signal: (pgid, signal) => Effect.sync(() => send(pgid, signal) === "sent")
    })
  })

/**
 * Node's process groups, for `TaskProcess.start` and for the task handler,
 * which ends the groups a crash left behind: provide it to the task
 * handler's layer.
 *
 * @since 0.3.0
 * @category layers
 */
export const layer: Layer.Layer<TaskProcess.ProcessGroups> = Layer.effect(
  TaskProcess.ProcessGroups,
  Effect.flatMap(FileSystem.FileSystem, make)
).pipe(Layer.provide(NodeFileSystem.layer))
