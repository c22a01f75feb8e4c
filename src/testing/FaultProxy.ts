/**
 * A TCP fault-injection proxy between a worker and its master, for the live
 * fault tests and the demo. It forwards every accepted connection to the
 * target, and the test switches the fault from Effect:
 *
 * - `pass`: bytes flow, new connections are forwarded.
 * - `reset`: open connections are killed with a TCP RST on both sides, and new
 *   ones are answered with an RST at once.
 * - `blackhole`: sockets stay open, nothing is forwarded either way and nothing
 *   answers: the half-open link that only keepalive or a probe detects. A
 *   connection that lived through a blackhole stays dead after `pass`.
 * - `latency`: each chunk leaves no earlier than its arrival plus the delay, in order.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Equal from "effect/Equal"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type * as Subscribable from "effect/Subscribable"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import * as Validate from "../internal/shared/validate.js"

/**
 * The fault the proxy applies now.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = Data.TaggedEnum<{
  Pass: {}
  Reset: {}
  Blackhole: {}
  Latency: { readonly delay: Duration.Duration }
}>

/**
 * Constructors and matchers of {@link Mode}.
 *
 * @since 0.1.0
 * @category models
 */
export const Mode = Data.taggedEnum<Mode>()

/**
 * Why the proxy could not start, or an option it cannot work with.
 *
 * @since 0.1.0
 * @category errors
 */
export class FaultProxyError extends Data.TaggedError("FaultProxyError")<{
  readonly reason: "Listen" | "InvalidOption"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Where every accepted connection is forwarded: the master. */
  readonly target: { readonly host: string; readonly port: number }
  /** The address to listen on. Default `127.0.0.1`. */
  readonly host?: string | undefined
  /** The port to listen on; 0 picks a free one. Default 0. */
  readonly port?: number | undefined
}

/**
 * A range `[min, max]` a duration is drawn from, uniformly.
 *
 * @since 0.1.0
 * @category models
 */
export type Range = readonly [min: Duration.DurationInput, max: Duration.DurationInput]

/**
 * @since 0.1.0
 * @category models
 */
export interface FlapOptions {
  /** How long each fault lasts. */
  readonly down: Range
  /** How long each pass between faults lasts. */
  readonly up: Range
  /** The fault to flap. */
  readonly kind: "reset" | "blackhole"
}

/**
 * The test's handle on a running proxy.
 *
 * @since 0.1.0
 * @category models
 */
export interface FaultProxy {
  /** The port the proxy listens on. */
  readonly port: number
  /** `host:port` to dial instead of the target. */
  readonly address: string
  /** The fault now, then every change. Read-only: change it with the effects below. */
  readonly mode: Subscribable.Subscribable<Mode>
  /** Forwards normally. Connections that lived through a blackhole stay dead. */
  readonly pass: Effect.Effect<void>
  /** Resets every open connection on both sides, and resets new ones at once. */
  readonly reset: Effect.Effect<void>
  /** Keeps every socket open, and forwards and answers nothing. */
  readonly blackhole: Effect.Effect<void>
  /** Forwards each chunk, in order, no earlier than its arrival plus `delay`. */
  readonly latency: (delay: Duration.DurationInput) => Effect.Effect<void, FaultProxyError>
  /**
   * Starts a fiber, in the proxy's scope, that alternates `kind` and pass with
   * durations drawn from `Random`, until it is interrupted (it then leaves the
   * proxy passing) or the proxy closes.
   */
  readonly flap: (options: FlapOptions) => Effect.Effect<Fiber.RuntimeFiber<never>, FaultProxyError>
  /** Connections with a socket still open. */
  readonly connections: Effect.Effect<number>
  /** Connections accepted so far, refused ones included. */
  readonly accepted: Effect.Effect<number>
  /** Bytes written to the target so far. */
  readonly bytesToTarget: Effect.Effect<number>
  /** Bytes written back to the clients so far. */
  readonly bytesFromTarget: Effect.Effect<number>
}

