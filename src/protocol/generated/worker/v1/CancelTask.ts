// Original file: proto/worker.proto


/**
 * The master asks the node to stop running a task.
 */
export interface CancelTask {
  'task_id'?: (string);
}

/**
 * The master asks the node to stop running a task.
 */
export interface CancelTask__Output {
  'task_id': (string);
}
