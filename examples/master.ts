/**
 * The embedded master as a process, for the demo, the end-to-end tests and a
 * worker to talk to by hand: the package's `effect-grpc-resilience-master`
 * command (`src/bin/master.ts`, configured from the environment: MASTER_PORT,
 * MASTER_HOST, ADMIN_PORT, ADMIN_SOCKET, LOG_FORMAT).
 *
 * Run it with `npm run master`.
 */
import "../src/bin/master.js"
