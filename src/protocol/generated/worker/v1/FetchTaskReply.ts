// Original file: proto/worker.proto

import type { Task as _worker_v1_Task, Task__Output as _worker_v1_Task__Output } from '../../worker/v1/Task.js';

export interface FetchTaskReply {
  /**
   * Absent when there is nothing to do.
   */
  'task'?: (_worker_v1_Task | null);
}

export interface FetchTaskReply__Output {
  /**
   * Absent when there is nothing to do.
   */
  'task': (_worker_v1_Task__Output | null);
}
