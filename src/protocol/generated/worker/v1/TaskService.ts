// Original file: proto/worker.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { FetchTaskReply as _worker_v1_FetchTaskReply, FetchTaskReply__Output as _worker_v1_FetchTaskReply__Output } from '../../worker/v1/FetchTaskReply.js';
import type { FetchTaskRequest as _worker_v1_FetchTaskRequest, FetchTaskRequest__Output as _worker_v1_FetchTaskRequest__Output } from '../../worker/v1/FetchTaskRequest.js';
import type { ReportStatusReply as _worker_v1_ReportStatusReply, ReportStatusReply__Output as _worker_v1_ReportStatusReply__Output } from '../../worker/v1/ReportStatusReply.js';
import type { ReportStatusRequest as _worker_v1_ReportStatusRequest, ReportStatusRequest__Output as _worker_v1_ReportStatusRequest__Output } from '../../worker/v1/ReportStatusRequest.js';
import type { ReportStatusesReply as _worker_v1_ReportStatusesReply, ReportStatusesReply__Output as _worker_v1_ReportStatusesReply__Output } from '../../worker/v1/ReportStatusesReply.js';
import type { ReportStatusesRequest as _worker_v1_ReportStatusesRequest, ReportStatusesRequest__Output as _worker_v1_ReportStatusesRequest__Output } from '../../worker/v1/ReportStatusesRequest.js';

/**
 * Tasks: fetches that may wait and bring several tasks, and idempotent status reports, one or several a call.
 */
export interface TaskServiceClient extends grpc.Client {
  /**
   * The node's next tasks (up to `max_tasks`), waiting up to `wait_ms` for one, or no task when there is nothing to
   * do. Idempotent by fetch_id. A node that is not registered is refused (FAILED_PRECONDITION with
   * NODE_NOT_REGISTERED, see the top of this file).
   */
  FetchTask(argument: _worker_v1_FetchTaskRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  FetchTask(argument: _worker_v1_FetchTaskRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  FetchTask(argument: _worker_v1_FetchTaskRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  FetchTask(argument: _worker_v1_FetchTaskRequest, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  /**
   * The node's next tasks (up to `max_tasks`), waiting up to `wait_ms` for one, or no task when there is nothing to
   * do. Idempotent by fetch_id. A node that is not registered is refused (FAILED_PRECONDITION with
   * NODE_NOT_REGISTERED, see the top of this file).
   */
  fetchTask(argument: _worker_v1_FetchTaskRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  fetchTask(argument: _worker_v1_FetchTaskRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  fetchTask(argument: _worker_v1_FetchTaskRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  fetchTask(argument: _worker_v1_FetchTaskRequest, callback: grpc.requestCallback<_worker_v1_FetchTaskReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Moves a task's status forward; a repeated idempotency key changes nothing.
   */
  ReportStatus(argument: _worker_v1_ReportStatusRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  ReportStatus(argument: _worker_v1_ReportStatusRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  ReportStatus(argument: _worker_v1_ReportStatusRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  ReportStatus(argument: _worker_v1_ReportStatusRequest, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  /**
   * Moves a task's status forward; a repeated idempotency key changes nothing.
   */
  reportStatus(argument: _worker_v1_ReportStatusRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  reportStatus(argument: _worker_v1_ReportStatusRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  reportStatus(argument: _worker_v1_ReportStatusRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  reportStatus(argument: _worker_v1_ReportStatusRequest, callback: grpc.requestCallback<_worker_v1_ReportStatusReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Several reports in one call, each as `ReportStatus` would take it, answered in order. A master without it
   * answers UNIMPLEMENTED, and the worker sends its reports one a call. A refusal of the whole call (membership,
   * above) refuses every report in it.
   */
  ReportStatuses(argument: _worker_v1_ReportStatusesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  ReportStatuses(argument: _worker_v1_ReportStatusesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  ReportStatuses(argument: _worker_v1_ReportStatusesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  ReportStatuses(argument: _worker_v1_ReportStatusesRequest, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  /**
   * Several reports in one call, each as `ReportStatus` would take it, answered in order. A master without it
   * answers UNIMPLEMENTED, and the worker sends its reports one a call. A refusal of the whole call (membership,
   * above) refuses every report in it.
   */
  reportStatuses(argument: _worker_v1_ReportStatusesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  reportStatuses(argument: _worker_v1_ReportStatusesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  reportStatuses(argument: _worker_v1_ReportStatusesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  reportStatuses(argument: _worker_v1_ReportStatusesRequest, callback: grpc.requestCallback<_worker_v1_ReportStatusesReply__Output>): grpc.ClientUnaryCall;
  
}

/**
 * Tasks: fetches that may wait and bring several tasks, and idempotent status reports, one or several a call.
 */
export interface TaskServiceHandlers extends grpc.UntypedServiceImplementation {
  /**
   * The node's next tasks (up to `max_tasks`), waiting up to `wait_ms` for one, or no task when there is nothing to
   * do. Idempotent by fetch_id. A node that is not registered is refused (FAILED_PRECONDITION with
   * NODE_NOT_REGISTERED, see the top of this file).
   */
  FetchTask: grpc.handleUnaryCall<_worker_v1_FetchTaskRequest__Output, _worker_v1_FetchTaskReply>;
  
  /**
   * Moves a task's status forward; a repeated idempotency key changes nothing.
   */
  ReportStatus: grpc.handleUnaryCall<_worker_v1_ReportStatusRequest__Output, _worker_v1_ReportStatusReply>;
  
  /**
   * Several reports in one call, each as `ReportStatus` would take it, answered in order. A master without it
   * answers UNIMPLEMENTED, and the worker sends its reports one a call. A refusal of the whole call (membership,
   * above) refuses every report in it.
   */
  ReportStatuses: grpc.handleUnaryCall<_worker_v1_ReportStatusesRequest__Output, _worker_v1_ReportStatusesReply>;
  
}

export interface TaskServiceDefinition extends grpc.ServiceDefinition {
  FetchTask: MethodDefinition<_worker_v1_FetchTaskRequest, _worker_v1_FetchTaskReply, _worker_v1_FetchTaskRequest__Output, _worker_v1_FetchTaskReply__Output>
  ReportStatus: MethodDefinition<_worker_v1_ReportStatusRequest, _worker_v1_ReportStatusReply, _worker_v1_ReportStatusRequest__Output, _worker_v1_ReportStatusReply__Output>
  ReportStatuses: MethodDefinition<_worker_v1_ReportStatusesRequest, _worker_v1_ReportStatusesReply, _worker_v1_ReportStatusesRequest__Output, _worker_v1_ReportStatusesReply__Output>
}
