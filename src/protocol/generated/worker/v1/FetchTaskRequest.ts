// Original file: proto/worker.proto


export interface FetchTaskRequest {
  'node_key'?: (string);
  /**
   * The same id for every retry of one fetch: the master answers it with the task it handed out for it, so a
   * reply lost on the way back (a cut link, a deadline) is not a task lost. Empty: no retry protection.
   */
  'fetch_id'?: (string);
}

export interface FetchTaskRequest__Output {
  'node_key': (string);
  /**
   * The same id for every retry of one fetch: the master answers it with the task it handed out for it, so a
   * reply lost on the way back (a cut link, a deadline) is not a task lost. Empty: no retry protection.
   */
  'fetch_id': (string);
}
