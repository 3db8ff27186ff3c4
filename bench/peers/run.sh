#!/usr/bin/env bash
# run.sh: `make bench-peers`. Starts squall, etcd, ZooKeeper and Redis one after the other, each as
# 3 members on 127.0.0.1 only, runs build/bench/peers-bench's cases against each, stops every
# process it started (by pid) and prints one key=value line per (system, case), then a table of
# squall's ratios to each peer.
# Env: BUILD_DIR (default build/ beside bench/), SYSTEMS ("squall etcd zookeeper redis"),
# CASES ("put_durable put_volatile put_nowait get get_stable async"; each system runs those it
# has), CLIENTS ("1 16"), SIZES ("256 4096"), SECONDS_PER_CASE (5), WARMUP_SECONDS (1).
set -euo pipefail

prog="bench-peers"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
build=$(cd "$build" && pwd) || { echo "$prog: no build directory $build" >&2; exit 1; }
SYSTEMS=${SYSTEMS:-squall etcd zookeeper redis}
CASES=${CASES:-put_durable put_volatile put_nowait get get_stable async}
CLIENTS=${CLIENTS:-1 16}
SIZES=${SIZES:-256 4096}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-5}
WARMUP_SECONDS=${WARMUP_SECONDS:-1}
# The async case: squall only, this many clients with this many puts in flight each.
ASYNC_CLIENTS=16
ASYNC_INFLIGHT=16
# Clients that write every key once before a size's cases (so that gets hit).
FILL_CLIENTS=16
READY_TIMEOUT_S=60
# Bounds each peers-bench run beyond its own duration: a server that stops answering cannot
# hang the matrix.
CASE_SLACK_S=120

export SQUALLD=$build/squalld SQUALL=$build/squall
bench=$build/bench/peers-bench
local_tool=$root/tools/squall-local
for b in "$SQUALLD" "$SQUALL" "$bench"; do
  [ -x "$b" ] || { echo "$prog: missing $b (make bench-peers builds it once" \
    "scripts/install-deps --bench has installed hiredis, zookeeper_mt and libcurl)" >&2; exit 1; }
done
for cmd in etcd java redis-server ss; do
  command -v "$cmd" >/dev/null || { echo "$prog: no $cmd (scripts/install-deps --bench)" >&2; exit 1; }
done
zk_jar=/usr/share/java/zookeeper.jar
zk_log_jar=/usr/share/java/slf4j-simple.jar # the servers' log lines, to stderr
for f in "$zk_jar" "$zk_log_jar"; do
  [ -r "$f" ] || { echo "$prog: no $f (scripts/install-deps --bench)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/squall-bench-peers.XXXXXX")
results=$tmp/results
: >"$results"
pids=()         # every server process started here (squall's members: squall-local's pid files)
squall_up=0
bench_pid= # the peers-bench run under way
failures=0

