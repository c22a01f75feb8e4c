/**
 * A failed gRPC call, as a typed error: the status code and details grpc-js
 * gave, which service and method were called, and what is known of whether the
 * request reached the server.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"
import * as ErrorInfo from "./internal/shared/errorInfo.js"

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

/**
 * Is this a `GrpcError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isGrpcError = (u: unknown): u is GrpcError => Predicate.isTagged(u, "GrpcError")

// grpc-js keeps the RST_STREAM code on its internal status but drops it before the client sees the
// error; its details are the one place left, so it is read here, once, into a typed field.
const rstStream = /^Received RST_STREAM with code (\d+)/
// Likewise a message over a size limit, received or sent: RESOURCE_EXHAUSTED, like a server out of quota,
// which may pass; this never will.
const overLimit = /^(?:Received|Sent) message larger than max \((\d+) vs\.? (\d+)\)/

/**
 * What a status code from the master means to a worker: one row a code, read
 * by everything that judges a failure (`Retry.isTransient`, the outbox, the
 * fetch, the membership, the connection).
 *
 * @since 0.3.0
 * @category models
 */
export interface StatusMeaning {
  /**
   * Worth another try: `"yes"`; `"idempotent"`, only for a call that may run
   * twice; `"reset"`, only from a reset stream (`rstCode`); `"no"`.
   */
  readonly retry: "yes" | "idempotent" | "reset" | "no"
  /** The call may have done its work and its answer got lost (`"reset"`: only from a reset stream). */
  readonly answerMayBeLost: boolean | "reset"
  /** The master refuses this request for good: a status report failed so is dropped, not tried again. */
  readonly refusal: boolean
  /** The master refused the worker's credentials: the connection goes `Rejected`, on its slow schedule. */
  readonly rejection: boolean
  /** From a master without `NODE_NOT_REGISTERED`, the node may not be a member (it joins again, at most every 30 s). */
  readonly maybeNotMember: boolean
}

const row = (
  retry: StatusMeaning["retry"],
  answerMayBeLost: StatusMeaning["answerMayBeLost"],
  refusal: boolean,
  rejection: boolean,
  maybeNotMember: boolean
): StatusMeaning => ({ retry, answerMayBeLost, refusal, rejection, maybeNotMember })

/**
 * The table of {@link StatusMeaning}s. RESOURCE_EXHAUSTED is transient
 * unless the error is `tooLarge` (the same message will be over the limit
 * again); CANCELLED is a server going away, since the library never surfaces
 * its own cancellations.
 *
 * @since 0.3.0
 * @category classification
 */
export const statusCodes: { readonly [Code in grpc.status]: StatusMeaning } = {
  // The columns: retry, answerMayBeLost, refusal, rejection, maybeNotMember.
  [grpc.status.OK]: row("no", false, false, false, false),
  [grpc.status.CANCELLED]: row("yes", true, false, false, false),
  [grpc.status.UNKNOWN]: row("no", false, false, false, false),
  [grpc.status.INVALID_ARGUMENT]: row("no", false, true, false, false),
  [grpc.status.DEADLINE_EXCEEDED]: row("idempotent", true, false, false, false),
  [grpc.status.NOT_FOUND]: row("no", false, true, false, true),
  [grpc.status.ALREADY_EXISTS]: row("no", false, true, false, false),
  [grpc.status.PERMISSION_DENIED]: row("no", false, false, true, false),
  [grpc.status.RESOURCE_EXHAUSTED]: row("yes", false, false, false, false),
  [grpc.status.FAILED_PRECONDITION]: row("no", false, true, false, true),
  [grpc.status.ABORTED]: row("yes", false, false, false, false),
  [grpc.status.OUT_OF_RANGE]: row("no", false, true, false, false),
  [grpc.status.UNIMPLEMENTED]: row("no", false, true, false, false),
  [grpc.status.INTERNAL]: row("reset", "reset", false, false, false),
  [grpc.status.UNAVAILABLE]: row("yes", true, false, false, false),
  [grpc.status.DATA_LOSS]: row("no", false, false, false, false),
  [grpc.status.UNAUTHENTICATED]: row("no", false, false, true, false)
}

/**
 * The row of a code; a code outside gRPC's 17 means nothing (no retry, no refusal).
 *
 * @since 0.3.0
 * @category classification
 */
export const meaningOf = (code: grpc.status): StatusMeaning => statusCodes[code] ?? statusCodes[grpc.status.UNKNOWN]

/**
 * Did the master refuse the worker's credentials (UNAUTHENTICATED,
 * PERMISSION_DENIED)? Such a refusal is not transient: the connection goes
 * `Rejected` and waits on its slow schedule.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRejection = (code: grpc.status): boolean => meaningOf(code).rejection

export type {
  /**
   * `google.rpc.ErrorInfo`, from the gRPC richer error model: a reason a machine reads, its domain, and metadata.
   *
   * @since 0.3.0
   * @category models
   */
  ErrorInfo
} from "./internal/shared/errorInfo.js"

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
