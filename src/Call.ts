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
}

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
    const beforeSend = unsent(client)
    const invoke = client[method] as unknown as (
      request: Request<C, M>,
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
      callback: grpc.requestCallback<Response<C, M>>
    ) => grpc.ClientUnaryCall
    const call = invoke.call(
      client,
      request,
      options.metadata ?? new grpc.Metadata(),
      callOptions(options),
      (error, response) =>
        resume(
          error
            ? Effect.fail(GrpcError.fromServiceError(error, service, method, beforeSend))
            : Effect.succeed(response as Response<C, M>)
        )
    )
    return Effect.sync(() => call.cancel())
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
        return call
      }),
      (call) =>
        Effect.sync(() => {
          // After our own cancel grpc-js still emits a CANCELLED error: nobody listens any more.
          call.removeAllListeners()
          call.on("error", () => {})
          call.cancel()
        })
    ))
