/**
 * The gRPC richer error model's `google.rpc.ErrorInfo`, as any gRPC stack
 * sends it: inside a `google.rpc.Status` in the `grpc-status-details-bin`
 * trailer. Read on the worker's side, written by the embedded master.
 *
 * @internal
 */
import type * as protobuf from "protobufjs"
import { lazy } from "./lazy.js"
import { requireLazily } from "./runtime.js"

/** `google.rpc.ErrorInfo`: why a call failed, as a machine reads it. */
export interface ErrorInfo {
  /** An UPPER_SNAKE_CASE constant of its domain: `NODE_NOT_REGISTERED`. */
  readonly reason: string
  /** Who defines the reason: `worker.v1`. */
  readonly domain: string
  readonly metadata: Readonly<Record<string, string>>
}

/** The trailer that carries the serialized `google.rpc.Status`. */
export const trailer = "grpc-status-details-bin"

const errorInfoType = "type.googleapis.com/google.rpc.ErrorInfo"

// The three messages, with the field numbers of googleapis' google/rpc/status.proto, error_details.proto and
// google/protobuf/any.proto. protobufjs loads when a status detail is first read or written, not at import.
const types = lazy(() => {
  const { Root } = requireLazily("protobufjs") as typeof protobuf
  const root = Root.fromJSON(
    ({
      nested: {
        google: {
          nested: {
            protobuf: {
              nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } }
            },
            rpc: {
              nested: {
                Status: {
                  fields: {
                    code: { type: "int32", id: 1 },
                    message: { type: "string", id: 2 },
                    details: { rule: "repeated", type: "google.protobuf.Any", id: 3 }
                  }
                },
                ErrorInfo: {
                  fields: {
                    reason: { type: "string", id: 1 },
                    domain: { type: "string", id: 2 },
                    metadata: { keyType: "string", type: "string", id: 3 }
                  }
                }
              }
            }
          }
        }
      }
    }) as protobuf.INamespace
  )
  return { status: root.lookupType("google.rpc.Status"), errorInfo: root.lookupType("google.rpc.ErrorInfo") }
})

/** The first `ErrorInfo` in a serialized `google.rpc.Status`; none when there is none or the bytes do not decode. */
export const decode = (bytes: Uint8Array): ErrorInfo | undefined => {
  try {
    const { errorInfo, status } = types()
    const decoded = status.toObject(status.decode(bytes), { defaults: true }) as {
      readonly details: ReadonlyArray<{ readonly type_url: string; readonly value: Uint8Array }>
    }
    const detail = decoded.details.find((any) => any.type_url === errorInfoType)
    if (detail === undefined) return undefined
    const info = errorInfo.toObject(errorInfo.decode(detail.value), { defaults: true }) as ErrorInfo
    return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } }
  } catch {
    // Details a peer sent that are not a google.rpc.Status: the status code alone is the answer.
    return undefined
  }
}

/** A serialized `google.rpc.Status` of this code and message, with one `ErrorInfo`. */
export const encode = (code: number, message: string, info: ErrorInfo): Buffer => {
  const { errorInfo, status } = types()
  const detail = { type_url: errorInfoType, value: errorInfo.encode(errorInfo.fromObject(info)).finish() }
  return Buffer.from(status.encode(status.fromObject({ code, message, details: [detail] })).finish())
}
