/**
 * The Node-only parts: the health endpoint on a Node HTTP server, the
 * outbox on Node's file system, and the process groups of tasks. Needs
 * `@effect/platform-node`.
 *
 * @since 0.2.0
 */
export * as NodeHealth from "./NodeHealth.js"
export * as NodeOutbox from "./NodeOutbox.js"
export * as NodeTaskProcess from "./NodeTaskProcess.js"
