// Original file: proto/worker.proto

import type { ReportStatusRequest as _worker_v1_ReportStatusRequest, ReportStatusRequest__Output as _worker_v1_ReportStatusRequest__Output } from '../../worker/v1/ReportStatusRequest.js';

export interface ReportStatusesRequest {
  /**
   * Each with the node_key of the call's node.
   */
  'reports'?: (_worker_v1_ReportStatusRequest)[];
}

export interface ReportStatusesRequest__Output {
  /**
   * Each with the node_key of the call's node.
   */
  'reports': (_worker_v1_ReportStatusRequest__Output)[];
}
