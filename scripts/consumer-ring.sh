#!/usr/bin/env bash
# The consumer ring: the package as a user meets it. Packs the library, installs the tarball into scratch
# projects with only the documented dependencies (at the lock file's versions), type-checks every TypeScript
# block of the README under strict settings, runs the README's test block, runs the README's worker against a
# master started from the package's own command, restarts the master, and checks that effect 4 is refused at
# install time. Ends with "N passed, N failed"; exits non-zero when a step failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t consumer-ring.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do { kill -9 "$pid" && wait "$pid"; } 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
# step NAME COMMAND...: runs it with its output to a log; prints the log's tail when it fails.
step() {
  local name=$1
  shift
  local log="$work/step-$((passed + failed)).log"
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL  $name ($((SECONDS - started)) s)"
    tail -n 40 "$log" | sed 's/^/      /'
  fi
}

version() { node -p "require('$root/package-lock.json').packages['node_modules/$1'].version"; }
npm_install() { npm install --prefer-offline --no-audit --no-fund --loglevel=error "$@"; }

pack() {
  (cd "$root" && npm pack --silent --pack-destination "$work" | tail -n 1) >"$work/tarball"
  test -s "$work/$(cat "$work/tarball")"
}

# A scratch project with the tarball and the given packages, exactly as the README's Install section says.
project() {
  local dir="$work/$1"
  shift
  mkdir -p "$dir"
  printf '{ "name": "consumer", "private": true, "type": "module" }\n' >"$dir/package.json"
  (cd "$dir" && npm_install "$work/$(cat "$work/tarball")" "$@")
}

# One copy of effect and of grpc-js; the optional Node peer only where asked for.
single_copies() {
  local dir="$work/$1" name
  (cd "$dir" && npm ls --all effect @grpc/grpc-js) | tee "$work/$1.ls"
  for name in effect @grpc/grpc-js; do
    local copies
    copies=$(cd "$dir" && npm ls --all --parseable "$name" | sort -u | wc -l)
    [ "$copies" -eq 1 ] || { echo "$name: $copies copies"; return 1; }
  done
}

size() {
  local dir="$work/$1"
  local packages
  packages=$(cd "$dir" && npm ls --all --parseable | tail -n +2 | sort -u | wc -l)
  echo "$1: $packages packages, $(du -sm "$dir/node_modules" | cut -f1) MB" | tee -a "$work/sizes"
}

core_has_no_node_peer() { ! test -e "$work/core/node_modules/@effect/platform-node"; }

# Every ```ts block of the README and of docs/ as a module of its own; the ones marked <!-- consumer: FILE -->
# under that name.
extract_blocks() {
  local dir="$work/node"
  mkdir -p "$dir/readme"
  node --input-type=module -e '
    import { readFileSync, writeFileSync } from "node:fs"
    const [out, ...pages] = process.argv.slice(1)
    const text = pages.map((page) => readFileSync(page, "utf8")).join("\n")
    const pattern = /(?:<!-- consumer: (\S+) -->\n)?```ts\n([\s\S]*?)```/g
    let n = 0
    for (const match of text.matchAll(pattern)) {
      n++
      const name = match[1] ?? `block-${String(n).padStart(2, "0")}.ts`
      writeFileSync(`${out}/${name}`, match[2])
    }
    if (n === 0) throw new Error("no ts blocks in the README")
    console.log(`${n} blocks`)
  ' "$dir/readme" "$root/README.md" "$root"/docs/*.md
  cat >"$dir/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022", "lib": ["ES2022"], "module": "NodeNext", "moduleResolution": "NodeNext",
    "types": ["node"], "strict": true, "exactOptionalPropertyTypes": true, "noUncheckedIndexedAccess": true,
    "noImplicitOverride": true, "verbatimModuleSyntax": true, "isolatedModules": true, "skipLibCheck": true,
    "outDir": "dist", "rootDir": "readme", "noEmitOnError": true
  },
  "include": ["readme"]
}
JSON
}

typecheck() { (cd "$work/node" && npx tsc -p tsconfig.json); }

# What the README's Install says a project that checks its libraries' types needs.
strict_libs() {
  (cd "$work/node" && npm_install -D @types/ws@^8 &&
    node -e '
      const fs = require("node:fs")
      const config = JSON.parse(fs.readFileSync("tsconfig.json", "utf8"))
      Object.assign(config.compilerOptions, { skipLibCheck: false, lib: ["ES2022", "DOM"], noEmit: true })
      fs.writeFileSync("tsconfig.strict-libs.json", JSON.stringify(config))' &&
    npx tsc -p tsconfig.strict-libs.json)
}

test_block() {
  (cd "$work/node" && cat >vitest.config.ts <<'TS'
import { defineConfig } from "vitest/config"
// A loaded CI machine is slow in wall time, even for a test in virtual time.
export default defineConfig({ test: { include: ["readme/*.test.ts"], testTimeout: 30_000 } })
TS
  npx vitest run --reporter=verbose)
}

# Whether nothing listens on 127.0.0.1:$1.
port_free() { node -e 'const s=require("net").createServer();s.on("error",()=>process.exit(1));s.listen(Number(process.argv[1]),"127.0.0.1",()=>s.close())' "$1"; }

