// Original file: proto/worker.proto

import type { Task as _worker_v1_Task, Task__Output as _worker_v1_Task__Output } from '../../worker/v1/Task.js';

export interface FetchTaskReply {
  /**
   * The first task; absent when there is nothing to do.
   */
  'task'?: (_worker_v1_Task | null);
  /**
   * The tasks after the first, when the fetch asked for more than one (`max_tasks`).
   */
  'more_tasks'?: (_worker_v1_Task)[];
  /**
   * The master holds a fetch for `wait_ms` when it has no task: a master that leaves it false answers at once,
   * and the worker fetches on its own interval.
   */
  'waits'?: (boolean);
}

export interface FetchTaskReply__Output {
  /**
   * The first task; absent when there is nothing to do.
   */
  'task': (_worker_v1_Task__Output | null);
  /**
   * The tasks after the first, when the fetch asked for more than one (`max_tasks`).
   */
  'more_tasks': (_worker_v1_Task__Output)[];
  /**
   * The master holds a fetch for `wait_ms` when it has no task: a master that leaves it false answers at once,
   * and the worker fetches on its own interval.
   */
  'waits': (boolean);
}
