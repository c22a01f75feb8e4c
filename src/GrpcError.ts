/**
 * A failed gRPC call, as a typed error: the status code and details grpc-js
 * gave, and which service and method were called.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Data from "effect/Data"

/**
 * @since 0.1.0
 * @category errors
 */
export class GrpcError extends Data.TaggedError("GrpcError")<{
  readonly code: grpc.status
  readonly details: string
  readonly service: string
  readonly method: string
  /** Whether the request was known not to have reached the server (no stream was opened). */
  readonly beforeSend?: boolean | undefined
}> {
  override get message() {
    return `${this.service}.${this.method} failed with ${grpc.status[this.code] ?? this.code}: ${this.details}`
  }
}

/**
 * Builds a `GrpcError` from a grpc-js `ServiceError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromServiceError = (error: grpc.ServiceError, service: string, method: string): GrpcError =>
  new GrpcError({ code: error.code, details: error.details, service, method })
