/**
 * @since 0.1.0
 */
export * as Breaker from "./Breaker.js"
export * as Call from "./Call.js"
export * as Connection from "./Connection.js"
export * as ConnectionState from "./ConnectionState.js"
export * as Credentials from "./Credentials.js"
export * as GrpcChannel from "./GrpcChannel.js"
export * as GrpcError from "./GrpcError.js"
export * as Health from "./Health.js"
export * as InvalidOption from "./InvalidOption.js"
export * as Metrics from "./Metrics.js"
export * as Outbox from "./Outbox.js"
export * as Readiness from "./Readiness.js"
export * as Retry from "./Retry.js"
export * as TaskHandler from "./TaskHandler.js"
export * as TaskSource from "./TaskSource.js"
export * as WorkerProtocol from "./WorkerProtocol.js"
