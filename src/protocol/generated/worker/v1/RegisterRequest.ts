// Original file: proto/worker.proto


export interface RegisterRequest {
  'node_key'?: (string);
  'name'?: (string);
  'max_runners'?: (number);
  /**
   * The worker's connection generation: 1 on the first connection, + 1 on each reconnection; 1 again when the
   * worker restarts.
   */
  'generation'?: (number);
}

export interface RegisterRequest__Output {
  'node_key': (string);
  'name': (string);
  'max_runners': (number);
  /**
   * The worker's connection generation: 1 on the first connection, + 1 on each reconnection; 1 again when the
   * worker restarts.
   */
  'generation': (number);
}