# The master command with no variable set, as the README starts it: gRPC on 127.0.0.1:9666, admin on 9667.
start_master() {
  (cd "$work/node" && unset MASTER_PORT MASTER_HOST ADMIN_PORT ADMIN_SOCKET && LOG_FORMAT=json \
    exec node_modules/.bin/effect-grpc-resilience-master >>"$work/master.log" 2>&1) &
  master_pid=$!
  pids+=("$master_pid")
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$admin_port/nodes" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the master did not answer on its admin port"; cat "$work/master.log"; return 1
}

enqueue() {
  curl -sf -X POST -H 'content-type: application/json' \
    -d '{"payload":{"url":"https://example.com/'"$1"'"}}' "http://127.0.0.1:$admin_port/tasks" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).id))'
}

# Waits up to 30 s for the task to be FINISHED at the master.
finished() {
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$admin_port/tasks" | node -e '
      let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
        const task = JSON.parse(s).find((t) => t.id === process.argv[1])
        process.exit(task !== undefined && task.status === "FINISHED" ? 0 : 1)
      })' "$1" && return 0
    sleep 0.1
  done
  echo "task $1 not FINISHED within 30 s"; curl -s "http://127.0.0.1:$admin_port/tasks"; echo
  tail -n 30 "$work/worker.log"
  return 1
}

# The README's worker and master at their defaults: no port, no address given.
run_worker() {
  admin_port=9667
  for port in 9666 9667; do
    port_free "$port" || { echo "port $port is taken on this machine: the README's defaults cannot be run"; return 1; }
  done
  start_master || return 1
  for _ in $(seq 1 50); do grep -q "master serving on 127.0.0.1:9666" "$work/master.log" && break; sleep 0.1; done
  grep -q "master serving on 127.0.0.1:9666" "$work/master.log" || { echo "not on 9666:"; cat "$work/master.log"; return 1; }
  (cd "$work/node" && unset MASTER_ADDRESS && exec node dist/worker.js >"$work/worker.log" 2>&1) &
  local worker_pid=$!
  pids+=("$worker_pid")
  local first
  first=$(enqueue one) && finished "$first" || return 1
  echo "task $first finished"
  { kill -9 "$master_pid" && wait "$master_pid"; } 2>/dev/null
  start_master || return 1
  local second
  second=$(enqueue two) && finished "$second" || return 1
  echo "task $second finished after the master restarted"
  kill -TERM "$worker_pid"
  wait "$worker_pid"
  local code=$?
  [ "$code" -eq 0 ] || { echo "the worker exited with $code on SIGTERM"; tail -n 30 "$work/worker.log"; return 1; }
  grep -q "crawling https://example.com/two" "$work/worker.log"
}

# Next to effect 4 the install must fail at once, naming effect.
refuses_effect_4() {
  local dir="$work/effect4"
  mkdir -p "$dir"
  printf '{ "name": "consumer", "private": true, "type": "module" }\n' >"$dir/package.json"
  if (cd "$dir" && npm_install "$work/$(cat "$work/tarball")" effect@4 >"$dir/out" 2>&1); then
    echo "npm installed the package next to effect 4"; return 1
  fi
  cat "$dir/out"
  grep -q "ERESOLVE" "$dir/out" && grep -q "effect" "$dir/out"
}

effect=$(version effect)
platform=$(version @effect/platform)
platform_node=$(version @effect/platform-node)
grpc=$(version @grpc/grpc-js)

step "npm pack builds the package" pack
step "the peers alone, for comparison" bash -c "mkdir -p '$work/peers' && cd '$work/peers' && printf '{ \"name\": \"peers\", \"private\": true }' >package.json && npm install --prefer-offline --no-audit --no-fund --loglevel=error effect@$effect @effect/platform@$platform @grpc/grpc-js@$grpc"
step "size of the peers alone" size peers
step "a core consumer installs it with effect@$effect @effect/platform@$platform @grpc/grpc-js@$grpc" \
  project core "effect@$effect" "@effect/platform@$platform" "@grpc/grpc-js@$grpc"
step "the core consumer has one effect, one grpc-js" single_copies core
step "the core consumer has no @effect/platform-node" core_has_no_node_peer
step "size of the core consumer" size core
step "a Node consumer adds @effect/platform-node@$platform_node" \
  project node "effect@$effect" "@effect/platform@$platform" "@grpc/grpc-js@$grpc" "@effect/platform-node@$platform_node"
step "the Node consumer has one effect, one grpc-js" single_copies node
step "size of the Node consumer" size node
step "tools for the checks: typescript, @types/node, vitest, @effect/vitest" \
  bash -c "cd '$work/node' && npm install --prefer-offline --no-audit --no-fund --loglevel=error -D typescript@$(version typescript) @types/node@$(version @types/node) vitest@$(version vitest) @effect/vitest@$(version @effect/vitest)"
step "the TypeScript blocks of the README and docs/ are extracted" extract_blocks
step "every block type-checks under strict settings against the package" typecheck
step "under skipLibCheck false, with @types/ws and the DOM lib as the README says, every block type-checks" strict_libs
step "the README's test block passes" test_block
step "the README's worker runs a task, the master is killed and restarted, it runs another, SIGTERM stops it" run_worker
step "next to effect 4 the install fails with npm's peer-dependency error naming effect" refuses_effect_4

echo
cat "$work/sizes" 2>/dev/null
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
