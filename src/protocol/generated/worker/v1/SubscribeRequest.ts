// Original file: proto/worker.proto


export interface SubscribeRequest {
  'node_key'?: (string);
  /**
   * Subscriptions are keyed by node and generation: an old stream's end never removes a newer one.
   */
  'generation'?: (number);
}

export interface SubscribeRequest__Output {
  'node_key': (string);
  /**
   * Subscriptions are keyed by node and generation: an old stream's end never removes a newer one.
   */
  'generation': (number);
}
