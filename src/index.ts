/**
 * @since 0.1.0
 */
export * as Connection from "./Connection.js"
export * as GrpcChannel from "./GrpcChannel.js"
export * as Retry from "./Retry.js"
export * as GrpcError from "./GrpcError.js"
export * as Readiness from "./Readiness.js"
