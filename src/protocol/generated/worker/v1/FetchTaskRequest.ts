// Original file: proto/worker.proto


export interface FetchTaskRequest {
  'node_key'?: (string);
}

export interface FetchTaskRequest__Output {
  'node_key': (string);
}
