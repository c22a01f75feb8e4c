import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Metrics from "../src/Metrics.js"

// What grpc-js 1.14.7 wrote, word for word, in the details of a call on a channel in TRANSIENT_FAILURE.
const said = (last: string) => `No connection established. Last error: ${last}. Resolution note: `

describe("GrpcChannel.classify", () => {
  const cases: ReadonlyArray<readonly [string, string, GrpcChannel.FailureReason]> = [
    ["nothing listens on the port", said("Error: connect ECONNREFUSED 127.0.0.1:1"), "Refused"],
    ["reset at accept (a proxy without a backend)", said("Error: connect ECONNRESET 127.0.0.1:34419"), "Refused"],
    ["closed at accept", said("Failed to connect (2026-12-01T09:17:45.657Z)"), "Refused"],
    ["closed before the HTTP/2 handshake", said("Connection closed before starting HTTP/2 handshake"), "Refused"],
    ["no route to the host", said("Error: connect EHOSTUNREACH 2001:db8::1:9666"), "HostUnreachable"],
    ["no route to the network", said("Error: connect ENETUNREACH 10.9.9.9:9666"), "HostUnreachable"],
    [
      "a name that does not resolve",
      "Name resolution failed for target dns:nonexistent.invalid:9666",
      "NameNotResolved"
    ],
    ["a resolver that does not answer", said("Error: getaddrinfo EAI_AGAIN master.example"), "NameNotResolved"],
    ["a CA that signed nothing here", said("Error: unable to verify the first certificate"), "TlsRefused"],
    [
      "a certificate for another name",
      said(
        "Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: other.example."
      ),
      "TlsRefused"
    ],
    [
      "TLS to a plaintext port",
      said(
        "Error: 80ECA1248E7F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:ssl3_record.c:350:\n"
      ),
      "TlsRefused"
    ],
    [
      "a client certificate the master requires",
      said(
        "80ECA1248E7F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required (2026-12-01T09:17:49.680Z)"
      ),
      "TlsRefused"
    ],
    [
      "reset during the TLS handshake",
      said("Error: Client network socket disconnected before secure TLS connection was established"),
      "Refused"
    ],
    ["a peer that does not speak HTTP/2", said("Protocol error (2026-12-01T09:17:45.659Z)"), "Unrecognized"],
    ["anything else", "Deadline exceeded after 1.001s", "Unrecognized"]
  ]
  for (const [name, detail, reason] of cases) {
    it(`${name}: ${reason}`, () => assert.strictEqual(GrpcChannel.classify(detail), reason))
  }
})

describe("GrpcChannel.rememberKeepalive", () => {
  it.scoped("a channel starts at the longest interval an earlier one ended with; a keepalive turned off stays off", () =>
    Effect.gen(function*() {
      // A dialer whose channels say they ended with `endsWith` (what grpc-js does after a too_many_pings).
      const dialed: Array<unknown> = []
      let endsWith: number | undefined
      const dialer = yield* GrpcChannel.rememberKeepalive({
        dial: (options) =>
          Effect.sync(() => {
            dialed.push(options.channelOptions["grpc.keepalive_time_ms"])
            return { keepaliveTime: Effect.sync(() => endsWith) } as unknown as GrpcChannel.GrpcChannel
          })
      })
      const credentials = grpc.credentials.createInsecure()
      const channel = (channelOptions: grpc.ChannelOptions, ending: number | undefined) =>
        Effect.scoped(Effect.zipRight(
          dialer.dial({ address: "master:9666", credentials, channelOptions }),
          Effect.sync(() => {
            endsWith = ending
          })
        ))
      const refusals = Effect.map(Metric.value(Metrics.keepaliveRefusals), (state) => state.count)
      const before = yield* refusals

      // The default, refused once: grpc-js doubled it.
      yield* channel({}, 2 * GrpcChannel.defaultKeepaliveTime)
      // The next starts there, and ends there.
      yield* channel({}, 2 * GrpcChannel.defaultKeepaliveTime)
      // A configured interval longer still is kept; a channel that does not say changes nothing.
      yield* channel({ "grpc.keepalive_time_ms": 3 * GrpcChannel.defaultKeepaliveTime }, undefined)
      yield* channel({ "grpc.keepalive_time_ms": -1 }, undefined)
      yield* channel({}, undefined)

      assert.deepStrictEqual(dialed, [
        undefined,
        2 * GrpcChannel.defaultKeepaliveTime,
        3 * GrpcChannel.defaultKeepaliveTime,
        -1,
        2 * GrpcChannel.defaultKeepaliveTime
      ])
      assert.strictEqual((yield* refusals) - before, 1)
    }))
})
