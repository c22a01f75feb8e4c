// Original file: proto/worker.proto


export interface SubscribeRequest {
  'node_key'?: (string);
  /**
   * Subscriptions are keyed by node and generation: an old stream's end never removes a newer one. Generations
   * start at 1 again when the worker restarts: the stream opened last is the node's current one.
   */
  'generation'?: (number);
}

export interface SubscribeRequest__Output {
  'node_key': (string);
  /**
   * Subscriptions are keyed by node and generation: an old stream's end never removes a newer one. Generations
   * start at 1 again when the worker restarts: the stream opened last is the node's current one.
   */
  'generation': (number);
}
