/**
 * Credentials for the connection to the master: TLS, mutual TLS, and a bearer
 * token sent as `authorization: Bearer <token>` with every call.
 *
 * The result is one `grpc.ChannelCredentials`, given to `Connection` as its
 * `credentials`. The token travels with the channel, not with a client, so
 * every call on the channel carries it: the service clients' and the
 * readiness probe's alike (they are built with `channelOverride`).
 *
 * The token is held as a `Redacted` and revealed only when a call's metadata
 * is generated: it is in no option, error or log line.
 *
 * ```ts
 * const credentials = yield* Credentials.make({ ca: "/etc/worker/ca.pem", token: Redacted.make(secret) })
 * const MasterLive = Connection.layer({ address, services, credentials })
 * ```
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as grpc from "@grpc/grpc-js"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Cfg from "./internal/shared/config.js"
import { checkServerIdentity } from "./internal/shared/runtime.js"

/**
 * Credentials that could not be made.
 *
 * - `Unreadable`: a certificate or key file could not be read (`path` says which).
 * - `MissingOption`: an option needs another that is not given (`option` names the missing one).
 * - `Invalid`: a file is not usable PEM, the certificate does not match the key, or the token is malformed.
 * - `TokenWithoutTls`: a token without TLS would cross the network in clear text; see `allowInsecureToken`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CredentialsError extends Data.TaggedError("CredentialsError")<{
  readonly reason: "Unreadable" | "MissingOption" | "Invalid" | "TokenWithoutTls"
  readonly message: string
  /** The option at fault. */
  readonly option?: string | undefined
  /** The file at fault. */
  readonly path?: string | undefined
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** PEM file of the CA certificates the master's certificate must chain to. Default, with TLS: the system roots. */
  readonly ca?: string | undefined
  /** PEM file of this worker's certificate chain, for mutual TLS; needs `key`. */
  readonly cert?: string | undefined
  /** PEM file of this worker's private key, for mutual TLS; needs `cert`. */
  readonly key?: string | undefined
  /** Sent as `authorization: Bearer <token>` on every call. */
  readonly token?: Redacted.Redacted<string> | undefined
  /** The name the master's certificate is checked against, instead of the address's host. */
  readonly serverName?: string | undefined
  /** Use TLS. Default: true when `ca`, `cert`, `key` or `serverName` is given; `true` alone trusts the system roots. */
  readonly tls?: boolean | undefined
  /**
   * Send the token over a plaintext channel. Only for a link that is private by
   * other means: loopback, a service-mesh sidecar, a test. Default false.
   */
  readonly allowInsecureToken?: boolean | undefined
}

/**
 * Is this a `CredentialsError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isCredentialsError = (u: unknown): u is CredentialsError => Predicate.isTagged(u, "CredentialsError")

/**
 * The credentials, as a service, for code that builds its connection from the context.
 *
 * @since 0.1.0
 * @category tags
 */
export class Credentials
  extends Context.Tag("effect-grpc-resilience/Credentials")<Credentials, grpc.ChannelCredentials>()
{}

// RFC 6750 token68 plus what masters commonly issue; never a space, CR or LF, which would break the header.
const tokenPattern = /^[A-Za-z0-9\-._~+/=:]+$/

const validToken = (token: string): boolean => tokenPattern.test(token)

/**
 * Call credentials that add `authorization: Bearer <token>` to every call.
 *
 * @since 0.1.0
 * @category constructors
 */
export const bearer = (token: Redacted.Redacted<string>): grpc.CallCredentials =>
  grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata()
    // The one place the token is revealed: straight into the call's headers.
    metadata.set("authorization", `Bearer ${Redacted.value(token)}`)
    callback(null, metadata)
  })

type Connector = ReturnType<grpc.ChannelCredentials["_createSecureConnector"]>
type ConnectorArgs = Parameters<grpc.ChannelCredentials["_createSecureConnector"]>

// grpc-js refuses `compose` on insecure credentials, yet its insecure connector carries call credentials
// as it is: this hands them over, for a plaintext link the caller vouches for.
class InsecureWithCallCredentials extends grpc.ChannelCredentials {
  readonly #insecure = grpc.credentials.createInsecure()
  constructor(readonly callCredentials: grpc.CallCredentials) {
    super()
  }
  override compose(callCredentials: grpc.CallCredentials): grpc.ChannelCredentials {
    return new InsecureWithCallCredentials(this.callCredentials.compose(callCredentials))
  }
  _isSecure(): boolean {
    return false
  }
  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this
  }
  _createSecureConnector(
    target: ConnectorArgs[0],
    options: ConnectorArgs[1],
    callCredentials?: ConnectorArgs[2]
  ): Connector {
    return this.#insecure._createSecureConnector(
      target,
      options,
      callCredentials === undefined ? this.callCredentials : this.callCredentials.compose(callCredentials)
    )
  }
}

