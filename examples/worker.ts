/**
 * An example worker: connects to its master, fetches tasks that are shell
 * commands, runs them with `@effect/platform`'s `Command` through
 * `TaskProcess.start` (each in a process group of its own, recorded before it
 * runs, and ended after a crash), and reports their status through a durable
 * outbox. Configured from the environment:
 *
 *   MASTER_ADDRESS  the master, e.g. 127.0.0.1:9666 (required)
 *   NODE_KEY        this node's key (required)
 *   MAX_RUNNERS     tasks at once (default 20)
 *   OUTBOX_DIR      where undelivered reports wait (default .outbox)
 *   ... and every other variable of docs/configuration.md's table (timings, TLS, token).
 *   LOG_FORMAT      logfmt (one line per entry, the default), json or pretty
 *   HEALTH_PORT     serve /healthz, /readyz and /metrics on this port (off when unset)
 *   HEALTH_HOST     the address the health endpoint binds (default 0.0.0.0)
 *
 * Run it with `npm run worker`; stop it with SIGTERM or Ctrl-C: running tasks
 * get 30 s to finish, and the outbox is flushed.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Command from "@effect/platform/Command"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Connection, Credentials, Env, GrpcChannel, TaskHandler, TaskProcess, TaskSource } from "../src/index.js"
import { NodeHealth, NodeOutbox, NodeTaskProcess } from "../src/node/index.js"
import { Logging } from "./logging.js"

// A task is a command and its arguments, like the `echo` spider of the original cluster test.
const ShellTask = Schema.Struct({
  command: Schema.NonEmptyString,
  args: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] })
})

const collect = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  stream.pipe(Stream.decodeText(), Stream.runFold("", (all, chunk) => all + chunk))

// Runs the command; its output is logged, a non-zero exit code fails the task with the tail of stderr. The
// command's process group is recorded with the task before it runs: a worker killed meanwhile ends it at its restart.
const runShell = (task: TaskHandler.Task<typeof ShellTask.Type>) =>
  Effect.gen(function*() {
    const process = yield* TaskProcess.start(Command.make(task.payload.command, ...task.payload.args))
    const [stdout, stderr, exitCode] = yield* Effect.all([
      collect(process.stdout),
      collect(process.stderr),
      process.exitCode
    ], {
      concurrency: "unbounded"
    })
    yield* Effect.logInfo(`task ${task.id}: exit code ${exitCode}, output ${JSON.stringify(stdout.trim())}`)
    if (exitCode !== 0) {
      return yield* new TaskHandler.TaskError({ message: `exit code ${exitCode}: ${stderr.trim().slice(-500)}` })
    }
    return stdout
  }).pipe(
    Effect.scoped,
    // A command that cannot be run (exit code 127 or 126), or a process group that cannot be recorded, is the
    // task's failure, not the worker's.
    Effect.mapError((error) =>
      error instanceof TaskHandler.TaskError
        ? error
        : new TaskHandler.TaskError({ message: error.message, cause: error })
    )
  )

// The worker's connection to its master, typed by the worker protocol's services.
class Master extends Connection.Tag("example/Master", TaskSource.services)<Master>() {}

// Every option comes from the environment (see docs/configuration.md); a bad or missing value stops the start before
// anything dials or listens, naming the variable.
const WorkerLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const healthPort = yield* Config.option(Config.port("HEALTH_PORT"))
    // One connection for the task handler and the health endpoint, with TLS and a token when MASTER_* say so.
    const MasterLive = Master.layerConfig().pipe(
      Layer.provide(GrpcChannel.layer),
      Layer.provide(Credentials.layerConfig())
    )
    return Layer.mergeAll(
      TaskHandler.layerConfig({ connection: Master, payload: ShellTask, run: runShell }).pipe(
        Layer.provide(TaskSource.layerConfig({ connection: Master })),
        Layer.provide(NodeOutbox.layerConfig()),
        Layer.provide(NodeTaskProcess.layer)
      ),
      Option.isSome(healthPort) ? NodeHealth.layerConfig({ connection: Master }) : Layer.empty
    ).pipe(
      Layer.provide(MasterLive),
      Layer.provide(Env.check(Connection.config, Credentials.config, TaskSource.config, TaskHandler.config))
    )
  })
)

Layer.launch(WorkerLive).pipe(
  Effect.provide(NodeContext.layer),
  Effect.provide(Logging),
  NodeRuntime.runMain({ disablePrettyLogger: true })
)
