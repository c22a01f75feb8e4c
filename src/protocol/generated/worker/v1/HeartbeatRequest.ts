// Original file: proto/worker.proto


export interface HeartbeatRequest {
  'node_key'?: (string);
  /**
   * How many tasks the node is running now.
   */
  'running'?: (number);
}

export interface HeartbeatRequest__Output {
  'node_key': (string);
  /**
   * How many tasks the node is running now.
   */
  'running': (number);
}