# stop_pids PID...: SIGTERM, up to 10 s to exit, then SIGKILL; each is a child of this shell.
stop_pids() {
  local p i alive
  for p in "$@"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for ((i = 0; i < 100; i++)); do
    alive=0
    for p in "$@"; do
      if kill -0 "$p" 2>/dev/null; then alive=1; fi
    done
    [ $alive = 1 ] || break
    sleep 0.1
  done
  for p in "$@"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

stop_all() {
  if [ $squall_up = 1 ]; then
    "$local_tool" down --dir "$tmp/squall" >/dev/null 2>&1 || true
    squall_up=0
  fi
  if [ ${#pids[@]} -gt 0 ]; then
    stop_pids "${pids[@]}"
  fi
  pids=()
}

finish() {
  local rc=$?
  if [ -n "$bench_pid" ]; then
    stop_pids "$bench_pid"
  fi
  stop_all
  rm -rf "$tmp"
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every system uses ports in base..base+102 (squall-local: base..base+2 and base+100..base+102;
# etcd +10.. and +20..; ZooKeeper +30.., +40.. and +50..; Redis +60..). The base comes from our pid,
# so that concurrent runs differ, and moves on while any port of the range is taken.
base=
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  b=$((20000 + ($$ * 7919 + attempt * 4099) % 12000)) # 20000..32102: below the ephemeral ports
  if [ -z "$(ss -Htanu "( sport >= :$b and sport <= :$((b + 102)) )" 2>/dev/null)" ]; then
    base=$b
    break
  fi
done
[ -n "$base" ] || { echo "$prog: found no free range of 103 ports" >&2; exit 1; }

# log_tails FILE...: the last lines of each server log, for a failed start or a crash.
log_tails() {
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    echo "--- $f (last 15 lines):" >&2
    tail -n 15 "$f" >&2
  done
}

# wait_ready SYSTEM MEMBERS LOG...: until a put works through every member (peers-bench --case
# ready), failing at once when one of our servers has exited.
wait_ready() {
  local sys=$1 members=$2 p deadline=$((SECONDS + READY_TIMEOUT_S))
  shift 2
  while [ $SECONDS -lt $deadline ]; do
    if "$bench" --system "$sys" --members "$members" --case ready --ready-timeout 2 2>/dev/null; then
      return 0
    fi
    for p in "${pids[@]}"; do
      if ! kill -0 "$p" 2>/dev/null; then
        echo "$prog: a $sys server (pid $p) exited while starting" >&2
        log_tails "$@"
        return 1
      fi
    done
  done
  echo "$prog: $sys did not serve within $READY_TIMEOUT_S s:" >&2
  "$bench" --system "$sys" --members "$members" --case ready --ready-timeout 2 || true
  log_tails "$@"
  return 1
}

start_squall() {
  local dir=$tmp/squall
  mkdir -p "$dir"
  squall_up=1
  if ! "$local_tool" up 3 --dir "$dir" --base-port "$base" >"$dir/up.out" 2>&1; then
    echo "$prog: squall members did not start:" >&2
    log_tails "$dir/up.out" "$dir"/m*.err
    return 1
  fi
  members=$(cat "$dir/members")
  "$SQUALL" --member "$members" pool create /bp persistent >/dev/null
  "$SQUALL" --member "$members" pool create /bv volatile >/dev/null
  logs=("$dir"/m0.err "$dir"/m1.err "$dir"/m2.err)
  wait_ready squall "$members" "${logs[@]}"
}

start_etcd() {
  local i cluster="" dir=$tmp/etcd
  mkdir -p "$dir"
  members=""
  logs=()
  for i in 0 1 2; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$((base + 20 + i))"
    members+="${members:+,}127.0.0.1:$((base + 10 + i))"
  done
  for i in 0 1 2; do
    # The election timeout is squall's heartbeat timeout on this machine (3 s): a busy 2-core
    # box should not make either of them change leaders mid-case.
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-peer-urls "http://127.0.0.1:$((base + 20 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 20 + i))" \
      --listen-client-urls "http://127.0.0.1:$((base + 10 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((base + 10 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-peers-$$" \
      --heartbeat-interval 100 --election-timeout 3000 >"$dir/e$i.log" 2>&1 &
    pids+=($!)
    logs+=("$dir/e$i.log")
  done
  wait_ready etcd "$members" "${logs[@]}"
}

start_zookeeper() {
  local i dir=$tmp/zookeeper servers=()
  mkdir -p "$dir"
  members=""
  logs=()
  for i in 1 2 3; do
    servers+=("server.$i=127.0.0.1:$((base + 40 + i - 1)):$((base + 50 + i - 1))")
    members+="${members:+,}127.0.0.1:$((base + 30 + i - 1))"
  done
  for i in 1 2 3; do
    mkdir -p "$dir/z$i"
    echo "$i" >"$dir/z$i/myid"
    # forceSync stays at its default (yes): the transaction log is fsynced before an ack.
    {
      echo "tickTime=2000"
      echo "initLimit=10"
      echo "syncLimit=5"
      echo "dataDir=$dir/z$i"
      echo "clientPort=$((base + 30 + i - 1))"
      echo "clientPortAddress=127.0.0.1"
      echo "admin.enableServer=false"
      echo "4lw.commands.whitelist=srvr,ruok"
      printf '%s\n' "${servers[@]}"
    } >"$dir/z$i.cfg"
    java -Xms256m -Xmx256m -XX:-UsePerfData -Djava.net.preferIPv4Stack=true -cp "$zk_jar:$zk_log_jar" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/z$i.cfg" >"$dir/z$i.log" 2>&1 &
    pids+=($!)
    logs+=("$dir/z$i.log")
  done
  wait_ready zookeeper "$members" "${logs[@]}"
}

start_redis() {
  local i port dir=$tmp/redis
  local master=$((base + 60))
  mkdir -p "$dir"
  members=""
  logs=()
  for i in 0 1 2; do
    port=$((base + 60 + i))
    members+="${members:+,}127.0.0.1:$port"
    mkdir -p "$dir/r$i"
    local replica=()
    [ "$i" = 0 ] || replica=(--replicaof 127.0.0.1 "$master")
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --daemonize no \
      --appendonly yes --appendfsync always --save "" --dir "$dir/r$i" \
      ${replica[@]+"${replica[@]}"} >"$dir/r$i.log" 2>&1 &
    pids+=($!)
    logs+=("$dir/r$i.log")
  done
  wait_ready redis "$members" "${logs[@]}"
}

# Which cases each system has, in the order they run (puts before gets: the gets read what
# the fill and the puts wrote, at the same size).
system_cases() {
  case $1 in
    squall) echo "put_durable put_volatile async get get_stable" ;;
    etcd | zookeeper) echo "put_durable get" ;;
    redis) echo "put_durable put_volatile put_nowait get" ;;
  esac
}

selected() { # selected WORD LIST...
  local w=$1 x
  shift
  for x in "$@"; do
    [ "$x" = "$w" ] && return 0
  done
  return 1
}

# servers_alive SYSTEM: 0 while every server of the system runs; otherwise names the dead one.
servers_alive() {
  local p f
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "$prog: $1 server pid $p is gone" >&2; return 1; }
  done
  for f in "$tmp"/squall/m*.pid; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null || { echo "$prog: squall member pid $p is gone" >&2; return 1; }
  done
}

# bench_run SYSTEM ARGS...: one peers-bench run; its line goes to stdout and the results. It
# runs in the background so that a signal to this script is handled at once (bash runs traps
# only between foreground commands, but interrupts `wait`).
bench_run() {
  local sys=$1 out rc=0
  shift
  timeout -k 5 $((${SECONDS_PER_CASE%.*} + CASE_SLACK_S)) "$bench" --system "$sys" \
    --members "$members" --seconds "$SECONDS_PER_CASE" --warmup "$WARMUP_SECONDS" "$@" \
    >"$tmp/out" &
  bench_pid=$!
  wait "$bench_pid" || rc=$?
  bench_pid=
  out=$(cat "$tmp/out")
  if [ -n "$out" ]; then
    echo "$out"
    echo "$out" >>"$results"
  fi
  if [ $rc -ne 0 ]; then
    echo "$prog: peers-bench --system $sys $* exited with $rc" >&2
    failures=$((failures + 1))
  fi
  servers_alive "$sys"
}

run_system() {
  local sys=$1 size c n cases
  read -r -a cases <<<"$(system_cases "$sys")"
  local todo=() wanted
  read -r -a wanted <<<"$CASES"
  for c in "${cases[@]}"; do
    if selected "$c" "${wanted[@]}"; then todo+=("$c"); fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  "start_$sys" || { failures=$((failures + 1)); stop_all; return 0; }
  for size in $SIZES; do
    bench_run "$sys" --case fill --clients "$FILL_CLIENTS" --size "$size" || break
    for c in "${todo[@]}"; do
      if [ "$c" = async ]; then
        bench_run "$sys" --case async --clients "$ASYNC_CLIENTS" --inflight "$ASYNC_INFLIGHT" \
          --size "$size" || break 2
        continue
      fi
      for n in $CLIENTS; do
        bench_run "$sys" --case "$c" --clients "$n" --size "$size" || break 3
      done
    done
  done
  if ! servers_alive "$sys" 2>/dev/null; then
    failures=$((failures + 1))
    log_tails "${logs[@]}"
  fi
  stop_all
}

for sys in $SYSTEMS; do
  case $sys in
    squall | etcd | zookeeper | redis) run_system "$sys" ;;
    *) echo "$prog: unknown system $sys (squall, etcd, zookeeper, redis)" >&2; exit 2 ;;
  esac
