/**
 * The worker protocol (`proto/worker.proto`, package `worker.v1`): typed
 * grpc-js client constructors, the service definitions servers add, and the
 * message types as they are decoded.
 *
 * The types come from `src/protocol/generated` (`scripts/generate-protocol.sh`);
 * the loader options below must match the generator's flags.
 *
 * Nothing is loaded at import: the proto is read (and protobufjs loaded) when a
 * client is first constructed or a definition first read, once.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import type * as protoLoader from "@grpc/proto-loader"
import { lazy } from "./internal/shared/lazy.js"
import { pathOfFileUrl, requireLazily } from "./internal/shared/runtime.js"
import type { ProtoGrpcType } from "./protocol/generated/worker.js"
import type { CancelTask__Output } from "./protocol/generated/worker/v1/CancelTask.js"
import type { FetchTaskReply__Output } from "./protocol/generated/worker/v1/FetchTaskReply.js"
import type { FetchTaskRequest__Output } from "./protocol/generated/worker/v1/FetchTaskRequest.js"
import type { HeartbeatReply__Output } from "./protocol/generated/worker/v1/HeartbeatReply.js"
import type { HeartbeatRequest__Output } from "./protocol/generated/worker/v1/HeartbeatRequest.js"
import type { MasterMessage__Output } from "./protocol/generated/worker/v1/MasterMessage.js"
import type * as NodeServiceGenerated from "./protocol/generated/worker/v1/NodeService.js"
import type { RegisterReply__Output } from "./protocol/generated/worker/v1/RegisterReply.js"
import type { RegisterRequest__Output } from "./protocol/generated/worker/v1/RegisterRequest.js"
import { ReportOutcome as ReportOutcomeValues } from "./protocol/generated/worker/v1/ReportOutcome.js"
import type { ReportOutcome__Output } from "./protocol/generated/worker/v1/ReportOutcome.js"
import type { ReportResult__Output } from "./protocol/generated/worker/v1/ReportResult.js"
import type { ReportStatusesReply__Output } from "./protocol/generated/worker/v1/ReportStatusesReply.js"
import type { ReportStatusesRequest__Output } from "./protocol/generated/worker/v1/ReportStatusesRequest.js"
import type { ReportStatusReply__Output } from "./protocol/generated/worker/v1/ReportStatusReply.js"
import type { ReportStatusRequest__Output } from "./protocol/generated/worker/v1/ReportStatusRequest.js"
import type { SubscribeRequest__Output } from "./protocol/generated/worker/v1/SubscribeRequest.js"
import type { Task__Output } from "./protocol/generated/worker/v1/Task.js"
import type * as TaskServiceGenerated from "./protocol/generated/worker/v1/TaskService.js"
import { TaskStatus as TaskStatusValues } from "./protocol/generated/worker/v1/TaskStatus.js"
import type { TaskStatus__Output } from "./protocol/generated/worker/v1/TaskStatus.js"

/**
 * The path of `worker.proto` on disk.
 *
 * @since 0.1.0
 * @category constants
 */
export const protoPath: string = pathOfFileUrl(new URL("../proto/worker.proto", import.meta.url))

/**
 * The options the proto is loaded with; the generated types assume them.
 *
 * @since 0.1.0
 * @category constants
 */
export const loaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
}

/**
 * The fully qualified service names, as the health service and reflection know them.
 *
 * @since 0.1.0
 * @category constants
 */
export const serviceNames = {
  node: "worker.v1.NodeService",
  task: "worker.v1.TaskService"
} as const

// Sync on purpose: a client constructor cannot wait, and a missing proto should fail the first use loudly.
const loaded = lazy(() => {
  const loader = requireLazily("@grpc/proto-loader") as typeof protoLoader
  return (grpc.loadPackageDefinition(loader.loadSync(protoPath, loaderOptions)) as unknown as ProtoGrpcType).worker.v1
})

// A constructor that loads the protocol on its first use: `new`, its properties, `instanceof` and
// `extends` reach the loaded one; `service` is the lazy definition. A proxy, because grpc-js
// builds a client class from the serializers, which need protobufjs.
const lazyConstructor = <C extends grpc.Client, D extends grpc.ServiceDefinition>(
  name: string,
  service: () => D,
  load: () => ClientConstructor<C, D>
): ClientConstructor<C, D> => {
  // A function, not a method: a Proxy can only construct through a constructible target.
  // eslint-disable-next-line object-shorthand
  const shell = { [name]: function() {} }[name]!
  return new Proxy(shell as unknown as ClientConstructor<C, D>, {
    construct: (_, args, newTarget) => Reflect.construct(load(), args, newTarget),
    get: (_, key) => key === "service" ? service() : Reflect.get(load(), key),
    set: (_, key, value) => Reflect.set(load(), key, value),
    has: (_, key) => Reflect.has(load(), key)
  })
}

// A definition whose methods load the protocol when first read. The keys are listed (the type
// checks that all are) so that `Object.keys`, spreading and `server.addService` see them before.
const lazyDefinition = <D extends grpc.ServiceDefinition>(
  methods: { readonly [K in keyof D]: true },
  load: () => D
): D => {
  const definition = {}
  for (const method of Object.keys(methods)) {
    Object.defineProperty(definition, method, { enumerable: true, get: () => load()[method] })
  }
  return definition as D
}