/**
 * Plaintext channel credentials that still send the token on every call.
 * grpc-js has no public way to do this (it refuses call credentials on
 * insecure channels, as the token is readable on the wire): use it only where
 * the link is private by other means (loopback, a sidecar, tests).
 *
 * @since 0.1.0
 * @category constructors
 */
export const insecureWithToken = (token: Redacted.Redacted<string>): grpc.ChannelCredentials =>
  new InsecureWithCallCredentials(bearer(token))

const readPem = (
  fs: FileSystem.FileSystem,
  option: "ca" | "cert" | "key",
  path: string
): Effect.Effect<Buffer, CredentialsError> =>
  fs.readFile(path).pipe(
    Effect.mapError((error) =>
      new CredentialsError({
        reason: "Unreadable",
        option,
        path,
        message: `cannot read the ${option} file ${path}: ${error.message}`,
        cause: error
      })
    ),
    Effect.flatMap((bytes) => {
      const buffer = Buffer.from(bytes)
      // Node would take any bytes here and fail later, at the handshake, far from the cause.
      return buffer.includes("-----BEGIN ")
        ? Effect.succeed(buffer)
        : Effect.fail(
          new CredentialsError({
            reason: "Invalid",
            option,
            path,
            message: `the ${option} file ${path} holds no PEM block`
          })
        )
    })
  )

const missing = (given: string, needed: string) =>
  new CredentialsError({ reason: "MissingOption", option: needed, message: `${given} is given without ${needed}` })

