#!/usr/bin/env bash
# Regenerates src/protocol/generated from proto/worker.proto with proto-loader-gen-types.
# The options match the loader options of src/WorkerProtocol.ts: change them together.
set -euo pipefail
cd "$(dirname "$0")/.."

out=src/protocol/generated
rm -rf "$out"
npx --no-install proto-loader-gen-types \
  --keepCase --longs=String --enums=String --defaults --oneofs --includeComments \
  --grpcLib=@grpc/grpc-js \
  --importFileExtension=.js \
  -I proto -O "$out" \
  worker.proto
