// Original file: proto/worker.proto


export interface FetchTaskRequest {
  'node_key'?: (string);
  /**
   * `<nonce>/<sequence>`: the nonce new on each worker start, the sequence one more per answered fetch. The
   * same id for every retry of one fetch. An id the master has seen gets the answer its fetch got (the task
   * again while unconfirmed), never a new task: a reply lost on the way back or a request arriving late loses
   * no task. Another non-empty id is matched as is; empty: no protection.
   */
  'fetch_id'?: (string);
}

export interface FetchTaskRequest__Output {
  'node_key': (string);
  /**
   * `<nonce>/<sequence>`: the nonce new on each worker start, the sequence one more per answered fetch. The
   * same id for every retry of one fetch. An id the master has seen gets the answer its fetch got (the task
   * again while unconfirmed), never a new task: a reply lost on the way back or a request arriving late loses
   * no task. Another non-empty id is matched as is; empty: no protection.
   */
  'fetch_id': (string);
}