done

# squall's ratios: ops/s ratio = squall / peer (above 1: squall does more), p50 ratio =
# squall / peer (below 1: squall answers sooner). Each squall case against the peer's case of
# the same durability and read kind.
awk '
  function kv(name,   i, a) {
    for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == name) return a[2] }
    return ""
  }
  {
    k = kv("system") SUBSEP kv("case") SUBSEP kv("clients") SUBSEP kv("size")
    ops[k] = kv("ops_per_s"); p50[k] = kv("p50_us")
    if (kv("system") == "squall" && kv("case") != "async") rows[++n] = k
  }
  function cell(sq, peer) {
    if (!(peer in ops) || ops[peer] + 0 == 0 || p50[peer] + 0 == 0) return "-"
    return sprintf("%.2f / %.2f", ops[sq] / ops[peer], p50[sq] / p50[peer])
  }
  END {
    if (n == 0) exit
    peer_case["put_durable"] = "put_durable"; peer_case["put_volatile"] = "put_volatile"
    peer_case["get"] = "get"; peer_case["get_stable"] = "get"
    print ""
    print "squall / peer, ops/s ratio and p50 ratio (\"2.00 / 0.50\": twice the throughput, half the median latency)"
    print ""
    print "| case | clients | size | squall ops/s | squall p50 us | vs etcd | vs zookeeper | vs redis |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= n; i++) {
      split(rows[i], f, SUBSEP)
      line = sprintf("| %s | %s | %s | %s | %s", f[2], f[3], f[4], ops[rows[i]], p50[rows[i]])
      split("etcd zookeeper redis", peers, " ")
      for (j = 1; j <= 3; j++) {
        pc = peer_case[f[2]]
        # only etcd reads linearizably, like get_stable; the others read the member they ask
        if (f[2] == "get_stable" && peers[j] != "etcd") pc = ""
        line = line sprintf(" | %s", pc == "" ? "-" : cell(rows[i], peers[j] SUBSEP pc SUBSEP f[3] SUBSEP f[4]))
      }
      print line " |"
    }
  }' "$results"

[ $failures -eq 0 ] || { echo "$prog: $failures failure(s)" >&2; exit 1; }
