// Original file: proto/worker.proto

export const TaskStatus = {
  TASK_STATUS_UNSPECIFIED: 'TASK_STATUS_UNSPECIFIED',
  PENDING: 'PENDING',
  ASSIGNED: 'ASSIGNED',
  RUNNING: 'RUNNING',
  FINISHED: 'FINISHED',
  ERROR: 'ERROR',
  CANCELLED: 'CANCELLED',
} as const;

export type TaskStatus =
  | 'TASK_STATUS_UNSPECIFIED'
  | 0
  | 'PENDING'
  | 1
  | 'ASSIGNED'
  | 2
  | 'RUNNING'
  | 3
  | 'FINISHED'
  | 4
  | 'ERROR'
  | 5
  | 'CANCELLED'
  | 6

export type TaskStatus__Output = typeof TaskStatus[keyof typeof TaskStatus]
