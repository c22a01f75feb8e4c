// Original file: proto/worker.proto

import type { ReportOutcome as _worker_v1_ReportOutcome, ReportOutcome__Output as _worker_v1_ReportOutcome__Output } from '../../worker/v1/ReportOutcome.js';

/**
 * What became of one report of a `ReportStatuses` call: its outcome, or the status `ReportStatus` would have refused
 * it with (a google.rpc.Code other than OK, and its message).
 */
export interface ReportResult {
  'outcome'?: (_worker_v1_ReportOutcome);
  /**
   * 0 (OK) when the report was taken.
   */
  'code'?: (number);
  'message'?: (string);
}

/**
 * What became of one report of a `ReportStatuses` call: its outcome, or the status `ReportStatus` would have refused
 * it with (a google.rpc.Code other than OK, and its message).
 */
export interface ReportResult__Output {
  'outcome': (_worker_v1_ReportOutcome__Output);
  /**
   * 0 (OK) when the report was taken.
   */
  'code': (number);
  'message': (string);
}