/**
 * Reads the files and makes the channel credentials: TLS when `ca`, `cert`,
 * `key` or `serverName` is given (or `tls: true`), mutual TLS when `cert` and
 * `key` are, plaintext otherwise; a token is added to every call.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<grpc.ChannelCredentials, CredentialsError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    if (options.cert !== undefined && options.key === undefined) return yield* missing("cert", "key")
    if (options.key !== undefined && options.cert === undefined) return yield* missing("key", "cert")
    if (options.token !== undefined && !validToken(Redacted.value(options.token))) {
      return yield* new CredentialsError({
        reason: "Invalid",
        option: "token",
        message: "the token is empty or has characters a bearer token cannot have (spaces, line breaks, non-ASCII)"
      })
    }
    const tls = options.tls ??
      (options.ca !== undefined || options.cert !== undefined || options.key !== undefined ||
        options.serverName !== undefined)
    if (!tls) {
      if (options.ca !== undefined || options.cert !== undefined || options.serverName !== undefined) {
        return yield* new CredentialsError({
          reason: "MissingOption",
          option: "tls",
          message: "ca, cert, key and serverName need tls, which is false"
        })
      }
      if (options.token === undefined) return grpc.credentials.createInsecure()
      if (options.allowInsecureToken === true) return insecureWithToken(options.token)
      return yield* new CredentialsError({
        reason: "TokenWithoutTls",
        option: "token",
        message:
          "a token without TLS would be readable on the network; give ca (or tls: true), or set allowInsecureToken"
      })
    }
    const fs = yield* FileSystem.FileSystem
    const ca = options.ca === undefined ? null : yield* readPem(fs, "ca", options.ca)
    const cert = options.cert === undefined ? null : yield* readPem(fs, "cert", options.cert)
    const key = options.key === undefined ? null : yield* readPem(fs, "key", options.key)
    const serverName = options.serverName
    const verify: grpc.VerifyOptions = serverName === undefined
      ? {}
      : { checkServerIdentity: (_host, certificate) => checkServerIdentity(serverName, certificate) }
    const channel = yield* Effect.try({
      try: () => grpc.credentials.createSsl(ca, key, cert, verify),
      catch: (error) =>
        new CredentialsError({
          reason: "Invalid",
          message: `the certificates cannot be used: ${error instanceof Error ? error.message : String(error)}`,
          cause: error
        })
    })
    return options.token === undefined
      ? channel
      : grpc.credentials.combineChannelCredentials(channel, bearer(options.token))
  })

/**
 * The options as `Config` reads them, each optional; a bad value (an empty one included) fails with a
 * `ConfigError` naming its variable, and so do options that cannot go together (a certificate without its key,
 * a token without TLS):
 *
 * | variable | option |
 * | --- | --- |
 * | `MASTER_CA_FILE` (`masterCaFile`) | `ca` |
 * | `MASTER_CERT_FILE` (`masterCertFile`) | `cert` |
 * | `MASTER_KEY_FILE` (`masterKeyFile`) | `key` |
 * | `MASTER_TOKEN` (`masterToken`) | `token` (redacted) |
 * | `MASTER_SERVER_NAME` (`masterServerName`) | `serverName` |
 * | `MASTER_TLS` (`masterTls`) | `tls` (`true` / `false`) |
 * | `MASTER_ALLOW_INSECURE_TOKEN` (`masterAllowInsecureToken`) | `allowInsecureToken` (`true` / `false`) |
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.mapOrFail(
  Config.all({
    ca: Cfg.optional(Cfg.readableFile("masterCaFile", "CA certificates (PEM) the master's certificate must chain to.")),
    cert: Cfg.optional(Cfg.readableFile("masterCertFile", "This worker's certificate chain (PEM), for mutual TLS.")),
    key: Cfg.optional(Cfg.readableFile("masterKeyFile", "This worker's private key (PEM), for mutual TLS.")),
    // Checked as a plain string so the error keeps the variable's name; the message never quotes the value.
    token: Cfg.optional(
      Config.string("masterToken").pipe(
        Config.validate({
          message: "expected a bearer token: non-empty, no spaces, line breaks or non-ASCII characters",
          validation: validToken
        }),
        Config.map(Redacted.make),
        Config.withDescription("The bearer token sent on every call.")
      )
    ),
    serverName: Cfg.optional(
      Config.withDescription(
        Config.nonEmptyString("masterServerName"),
        "The name the master's certificate is checked against."
      )
    ),
    tls: Cfg.optional(Config.withDescription(Config.boolean("masterTls"), "TLS with the system's roots.")),
    allowInsecureToken: Cfg.optional(
      Config.withDescription(
        Config.boolean("masterAllowInsecureToken"),
        "Allow the token without TLS (loopback, sidecars, tests)."
      )
    )
  }),
  (options) => {
    // The rules of `make`, here so that the error names the variables.
    const invalid = (name: string, message: string) => Either.left(ConfigError.InvalidData([name], message))
    if (options.cert !== undefined && options.key === undefined) {
      return invalid("masterCertFile", `a certificate needs its key: set ${Cfg.ref("masterKeyFile")} too`)
    }
    if (options.key !== undefined && options.cert === undefined) {
      return invalid("masterKeyFile", `a key needs its certificate: set ${Cfg.ref("masterCertFile")} too`)
    }
    const tls = options.tls ??
      (options.ca !== undefined || options.cert !== undefined || options.serverName !== undefined)
    if (!tls && (options.ca !== undefined || options.cert !== undefined || options.serverName !== undefined)) {
      return invalid(
        "masterTls",
        `is false, yet ${Cfg.ref("masterCaFile")}, ${Cfg.ref("masterCertFile")} or ${
          Cfg.ref("masterServerName")
        } asks for TLS`
      )
    }
    if (!tls && options.token !== undefined && options.allowInsecureToken !== true) {
      return invalid(
        "masterToken",
        `a token without TLS would be readable on the network: set ${Cfg.ref("masterCaFile")} (or ${
          Cfg.ref("masterTls")
        }=true), or ${Cfg.ref("masterAllowInsecureToken")}=true for a private link`
      )
    }
    return Either.right(options)
  }
)

/**
 * The credentials as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Credentials, CredentialsError, FileSystem.FileSystem> =>
  Layer.effect(Credentials, make(options))

/**
 * The credentials as a layer, with the options read from `Config` (default: {@link config}, the environment).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<Credentials, CredentialsError | ConfigError.ConfigError, FileSystem.FileSystem> =>
  Layer.effect(
    Credentials,
    Effect.gen(function*() {
      const read = yield* Cfg.read(options)
      // A flag that does nothing without another value: said, not silently ignored.
      if (read.allowInsecureToken === true && read.token === undefined) {
        const [flag, token] = [yield* Cfg.nameOf(["masterAllowInsecureToken"]), yield* Cfg.nameOf(["masterToken"])]
        yield* Effect.logWarning(`${flag} is set without ${token}: it does nothing`)
      }
      return yield* make(read)
    })
  )
