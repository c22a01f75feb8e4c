/**
 * A failed gRPC call, as a typed error: the status code and details grpc-js
 * gave, which service and method were called, and what is known of whether the
 * request reached the server.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Data from "effect/Data"
import * as ErrorInfo from "./internal/errorInfo.js"

/**
 * @since 0.1.0
 * @category errors
 */
export class GrpcError extends Data.TaggedError("GrpcError")<{
  readonly code: grpc.status
  readonly details: string
  readonly service: string
  readonly method: string
  /** The request is known not to have been sent (the channel was not READY when the call started). */
  readonly beforeSend?: boolean | undefined
  /** The HTTP/2 RST_STREAM code, when the stream was reset before a gRPC status arrived. */
  readonly rstCode?: number | undefined
  /** RESOURCE_EXHAUSTED because a message was over a size limit: the same message will be again. */
  readonly tooLarge?: { readonly size: number; readonly limit: number } | undefined
  /**
   * The `google.rpc.ErrorInfo` the server sent in the status details: why, as
   * a machine reads it (`{ domain: "worker.v1", reason: "NODE_NOT_REGISTERED" }`).
   *
   * @since 0.3.0
   */
  readonly errorInfo?: ErrorInfo.ErrorInfo | undefined
}> {
  override get message() {
    return `${this.service}.${this.method} failed with ${grpc.status[this.code] ?? this.code}: ${this.details}`
  }
}

// grpc-js keeps the RST_STREAM code on its internal status but drops it before the client sees the
// error; its details are the one place left, so it is read here, once, into a typed field.
const rstStream = /^Received RST_STREAM with code (\d+)/
// Likewise a message over a size limit, received or sent: RESOURCE_EXHAUSTED, like a server out of quota,
// which may pass; this never will.
const overLimit = /^(?:Received|Sent) message larger than max \((\d+) vs\.? (\d+)\)/

/**
 * Did the master refuse the worker's credentials (UNAUTHENTICATED,
 * PERMISSION_DENIED)? Such a refusal is not transient: the connection goes
 * `Rejected` and waits on its slow schedule.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRejection = (code: grpc.status): boolean =>
  code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED

export type {
  /**
   * `google.rpc.ErrorInfo`, from the gRPC richer error model: a reason a machine reads, its domain, and metadata.
   *
   * @since 0.3.0
   * @category models
   */
  ErrorInfo
} from "./internal/errorInfo.js"

/**
 * Does the error carry this `google.rpc.ErrorInfo` reason of this domain?
 *
 * @since 0.3.0
 * @category predicates
 */
export const hasReason = (error: GrpcError, domain: string, reason: string): boolean =>
  error.errorInfo?.domain === domain && error.errorInfo.reason === reason

/**
 * Builds a `GrpcError` from a grpc-js `ServiceError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromServiceError = (
  error: grpc.ServiceError,
  service: string,
  method: string,
  beforeSend = false
): GrpcError => {
  const reset = rstStream.exec(error.details ?? "")
  const large = error.code === grpc.status.RESOURCE_EXHAUSTED ? overLimit.exec(error.details ?? "") : null
  const [details] = error.metadata?.get(ErrorInfo.trailer) ?? []
  return new GrpcError({
    code: error.code,
    details: error.details,
    service,
    method,
    beforeSend,
    rstCode: reset ? Number(reset[1]) : undefined,
    tooLarge: large ? { size: Number(large[1]), limit: Number(large[2]) } : undefined,
    errorInfo: details instanceof Uint8Array ? ErrorInfo.decode(details) : undefined
  })
}
