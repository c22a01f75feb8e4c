#!/usr/bin/env node
/**
 * `effect-grpc-resilience-master`: the embedded master as a process, to try a
 * worker against. Configured from the environment:
 *
 *   MASTER_PORT   the gRPC port (default 9666; 0 picks a free one)
 *   MASTER_HOST   the address to bind (default 127.0.0.1)
 *   MASTER_REDELIVER_AFTER, MASTER_MAX_HAND_OUTS  see `Master.config` (defaults 10 seconds, 5)
 *   ADMIN_PORT    the HTTP port of the admin API (default 9667), on 127.0.0.1
 *   ADMIN_SOCKET  a Unix socket path for the admin API instead of ADMIN_PORT
 *   LOG_FORMAT    logfmt (one line per entry, the default), json or pretty; LOG_LEVEL (default Info)
 *
 * Each is read through `Env`, so a bad value fails naming its variable (`Invalid data at MASTER_PORT`).
 * The admin API is `MasterAdmin.router` (`POST /tasks`, `GET /tasks`, ...).
 * Needs `@effect/platform-node`.
 *
 * @since 0.2.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import * as Env from "../Env.js"
import * as Master from "../testing/Master.js"
import * as MasterAdmin from "../testing/MasterAdmin.js"
import { Logging } from "./logging.js"

// The command's own options, beside the master's (`Master.config`).
const adminConfig = {
  adminPort: Config.port("adminPort").pipe(Config.withDefault(9667)),
  adminSocket: Config.option(Config.nonEmptyString("adminSocket"))
}

// The master's options, with the command's own defaults: port 9666 (the library's picks a free one). They are
// optional (absent reads as undefined), so the default is put in place of undefined: `Config.withDefault` would
// never apply.
const masterConfig = {
  ...Master.config,
  port: Config.map(Master.config.port, (port) => port ?? 9666),
  host: Config.map(Master.config.host, (host) => host ?? "127.0.0.1")
}

const MasterLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const { adminPort, adminSocket } = yield* Env.read(adminConfig)
    const listen = adminSocket._tag === "Some" ? { path: adminSocket.value } : { port: adminPort, host: "127.0.0.1" }
    const Admin = HttpServer.serve(MasterAdmin.router).pipe(Layer.provide(NodeHttpServer.layer(createServer, listen)))
    const where = adminSocket._tag === "Some" ? `unix:${adminSocket.value}` : `http://127.0.0.1:${adminPort}`
    const announce = Layer.effectDiscard(
      Effect.flatMap(
        Master.Master,
        (master) => Effect.logInfo(`master serving on ${master.address}, admin on ${where}`)
      )
    )
    return Layer.mergeAll(Admin, announce).pipe(
      Layer.provideMerge(Master.layerConfig({}, masterConfig))
    )
  })
)

Layer.launch(MasterLive).pipe(Effect.provide(Logging), NodeRuntime.runMain({ disablePrettyLogger: true }))