// One direction of a connection: chunks leave in arrival order, each no earlier than its due time.
class Pipe {
  private readonly queue: Array<{ readonly due: number; readonly chunk: Buffer | null }> = []
  private timer: ReturnType<typeof setTimeout> | undefined = undefined

  constructor(private readonly to: net.Socket, private readonly count: (bytes: number) => void) {}

  /** Queues a chunk, or the end of the stream (`null`). */
  push(chunk: Buffer | null, delay: number): void {
    // A later chunk never overtakes an earlier one, even when the latency drops meanwhile.
    const due = Math.max(performance.now() + delay, this.queue.at(-1)?.due ?? 0)
    this.queue.push({ due, chunk })
    if (this.timer === undefined) this.flush()
  }

  /** Forgets what is queued: in-flight bytes are lost. */
  drop(): void {
    this.queue.length = 0
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private flush = (): void => {
    this.timer = undefined
    const now = performance.now()
    while (this.queue.length > 0 && this.queue[0]!.due <= now) {
      const { chunk } = this.queue.shift()!
      if (this.to.destroyed) continue
      if (chunk === null) {
        this.to.end()
      } else {
        this.to.write(chunk)
        this.count(chunk.length)
      }
    }
    // A timer may fire a little early by this clock; then it is simply set again.
    if (this.queue.length > 0) this.timer = setTimeout(this.flush, this.queue[0]!.due - now)
  }
}

interface Link {
  readonly client: net.Socket
  readonly upstream: net.Socket | undefined
  readonly toTarget: Pipe | undefined
  readonly fromTarget: Pipe | undefined
  // Lived through a blackhole: its byte streams have holes, so it never forwards again.
  dead: boolean
}

const invalid = (message: string) => new FaultProxyError({ reason: "InvalidOption", message })

// An option of the proxy, checked by the library's own rule for it.
const checked = <I, A>(option: string, rule: Validate.Rule<I, A>, input: I): Effect.Effect<A, FaultProxyError> =>
  Either.match(rule(input), {
    onLeft: (reason) => Effect.fail(invalid(`${option}: ${reason}`)),
    onRight: Effect.succeed
  })

const validPort = (option: string, port: number, min: number): Effect.Effect<number, FaultProxyError> =>
  checked(option, Validate.isWholeNumber(min, 65535), port)

// Zero is a valid latency or flap bound here: finite is what matters.
const isFiniteDuration: Validate.Rule<Duration.DurationInput, Duration.Duration> = (input) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Either.left(`expected a duration such as "10 seconds" or "500 millis", got ${JSON.stringify(input)}`),
    onSome: (duration) =>
      Duration.isFinite(duration)
        ? Either.right(duration)
        : Either.left(`expected a finite duration, got ${Duration.format(duration)}`)
  })

const validMillis = (option: string, input: Duration.DurationInput): Effect.Effect<number, FaultProxyError> =>
  Effect.map(checked(option, isFiniteDuration, input), Duration.toMillis)

const validRange = (option: string, [min, max]: Range): Effect.Effect<readonly [number, number], FaultProxyError> =>
  Effect.flatMap(
    Effect.all([validMillis(`${option}[0]`, min), validMillis(`${option}[1]`, max)]),
    ([lo, hi]) =>
      lo <= hi
        ? Effect.succeed([lo, hi] as const)
        : Effect.fail(invalid(`${option}: min ${lo} ms is above max ${hi} ms`))
  )

const describe = (mode: Mode): string =>
  Mode.$match(mode, {
    Pass: () => "pass",
    Reset: () => "reset",
    Blackhole: () => "blackhole",
    Latency: ({ delay }) => `latency ${Duration.format(delay)}`
  })

