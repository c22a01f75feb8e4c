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
export type UnaryMethod<C> =
  & {
    [M in keyof C]: C[M] extends (argument: any, callback: grpc.requestCallback<any>) => grpc.ClientUnaryCall ? M
      : never
  }[keyof C]
  & string

/**
 * The server-streaming methods of a grpc-js client type, by name.
 *
 * @since 0.1.0
 * @category models
 */
export type StreamMethod<C> =
  & {
    [M in keyof C]: C[M] extends (argument: any, options?: grpc.CallOptions) => grpc.ClientReadableStream<any> ? M
      : never
  }[keyof C]
  & string

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
  /** When it fires, the call ends at once with UNAVAILABLE: its connection was given up. */
  readonly givenUp?: GivenUp | undefined
}

/**
 * A one-shot latch a connection fires when it gives a channel up, so the calls
 * still running on it end at once. (An `AbortSignal` would do, but costs more
 * per call and warns past ten listeners; a connection carries many calls.)
 *
 * @since 0.1.0
 * @category models
 */
export class GivenUp {
  #fired = false
  readonly #listeners = new Set<() => void>()
  get fired(): boolean {
    return this.#fired
  }
  /** Runs `listener` when the latch fires; the returned function removes it. */
  listen(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }
  fire(): void {
    if (this.#fired) return
    this.#fired = true
    for (const listener of this.#listeners) listener()
    this.#listeners.clear()
  }
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

// The request surely never left: grpc-js fails a call at once, unsent, on a channel in TRANSIENT_FAILURE. On an IDLE
// or CONNECTING channel it queues the call, and may send it once connected: that call may have left.
const unsent = (client: grpc.Client) =>
  client.getChannel().getConnectivityState(false) === grpc.connectivityState.TRANSIENT_FAILURE

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
    const latch = options.givenUp
    if (latch?.fired) return resume(Effect.fail(givenUp(service, method, true)))
    const beforeSend = unsent(client)
    const invoke = client[method] as unknown as (
      request: Request<C, M>,
      metadata: grpc.Metadata,
      options: grpc.CallOptions,
      callback: grpc.requestCallback<Response<C, M>>
    ) => grpc.ClientUnaryCall
    let settled = false
    let unlisten: (() => void) | undefined
    const settle = (result: Effect.Effect<Response<C, M>, GrpcError.GrpcError>) => {
      if (settled) return
      settled = true
      unlisten?.()
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
    unlisten = latch?.listen(() => {
      settle(Effect.fail(givenUp(service, method, beforeSend)))
      call.cancel()
    })
    return Effect.sync(() => {
      settled = true
      unlisten?.()
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
        call.on("end", () =>
          emit.end())
        const latch = options.givenUp
        if (latch?.fired) emit.fail(givenUp(service, method, true))
        const release = latch?.listen(() => emit.fail(givenUp(service, method, beforeSend))) ?? (() => false)
        return { call, release }
      }),
      ({ call, release }) =>
        Effect.sync(() => {
          release()
          // After our own cancel grpc-js still emits a CANCELLED error: nobody listens any more.
          call.removeAllListeners()
          call.on("error", () => {})
          call.cancel()
        })
    )
  )
