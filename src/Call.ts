/**
 * One gRPC call on a grpc-js client, as an Effect: a unary call is an
 * `Effect`, a server-streaming call a `Stream`, a failure a typed `GrpcError`,
 * and interrupting either cancels the grpc-js call.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as GrpcError from "./GrpcError.js"

/**
 * The unary methods of a grpc-js client type, by name.
 *
 * @since 0.1.0
 * @category models
 */
export type UnaryMethod<C> = {
  [M in keyof C]: C[M] extends (argument: any, callback: grpc.requestCallback<any>) => grpc.ClientUnaryCall ? M : never
}[keyof C] & string

/**
 * The server-streaming methods of a grpc-js client type, by name.
 *
 * @since 0.1.0
 * @category models
 */
export type StreamMethod<C> = {
  [M in keyof C]: C[M] extends (argument: any, options?: grpc.CallOptions) => grpc.ClientReadableStream<any> ? M
    : never
}[keyof C] & string

/**
 * The request type of a method.
 *
 * @since 0.1.0
 * @category models
 */
export type Request<C, M extends keyof C> = C[M] extends (argument: infer Req, ...rest: Array<any>) => any ? Req : never

/**
 * The response type of a unary method.
 *
 * @since 0.1.0
 * @category models
 */
export type Response<C, M extends keyof C> = C[M] extends
  (argument: any, callback: grpc.requestCallback<infer Res>) => grpc.ClientUnaryCall ? Res
  : never

/**
 * The message type of a server-streaming method.
 *
 * @since 0.1.0
 * @category models
 */
export type Message<C, M extends keyof C> = C[M] extends
  (argument: any, options?: grpc.CallOptions) => grpc.ClientReadableStream<infer Res> ? Res
  : never

/**
 * What one call is made with.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /** Deadline of the call, from its start. */
  readonly timeout?: Duration.DurationInput | undefined
  readonly metadata?: grpc.Metadata | undefined
  /** Aborting it ends the call at once with UNAVAILABLE (its connection was given up). */
  readonly signal?: AbortSignal | undefined
}

const givenUp = (service: string, method: string, beforeSend: boolean) =>
  new GrpcError.GrpcError({
    code: grpc.status.UNAVAILABLE,
    details: "the connection it ran on was given up",
    service,
    method,
    beforeSend
  })

const callOptions = (options: CallOptions): grpc.CallOptions =>
  options.timeout === undefined ? {} : { deadline: Date.now() + Duration.toMillis(options.timeout) }

// The request surely never left: grpc-js fails calls at once, unsent, on a channel that is not READY.
const unsent = (client: grpc.Client) =>
  client.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY

/**
 * A unary call. Interrupting the effect cancels the call.
 *
 * @since 0.1.0
 * @category calls
 */
export const unary = <C extends grpc.Client, M extends UnaryMethod<C>>(
  client: C,
  service: string,
  method: M,
  request: Request<C, M>,
  options: CallOptions = {}
): Effect.Effect<Response<C, M>, GrpcError.GrpcError> =>
  Effect.async<Response<C, M>, GrpcError.GrpcError>((resume) => {
    const signal = options.signal
    if (signal?.aborted) return resume(Effect.fail(givenUp(service, method, true)))
    const beforeSend = unsent(client)
    const invoke = client[method] as unknown as (
      request: Request<C, M>,
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
      callback: grpc.requestCallback<Response<C, M>>
    ) => grpc.ClientUnaryCall
    let settled = false
    const settle = (result: Effect.Effect<Response<C, M>, GrpcError.GrpcError>) => {
      if (settled) return
      settled = true
      signal?.removeEventListener("abort", onAbort)
      resume(result)
    }
    const call = invoke.call(
      client,
      request,
      options.metadata ?? new grpc.Metadata(),
      callOptions(options),
      (error, response) =>
        settle(
          error
            ? Effect.fail(GrpcError.fromServiceError(error, service, method, beforeSend))
            : Effect.succeed(response as Response<C, M>)
        )
    )
    function onAbort() {
      settle(Effect.fail(givenUp(service, method, beforeSend)))
      call.cancel()
    }
    signal?.addEventListener("abort", onAbort, { once: true })
    return Effect.sync(() => {
      settled = true
      signal?.removeEventListener("abort", onAbort)
      call.cancel()
    })
  })

/**
 * A server-streaming call. It ends when the server ends the call; closing the
 * stream cancels the call.
 *
 * @since 0.1.0
 * @category calls
 */
export const serverStream = <C extends grpc.Client, M extends StreamMethod<C>>(
  client: C,
  service: string,
  method: M,
  request: Request<C, M>,
  options: CallOptions = {}
): Stream.Stream<Message<C, M>, GrpcError.GrpcError> =>
  Stream.asyncScoped<Message<C, M>, GrpcError.GrpcError>((emit) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const beforeSend = unsent(client)
        const invoke = client[method] as unknown as (
          request: Request<C, M>,
          metadata: grpc.Metadata,
          options: grpc.CallOptions
        ) => grpc.ClientReadableStream<Message<C, M>>
        const call = invoke.call(client, request, options.metadata ?? new grpc.Metadata(), callOptions(options))
        call.on("data", (message: Message<C, M>) => emit.single(message))
        call.on("error", (error: grpc.ServiceError) =>
          emit.fail(GrpcError.fromServiceError(error, service, method, beforeSend)))
        call.on("end", () => emit.end())
        const signal = options.signal
        const onAbort = () => emit.fail(givenUp(service, method, beforeSend))
        if (signal?.aborted) emit.fail(givenUp(service, method, true))
        else signal?.addEventListener("abort", onAbort, { once: true })
        return { call, release: () => signal?.removeEventListener("abort", onAbort) }
      }),
      ({ call, release }) =>
        Effect.sync(() => {
          release()
          // After our own cancel grpc-js still emits a CANCELLED error: nobody listens any more.
          call.removeAllListeners()
          call.on("error", () => {})
          call.cancel()
        })
    ))
