// Original file: proto/worker.proto


export interface FetchTaskRequest {
  'node_key'?: (string);
  /**
   * `<nonce>/<sequence>`: the nonce new on each worker start, the sequence one more per answered fetch. The
   * same id for every retry of one fetch. An id the master has seen gets the answer its fetch got (the task
   * again while unconfirmed), never a new task: a reply lost on the way back or a request arriving late loses
   * no task. Another non-empty id is matched as is; empty: no protection. A retry gets every task its fetch got.
   * An id is fixed by its first answer: a call with an id whose first call is still held waits too, and whichever
   * is answered first gives both their answer (the tasks, or no task when the wait ends).
   */
  'fetch_id'?: (string);
  /**
   * How long the worker waits for a task, in milliseconds: the master holds the call until a task is queued for the
   * node, or until this has passed and then answers no task. 0: answer at once. The worker's deadline is longer,
   * and it keeps the wait below a proxy's read timeout (nginx's grpc_read_timeout is 60 s).
   */
  'wait_ms'?: (number);
  /**
   * Up to this many tasks in one answer: the node's free runners. 0 is 1.
   */
  'max_tasks'?: (number);
  /**
   * How many tasks the node is running now, as in `HeartbeatRequest`.
   */
  'running'?: (number);
}

export interface FetchTaskRequest__Output {
  'node_key': (string);
  /**
   * `<nonce>/<sequence>`: the nonce new on each worker start, the sequence one more per answered fetch. The
   * same id for every retry of one fetch. An id the master has seen gets the answer its fetch got (the task
   * again while unconfirmed), never a new task: a reply lost on the way back or a request arriving late loses
   * no task. Another non-empty id is matched as is; empty: no protection. A retry gets every task its fetch got.
   * An id is fixed by its first answer: a call with an id whose first call is still held waits too, and whichever
   * is answered first gives both their answer (the tasks, or no task when the wait ends).
   */
  'fetch_id': (string);
  /**
   * How long the worker waits for a task, in milliseconds: the master holds the call until a task is queued for the
   * node, or until this has passed and then answers no task. 0: answer at once. The worker's deadline is longer,
   * and it keeps the wait below a proxy's read timeout (nginx's grpc_read_timeout is 60 s).
   */
  'wait_ms': (number);
  /**
   * Up to this many tasks in one answer: the node's free runners. 0 is 1.
   */
  'max_tasks': (number);
  /**
   * How many tasks the node is running now, as in `HeartbeatRequest`.
   */
  'running': (number);
}
