// Original file: proto/worker.proto

export const ReportOutcome = {
  REPORT_OUTCOME_UNSPECIFIED: 'REPORT_OUTCOME_UNSPECIFIED',
  /**
   * The status was recorded.
   */
  ACCEPTED: 'ACCEPTED',
  /**
   * This idempotency key was accepted before; nothing changed.
   */
  DUPLICATE: 'DUPLICATE',
  /**
   * The task already has this status or a later one; nothing changed.
   */
  STALE: 'STALE',
} as const;

export type ReportOutcome =
  | 'REPORT_OUTCOME_UNSPECIFIED'
  | 0
  /**
   * The status was recorded.
   */
  | 'ACCEPTED'
  | 1
  /**
   * This idempotency key was accepted before; nothing changed.
   */
  | 'DUPLICATE'
  | 2
  /**
   * The task already has this status or a later one; nothing changed.
   */
  | 'STALE'
  | 3

export type ReportOutcome__Output = typeof ReportOutcome[keyof typeof ReportOutcome]
