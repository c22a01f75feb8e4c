/**
 * Contender (b): a worker as people write it with @grpc/grpc-js and nothing
 * else. One client with default channel options (so no keepalive: grpc-js
 * leaves it off unless asked), a `setInterval` of 1 s that calls `FetchTask`,
 * errors logged and retried on the next tick, a fetched task started at once
 * and reported RUNNING then FINISHED, fire and forget.
 *
 * The one choice made for it: `FetchTask` gets a 5 s deadline. Without one a
 * call on a dead connection would wait forever; 5 s is a common "reasonable"
 * value, longer than the library's 3 s fetch attempt deadline, and it lets calls
 * overlap at most 5 deep on a dead link. No `fetch_id` is sent: plain code
 * does not know the master's retry protection.
 */
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import { WorkerProtocol } from "../../src/index.js"
import type { Contender } from "./Contender.js"

/** The deadline of one `FetchTask` call. */
export const fetchDeadlineMs = 5_000
/** The fetch tick. */
export const fetchIntervalMs = 1_000

export const plain: Contender = {
  key: "plain",
  name: "plain grpc-js",
  start: ({ address, nodeKey, started, log }) =>
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => {
          const counters = { fetches: 0, fetchFailures: 0, fetched: 0 }
          const client = new WorkerProtocol.TaskServiceClient(address, grpc.credentials.createInsecure())
          // Registered once, at start, on the same channel: the master fetches only for nodes it knows, and the
          // network faults here never make it forget one.
          const node = new WorkerProtocol.NodeServiceClient(address, grpc.credentials.createInsecure(), {
            channelOverride: client.getChannel()
          })
          node.Register({ node_key: nodeKey, name: nodeKey, max_runners: 1, generation: 1 }, (error) => {
            if (error) log(`register failed: ${error.message}`)
          })
          const report = (taskId: string, status: "RUNNING" | "FINISHED") =>
            client.ReportStatus(
              { task_id: taskId, node_key: nodeKey, status, idempotency_key: `${taskId}:${status}` },
              { deadline: Date.now() + fetchDeadlineMs },
              (error) => {
                if (error) log(`report ${status} of ${taskId} failed: ${error.message}`)
              }
            )
          const timer = setInterval(() => {
            counters.fetches++
            client.FetchTask({ node_key: nodeKey }, { deadline: Date.now() + fetchDeadlineMs }, (error, reply) => {
              if (error) {
                counters.fetchFailures++
                log(`fetch failed: ${error.message}`)
                return
              }
              const task = reply?.task
              if (!task) return
              counters.fetched++
              started(task.id)
              report(task.id, "RUNNING")
              report(task.id, "FINISHED")
            })
          }, fetchIntervalMs)
          return { client, timer, counters }
        }),
        ({ client, timer }) =>
          Effect.sync(() => {
            clearInterval(timer)
            client.close()
          })
      ),
      ({ client, counters }) => ({
        describe: Effect.sync(() => {
          const state = grpc.connectivityState[client.getChannel().getConnectivityState(false)]
          return state === "READY"
            ? "channel still READY: without keepalive nothing notices that its connection is dead"
            : `channel ${state}`
        }),
        stats: Effect.sync(() => ({ ...counters }))
      })
    )
}
