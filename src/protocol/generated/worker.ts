import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { CancelTask as _worker_v1_CancelTask, CancelTask__Output as _worker_v1_CancelTask__Output } from './worker/v1/CancelTask.js';
import type { FetchTaskReply as _worker_v1_FetchTaskReply, FetchTaskReply__Output as _worker_v1_FetchTaskReply__Output } from './worker/v1/FetchTaskReply.js';
import type { FetchTaskRequest as _worker_v1_FetchTaskRequest, FetchTaskRequest__Output as _worker_v1_FetchTaskRequest__Output } from './worker/v1/FetchTaskRequest.js';
import type { HeartbeatReply as _worker_v1_HeartbeatReply, HeartbeatReply__Output as _worker_v1_HeartbeatReply__Output } from './worker/v1/HeartbeatReply.js';
import type { HeartbeatRequest as _worker_v1_HeartbeatRequest, HeartbeatRequest__Output as _worker_v1_HeartbeatRequest__Output } from './worker/v1/HeartbeatRequest.js';
import type { Keepalive as _worker_v1_Keepalive, Keepalive__Output as _worker_v1_Keepalive__Output } from './worker/v1/Keepalive.js';
import type { MasterMessage as _worker_v1_MasterMessage, MasterMessage__Output as _worker_v1_MasterMessage__Output } from './worker/v1/MasterMessage.js';
import type { NodeServiceClient as _worker_v1_NodeServiceClient, NodeServiceDefinition as _worker_v1_NodeServiceDefinition } from './worker/v1/NodeService.js';
import type { RegisterReply as _worker_v1_RegisterReply, RegisterReply__Output as _worker_v1_RegisterReply__Output } from './worker/v1/RegisterReply.js';
import type { RegisterRequest as _worker_v1_RegisterRequest, RegisterRequest__Output as _worker_v1_RegisterRequest__Output } from './worker/v1/RegisterRequest.js';
import type { ReportResult as _worker_v1_ReportResult, ReportResult__Output as _worker_v1_ReportResult__Output } from './worker/v1/ReportResult.js';
import type { ReportStatusReply as _worker_v1_ReportStatusReply, ReportStatusReply__Output as _worker_v1_ReportStatusReply__Output } from './worker/v1/ReportStatusReply.js';
import type { ReportStatusRequest as _worker_v1_ReportStatusRequest, ReportStatusRequest__Output as _worker_v1_ReportStatusRequest__Output } from './worker/v1/ReportStatusRequest.js';
import type { ReportStatusesReply as _worker_v1_ReportStatusesReply, ReportStatusesReply__Output as _worker_v1_ReportStatusesReply__Output } from './worker/v1/ReportStatusesReply.js';
import type { ReportStatusesRequest as _worker_v1_ReportStatusesRequest, ReportStatusesRequest__Output as _worker_v1_ReportStatusesRequest__Output } from './worker/v1/ReportStatusesRequest.js';
import type { SubscribeRequest as _worker_v1_SubscribeRequest, SubscribeRequest__Output as _worker_v1_SubscribeRequest__Output } from './worker/v1/SubscribeRequest.js';
import type { Task as _worker_v1_Task, Task__Output as _worker_v1_Task__Output } from './worker/v1/Task.js';
import type { TaskServiceClient as _worker_v1_TaskServiceClient, TaskServiceDefinition as _worker_v1_TaskServiceDefinition } from './worker/v1/TaskService.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  worker: {
    v1: {
      CancelTask: MessageTypeDefinition<_worker_v1_CancelTask, _worker_v1_CancelTask__Output>
      FetchTaskReply: MessageTypeDefinition<_worker_v1_FetchTaskReply, _worker_v1_FetchTaskReply__Output>
      FetchTaskRequest: MessageTypeDefinition<_worker_v1_FetchTaskRequest, _worker_v1_FetchTaskRequest__Output>
      HeartbeatReply: MessageTypeDefinition<_worker_v1_HeartbeatReply, _worker_v1_HeartbeatReply__Output>
      HeartbeatRequest: MessageTypeDefinition<_worker_v1_HeartbeatRequest, _worker_v1_HeartbeatRequest__Output>
      Keepalive: MessageTypeDefinition<_worker_v1_Keepalive, _worker_v1_Keepalive__Output>
      MasterMessage: MessageTypeDefinition<_worker_v1_MasterMessage, _worker_v1_MasterMessage__Output>
      Membership: EnumTypeDefinition
      /**
       * A worker node's membership: who it is, that it is alive, and what the master asks of it.
       */
      NodeService: SubtypeConstructor<typeof grpc.Client, _worker_v1_NodeServiceClient> & { service: _worker_v1_NodeServiceDefinition }
      RegisterReply: MessageTypeDefinition<_worker_v1_RegisterReply, _worker_v1_RegisterReply__Output>
      RegisterRequest: MessageTypeDefinition<_worker_v1_RegisterRequest, _worker_v1_RegisterRequest__Output>
      ReportOutcome: EnumTypeDefinition
      ReportResult: MessageTypeDefinition<_worker_v1_ReportResult, _worker_v1_ReportResult__Output>
      ReportStatusReply: MessageTypeDefinition<_worker_v1_ReportStatusReply, _worker_v1_ReportStatusReply__Output>
      ReportStatusRequest: MessageTypeDefinition<_worker_v1_ReportStatusRequest, _worker_v1_ReportStatusRequest__Output>
      ReportStatusesReply: MessageTypeDefinition<_worker_v1_ReportStatusesReply, _worker_v1_ReportStatusesReply__Output>
      ReportStatusesRequest: MessageTypeDefinition<_worker_v1_ReportStatusesRequest, _worker_v1_ReportStatusesRequest__Output>
      SubscribeRequest: MessageTypeDefinition<_worker_v1_SubscribeRequest, _worker_v1_SubscribeRequest__Output>
      Task: MessageTypeDefinition<_worker_v1_Task, _worker_v1_Task__Output>
      /**
       * Tasks: fetches that may wait and bring several tasks, and idempotent status reports, one or several a call.
       */
      TaskService: SubtypeConstructor<typeof grpc.Client, _worker_v1_TaskServiceClient> & { service: _worker_v1_TaskServiceDefinition }
      TaskStatus: EnumTypeDefinition
    }
  }
}