// ---------------------------------------------------------------------------------------------
// Messages: the decoded shapes (every field present, defaults filled in). Clients accept them as
// requests too, so one type per message serves both sides.
// ---------------------------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category messages
 */
export type RegisterRequest = RegisterRequest__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type RegisterReply = RegisterReply__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type HeartbeatRequest = HeartbeatRequest__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type HeartbeatReply = HeartbeatReply__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type SubscribeRequest = SubscribeRequest__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type CancelTask = CancelTask__Output

/**
 * A message on a `Subscribe` stream; `message` names the field of the oneof that is set.
 *
 * @since 0.1.0
 * @category messages
 */
export type MasterMessage = MasterMessage__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type FetchTaskRequest = FetchTaskRequest__Output

/**
 * A task as the worker receives it: `payload` is JSON, `created_at_ms` epoch millis as a decimal string.
 *
 * @since 0.1.0
 * @category messages
 */
export type Task = Task__Output

/**
 * `task` is `null` when there is nothing to do; `more_tasks` holds the tasks after it; `waits` says the master
 * holds a fetch for its `wait_ms`.
 *
 * @since 0.1.0
 * @category messages
 */
export type FetchTaskReply = FetchTaskReply__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type ReportStatusRequest = ReportStatusRequest__Output

/**
 * @since 0.1.0
 * @category messages
 */
export type ReportStatusReply = ReportStatusReply__Output

/**
 * @since 0.3.0
 * @category messages
 */
export type ReportStatusesRequest = ReportStatusesRequest__Output

/**
 * What became of one report of a `ReportStatuses` call: its outcome, or the status code and message it was refused
 * with.
 *
 * @since 0.3.0
 * @category messages
 */
export type ReportResult = ReportResult__Output

/**
 * @since 0.3.0
 * @category messages
 */
export type ReportStatusesReply = ReportStatusesReply__Output

/**
 * A task's status, by its proto name.
 *
 * @since 0.1.0
 * @category messages
 */
export type TaskStatus = TaskStatus__Output

/**
 * The values of {@link TaskStatus}.
 *
 * @since 0.1.0
 * @category messages
 */
export const TaskStatus = TaskStatusValues

/**
 * What the master did with a status report.
 *
 * @since 0.1.0
 * @category messages
 */
export type ReportOutcome = ReportOutcome__Output

/**
 * The values of {@link ReportOutcome}.
 *
 * @since 0.1.0
 * @category messages
 */
export const ReportOutcome = ReportOutcomeValues

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

/**
 * A grpc-js client of `worker.v1.NodeService` (`Register`, `SendHeartbeat`, `Subscribe`).
 *
 * @since 0.1.0
 * @category clients
 */
export type NodeServiceClient = NodeServiceGenerated.NodeServiceClient

/**
 * A grpc-js client of `worker.v1.TaskService` (`FetchTask`, `ReportStatus`, `ReportStatuses`).
 *
 * @since 0.1.0
 * @category clients
 */
export type TaskServiceClient = TaskServiceGenerated.TaskServiceClient

/**
 * A grpc-js client constructor, with the definition of its service.
 *
 * @since 0.1.0
 * @category clients
 */
export interface ClientConstructor<C extends grpc.Client, D extends grpc.ServiceDefinition> {
  new(address: string, credentials: grpc.ChannelCredentials, options?: grpc.ClientOptions): C
  readonly service: D
}

/**
 * @since 0.1.0
 * @category clients
 */
export const NodeServiceClient: ClientConstructor<NodeServiceClient, NodeServiceDefinition> = lazyConstructor(
  "NodeServiceClient",
  () => NodeService,
  () => loaded().NodeService
)

/**
 * @since 0.1.0
 * @category clients
 */
export const TaskServiceClient: ClientConstructor<TaskServiceClient, TaskServiceDefinition> = lazyConstructor(
  "TaskServiceClient",
  () => TaskService,
  () => loaded().TaskService
)

/**
 * @since 0.1.0
 * @category services
 */
export type NodeServiceDefinition = NodeServiceGenerated.NodeServiceDefinition

/**
 * @since 0.1.0
 * @category services
 */
export type TaskServiceDefinition = TaskServiceGenerated.TaskServiceDefinition

/**
 * The handlers a server implements for `worker.v1.NodeService`.
 *
 * @since 0.1.0
 * @category services
 */
export type NodeServiceHandlers = NodeServiceGenerated.NodeServiceHandlers

/**
 * The handlers a server implements for `worker.v1.TaskService`.
 *
 * @since 0.1.0
 * @category services
 */
export type TaskServiceHandlers = TaskServiceGenerated.TaskServiceHandlers

/**
 * The definition a server adds: `server.addService(WorkerProtocol.NodeService, handlers)`.
 *
 * @since 0.1.0
 * @category services
 */
export const NodeService: NodeServiceDefinition = lazyDefinition<NodeServiceDefinition>(
  { Register: true, SendHeartbeat: true, Subscribe: true },
  () => loaded().NodeService.service
)

/**
 * The definition a server adds: `server.addService(WorkerProtocol.TaskService, handlers)`.
 *
 * @since 0.1.0
 * @category services
 */
export const TaskService: TaskServiceDefinition = lazyDefinition<TaskServiceDefinition>(
  { FetchTask: true, ReportStatus: true, ReportStatuses: true },
  () => loaded().TaskService.service
)
