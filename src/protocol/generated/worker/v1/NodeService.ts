// Original file: proto/worker.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { HeartbeatReply as _worker_v1_HeartbeatReply, HeartbeatReply__Output as _worker_v1_HeartbeatReply__Output } from '../../worker/v1/HeartbeatReply.js';
import type { HeartbeatRequest as _worker_v1_HeartbeatRequest, HeartbeatRequest__Output as _worker_v1_HeartbeatRequest__Output } from '../../worker/v1/HeartbeatRequest.js';
import type { MasterMessage as _worker_v1_MasterMessage, MasterMessage__Output as _worker_v1_MasterMessage__Output } from '../../worker/v1/MasterMessage.js';
import type { RegisterReply as _worker_v1_RegisterReply, RegisterReply__Output as _worker_v1_RegisterReply__Output } from '../../worker/v1/RegisterReply.js';
import type { RegisterRequest as _worker_v1_RegisterRequest, RegisterRequest__Output as _worker_v1_RegisterRequest__Output } from '../../worker/v1/RegisterRequest.js';
import type { SubscribeRequest as _worker_v1_SubscribeRequest, SubscribeRequest__Output as _worker_v1_SubscribeRequest__Output } from '../../worker/v1/SubscribeRequest.js';

/**
 * A worker node's membership: who it is, that it is alive, and what the master asks of it.
 */
export interface NodeServiceClient extends grpc.Client {
  /**
   * Registers the node, or updates it when it registers again (idempotent).
   */
  Register(argument: _worker_v1_RegisterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _worker_v1_RegisterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _worker_v1_RegisterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  Register(argument: _worker_v1_RegisterRequest, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  /**
   * Registers the node, or updates it when it registers again (idempotent).
   */
  register(argument: _worker_v1_RegisterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _worker_v1_RegisterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _worker_v1_RegisterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  register(argument: _worker_v1_RegisterRequest, callback: grpc.requestCallback<_worker_v1_RegisterReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * Tells the master the node is alive; two missed intervals mark it offline. The reply says whether the node is a
   * member; an unknown node is answered NOT_MEMBER, not refused.
   */
  SendHeartbeat(argument: _worker_v1_HeartbeatRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  SendHeartbeat(argument: _worker_v1_HeartbeatRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  SendHeartbeat(argument: _worker_v1_HeartbeatRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  SendHeartbeat(argument: _worker_v1_HeartbeatRequest, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  /**
   * Tells the master the node is alive; two missed intervals mark it offline. The reply says whether the node is a
   * member; an unknown node is answered NOT_MEMBER, not refused.
   */
  sendHeartbeat(argument: _worker_v1_HeartbeatRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  sendHeartbeat(argument: _worker_v1_HeartbeatRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  sendHeartbeat(argument: _worker_v1_HeartbeatRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  sendHeartbeat(argument: _worker_v1_HeartbeatRequest, callback: grpc.requestCallback<_worker_v1_HeartbeatReply__Output>): grpc.ClientUnaryCall;
  
  /**
   * The master's messages to one connection generation of the node, until the call ends. A node that is not
   * registered is refused, and a node the master forgets has its streams ended, with NODE_NOT_REGISTERED. The master
   * sends the response headers when it accepts the stream. It may write a `Keepalive` at once and then at least
   * every `interval_ms` it names (the embedded master: every 2 s): a worker that has had one and then hears nothing
   * on the stream for twice that interval and a second takes it as a dead link (a blackholed link sends no error):
   * it probes the master at once, and registers and subscribes again. That costs the worker no periodic call and no
   * HTTP/2 ping, which default server ping policies would refuse as often.
   * A stream with data is never quiet for a proxy's read timeout (nginx's grpc_read_timeout, 60 s by default).
   */
  Subscribe(argument: _worker_v1_SubscribeRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_worker_v1_MasterMessage__Output>;
  Subscribe(argument: _worker_v1_SubscribeRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_worker_v1_MasterMessage__Output>;
  /**
   * The master's messages to one connection generation of the node, until the call ends. A node that is not
   * registered is refused, and a node the master forgets has its streams ended, with NODE_NOT_REGISTERED. The master
   * sends the response headers when it accepts the stream. It may write a `Keepalive` at once and then at least
   * every `interval_ms` it names (the embedded master: every 2 s): a worker that has had one and then hears nothing
   * on the stream for twice that interval and a second takes it as a dead link (a blackholed link sends no error):
   * it probes the master at once, and registers and subscribes again. That costs the worker no periodic call and no
   * HTTP/2 ping, which default server ping policies would refuse as often.
   * A stream with data is never quiet for a proxy's read timeout (nginx's grpc_read_timeout, 60 s by default).
   */
  subscribe(argument: _worker_v1_SubscribeRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_worker_v1_MasterMessage__Output>;
  subscribe(argument: _worker_v1_SubscribeRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_worker_v1_MasterMessage__Output>;
  
}

/**
 * A worker node's membership: who it is, that it is alive, and what the master asks of it.
 */
export interface NodeServiceHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Registers the node, or updates it when it registers again (idempotent).
   */
  Register: grpc.handleUnaryCall<_worker_v1_RegisterRequest__Output, _worker_v1_RegisterReply>;
  
  /**
   * Tells the master the node is alive; two missed intervals mark it offline. The reply says whether the node is a
   * member; an unknown node is answered NOT_MEMBER, not refused.
   */
  SendHeartbeat: grpc.handleUnaryCall<_worker_v1_HeartbeatRequest__Output, _worker_v1_HeartbeatReply>;
  
  /**
   * The master's messages to one connection generation of the node, until the call ends. A node that is not
   * registered is refused, and a node the master forgets has its streams ended, with NODE_NOT_REGISTERED. The master
   * sends the response headers when it accepts the stream. It may write a `Keepalive` at once and then at least
   * every `interval_ms` it names (the embedded master: every 2 s): a worker that has had one and then hears nothing
   * on the stream for twice that interval and a second takes it as a dead link (a blackholed link sends no error):
   * it probes the master at once, and registers and subscribes again. That costs the worker no periodic call and no
   * HTTP/2 ping, which default server ping policies would refuse as often.
   * A stream with data is never quiet for a proxy's read timeout (nginx's grpc_read_timeout, 60 s by default).
   */
  Subscribe: grpc.handleServerStreamingCall<_worker_v1_SubscribeRequest__Output, _worker_v1_MasterMessage>;
  
}

export interface NodeServiceDefinition extends grpc.ServiceDefinition {
  Register: MethodDefinition<_worker_v1_RegisterRequest, _worker_v1_RegisterReply, _worker_v1_RegisterRequest__Output, _worker_v1_RegisterReply__Output>
  SendHeartbeat: MethodDefinition<_worker_v1_HeartbeatRequest, _worker_v1_HeartbeatReply, _worker_v1_HeartbeatRequest__Output, _worker_v1_HeartbeatReply__Output>
  Subscribe: MethodDefinition<_worker_v1_SubscribeRequest, _worker_v1_MasterMessage, _worker_v1_SubscribeRequest__Output, _worker_v1_MasterMessage__Output>
}
