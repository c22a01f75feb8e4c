/**
 * A real network partition between a master and a worker: two network
 * namespaces joined by a veth pair with addresses of their own. `cut` takes
 * the worker's end of the link down, as a cluster test disconnects a
 * container's network; `restore` brings it back. Needs root and iproute2;
 * everything is torn down when the scope closes, even after a failure.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * @since 0.1.0
 * @category errors
 */
export class PartitionError extends Data.TaggedError("PartitionError")<{
  readonly reason: "Unavailable" | "CommandFailed"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Partition {
  readonly masterNamespace: string
  readonly workerNamespace: string
  /** The master's address on the link, as the worker reaches it. */
  readonly masterHost: string
  readonly workerHost: string
  /** Takes the worker's end of the link down: its packets go nowhere, nothing is reset. */
  readonly cut: Effect.Effect<void, PartitionError, CommandExecutor.CommandExecutor>
  readonly restore: Effect.Effect<void, PartitionError, CommandExecutor.CommandExecutor>
  /** A command run inside one of the namespaces. */
  readonly command: (side: "master" | "worker", command: string, ...args: Array<string>) => Command.Command
}

const run = (command: string, ...args: Array<string>) =>
  Effect.scoped(
    Effect.gen(function*() {
      const child = yield* Command.start(Command.make(command, ...args))
      const [exitCode, stderr] = yield* Effect.all(
        [child.exitCode, child.stderr.pipe(Stream.decodeText(), Stream.mkString), child.stdout.pipe(Stream.runDrain)],
        { concurrency: "unbounded" }
      )
      if (exitCode !== 0) {
        return yield* new PartitionError({
          reason: "CommandFailed",
          message: `${command} ${args.join(" ")} exited with ${exitCode}: ${stderr.trim()}`
        })
      }
    })
  ).pipe(
    Effect.catchIf(
      (error): error is Exclude<typeof error, PartitionError> => error._tag !== "PartitionError",
      (cause) =>
        new PartitionError({
          reason: "CommandFailed",
          message: `${command} ${args.join(" ")}: ${cause.message}`,
          cause
        })
    )
  )

/**
 * Why partitions cannot be made here, if they cannot: not root, or no `ip`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unavailable: Effect.Effect<Option.Option<string>, never, CommandExecutor.CommandExecutor> = Effect.gen(
  function*() {
    if (typeof process.getuid === "function" && process.getuid() !== 0) {
      return Option.some("network namespaces need root")
    }
    const ip = yield* Effect.either(run("ip", "-V"))
    return ip._tag === "Left" ? Option.some(`iproute2 is missing: ${ip.left.message}`) : Option.none()
  }
)

let counter = 0

/**
 * Makes the two namespaces and the link, for as long as the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Partition, PartitionError, CommandExecutor.CommandExecutor | Scope.Scope> = Effect.gen(
  function*() {
    const reason = yield* unavailable
    if (Option.isSome(reason)) return yield* new PartitionError({ reason: "Unavailable", message: reason.value })
    const id = `${process.pid % 10000}x${counter++}`
    const subnet = (process.pid + counter * 7) % 250
    const masterNamespace = `egr-${id}-m`
    const workerNamespace = `egr-${id}-w`
    const masterLink = `eg${id}m`
    const workerLink = `eg${id}w`
    const masterHost = `10.213.${subnet}.1`
    const workerHost = `10.213.${subnet}.2`

    yield* Effect.acquireRelease(
      Effect.gen(function*() {
        yield* run("ip", "netns", "add", masterNamespace)
        yield* run("ip", "netns", "add", workerNamespace)
      }),
      // Deleting the namespaces deletes the veth pair with them.
      () =>
        Effect.all([run("ip", "netns", "del", masterNamespace), run("ip", "netns", "del", workerNamespace)], {
          mode: "either"
        })
    )
    yield* run(
      "ip",
      "link",
      "add",
      masterLink,
      "netns",
      masterNamespace,
      "type",
      "veth",
      "peer",
      "name",
      workerLink,
      "netns",
      workerNamespace
    )
    for (
      const [namespace, link, host] of [[masterNamespace, masterLink, masterHost], [
        workerNamespace,
        workerLink,
        workerHost
      ]] as const
    ) {
      yield* run("ip", "-n", namespace, "addr", "add", `${host}/30`, "dev", link)
      yield* run("ip", "-n", namespace, "link", "set", link, "up")
      yield* run("ip", "-n", namespace, "link", "set", "lo", "up")
    }

    return {
      masterNamespace,
      workerNamespace,
      masterHost,
      workerHost,
      cut: run("ip", "-n", workerNamespace, "link", "set", workerLink, "down"),
      restore: run("ip", "-n", workerNamespace, "link", "set", workerLink, "up"),
      command: (side, command, ...args) =>
        Command.make("ip", "netns", "exec", side === "master" ? masterNamespace : workerNamespace, command, ...args)
    } satisfies Partition
  }
)