/**
 * Starts a proxy to `options.target`, listening for as long as the scope.
 * Closing the scope closes the listener and every socket.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<FaultProxy, FaultProxyError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const port = yield* validPort("port", options.port ?? 0, 0)
    const targetPort = yield* validPort("target.port", options.target.port, 1)
    const target = { host: options.target.host, port: targetPort }
    const scope = yield* Effect.scope
    const runtime = yield* Effect.runtime<never>()

    // Socket callbacks read the fault synchronously; `transition` writes it and `mode` together, under `lock`.
    let current: Mode = Mode.Pass()
    let closing = false
    const mode = yield* SubscriptionRef.make<Mode>(current)
    const lock = yield* Effect.makeSemaphore(1)
    const links = new Set<Link>()
    const sockets = new Set<net.Socket>()
    const counters = { accepted: 0, toTarget: 0, fromTarget: 0 }
    const delay = () => (current._tag === "Latency" ? Duration.toMillis(current.delay) : 0)
    const annotations = { module: "FaultProxy", target: `${target.host}:${target.port}` }
    const log = (message: string) =>
      Runtime.runFork(runtime)(Effect.annotateLogs(Effect.logDebug(message), annotations))

    const track = (link: Link, socket: net.Socket) => {
      sockets.add(socket)
      socket.on("error", () => {}) // reported by `close`; an unhandled one would crash the test process
      socket.once("close", () => {
        sockets.delete(socket)
        if (!sockets.has(link.client) && (link.upstream === undefined || !sockets.has(link.upstream))) {
          link.toTarget?.drop()
          link.fromTarget?.drop()
          links.delete(link)
        }
      })
    }

    const resetLink = (link: Link) => {
      link.toTarget?.drop()
      link.fromTarget?.drop()
      link.client.resetAndDestroy()
      link.upstream?.resetAndDestroy()
    }

    // Forwards `from` into `pipe` with its FIN, and passes a reset on. A dead link passes nothing on, not even a
    // FIN: the side whose peer left is closed, the other is left to find out by itself, as across a real blackhole.
    const wire = (link: Link, from: net.Socket, pipe: Pipe, other: net.Socket) => {
      from.on("data", (chunk: Buffer) => {
        if (!link.dead) pipe.push(chunk, delay())
      })
      from.on("end", () => {
        if (link.dead) from.destroy()
        else pipe.push(null, delay())
      })
      from.once("close", (hadError) => {
        if (hadError && !link.dead && !other.destroyed) resetLink(link)
      })
    }

    const accept = (client: net.Socket) => {
      counters.accepted++
      // Refused with an RST right after accept, not by closing the listener: the client still fails within a
      // round trip (grpc-js: ECONNRESET, UNAVAILABLE), and `pass` cannot fail on a port taken meanwhile.
      if (closing || current._tag === "Reset") {
        client.on("error", () => {})
        client.resetAndDestroy()
        return
      }
      if (current._tag === "Blackhole") {
        // Accepted by the kernel, never forwarded: read and drop, so the sender never sees back-pressure either.
        const link: Link = { client, upstream: undefined, toTarget: undefined, fromTarget: undefined, dead: true }
        links.add(link)
        track(link, client)
        client.on("end", () => client.destroy())
        client.resume()
        return
      }
      // No Nagle on either side, as a real proxy (nginx's tcp_nodelay): a small write held for the peer's delayed ACK
      // would add some 40 ms to every round trip through the proxy.
      const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true })
      const link: Link = {
        client,
        upstream,
        toTarget: new Pipe(upstream, (n) => (counters.toTarget += n)),
        fromTarget: new Pipe(client, (n) => (counters.fromTarget += n)),
        dead: false
      }
      links.add(link)
      track(link, client)
      track(link, upstream)
      upstream.once("error", (error) => log(`target: ${error.message}`))
      wire(link, client, link.toTarget!, upstream)
      wire(link, upstream, link.fromTarget!, client)
    }

    const server = yield* Effect.acquireRelease(
      Effect.async<net.Server, FaultProxyError>((resume) => {
        const server = net.createServer({ allowHalfOpen: true, noDelay: true }, accept)
        const failed = (cause: Error) =>
          resume(Effect.fail(
            new FaultProxyError({
              reason: "Listen",
              message: `cannot listen on ${host}:${port}: ${cause.message}`,
              cause
            })
          ))
        server.once("error", failed)
        server.listen({ host, port }, () => {
          server.off("error", failed)
          server.on("error", (error) => log(`listener: ${error.message}`))
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.async<void>((resume) => {
          closing = true
          // Done once the listener and every socket have closed: no handle is left behind.
          let pending = 1 + sockets.size
          const done = () => {
            if (--pending === 0) resume(Effect.void)
          }
          for (const link of links) {
            link.toTarget?.drop()
            link.fromTarget?.drop()
          }
          for (const socket of sockets) {
            socket.once("close", done)
            socket.destroy()
          }
          server.close(done)
        })
    )
    const bound = (server.address() as net.AddressInfo).port
    const address = `${host}:${bound}`

    const apply = (next: Mode) => {
      current = next
      switch (next._tag) {
        case "Reset":
          for (const link of links) resetLink(link)
          break
        case "Blackhole":
          // What is queued is lost with the rest: the links never forward again (see `pass`).
          for (const link of links) {
            link.dead = true
            link.toTarget?.drop()
            link.fromTarget?.drop()
          }
          break
      }
    }

    const transition = (next: Mode): Effect.Effect<void> =>
      lock.withPermits(1)(
        Effect.suspend(() => {
          if (Equal.equals(current, next)) return Effect.void
          apply(next)
          return SubscriptionRef.set(mode, next).pipe(
            Effect.zipRight(Effect.logInfo(`fault: ${describe(next)}, open connections: ${links.size}`))
          )
        })
      ).pipe(Effect.annotateLogs({ module: "FaultProxy", proxy: address }))

    const pass = transition(Mode.Pass())
    const reset = transition(Mode.Reset())
    const blackhole = transition(Mode.Blackhole())

    const flap = (flapOptions: FlapOptions) =>
      Effect.gen(function*() {
        const down = yield* validRange("down", flapOptions.down)
        const up = yield* validRange("up", flapOptions.up)
        const fault = flapOptions.kind === "reset" ? reset : blackhole
        const hold = ([min, max]: readonly [number, number]) =>
          Effect.flatMap(Random.nextRange(min, max), (millis) => Effect.sleep(Duration.millis(millis)))
        return yield* fault.pipe(
          Effect.zipRight(hold(down)),
          Effect.zipRight(pass),
          Effect.zipRight(hold(up)),
          Effect.forever,
          Effect.ensuring(pass),
          Effect.annotateLogs({ fiber: "flap" }),
          Effect.forkIn(scope)
        )
      })

    return {
      port: bound,
      address,
      mode,
      pass,
      reset,
      blackhole,
      latency: (input) =>
        Effect.flatMap(
          validMillis("latency", input),
          (millis) => transition(Mode.Latency({ delay: Duration.millis(millis) }))
        ),
      flap,
      connections: Effect.sync(() => links.size),
      accepted: Effect.sync(() => counters.accepted),
      bytesToTarget: Effect.sync(() => counters.toTarget),
      bytesFromTarget: Effect.sync(() => counters.fromTarget)
    } satisfies FaultProxy
  })

/**
 * The faults an outage can be made of.
 *
 * @since 0.1.0
 * @category models
 */
export type FaultKind = "reset" | "blackhole"

/**
 * A fault kind read from the variable `name`; an unknown kind fails with a
 * `ConfigError` naming the variable.
 *
 * @since 0.1.0
 * @category config
 */
export const faultKind = (name: string): Config.Config<FaultKind> => Config.literal("reset", "blackhole")(name)
