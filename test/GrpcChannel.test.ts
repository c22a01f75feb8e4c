import { assert, describe, it } from "@effect/vitest"
import * as GrpcChannel from "../src/GrpcChannel.js"

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
