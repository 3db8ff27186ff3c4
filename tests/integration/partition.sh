#!/usr/bin/env bash
# partition.sh: partitions of a 3-member key-value group, each member in a network namespace of
# its own on a bridge (all created here, in namespaces of their own, and removed at exit; the
# addresses are 198.18.0.0/24, the benchmarking range, inside those namespaces only), cut with
# iptables inside the members' namespaces. Heartbeat timeout T = $SQ_TEST_HEARTBEAT_MS (1000).
#   A. member 2 cut off for 10 s while a writer runs: the others remove it; it stops on its
#      minority side, and once the cut heals the same process joins again by itself; no put
#      acknowledged before, during or after is lost, at any member
#   B. member 0 (the leader) cut off alone: it stops serving writes (a put through it alone
#      fails), the other two go on; after the heal it is back
# Needs root, ip (iproute2) and iptables; fails, rather than skip, without them.
# Usage: partition.sh SQUALLD SQUALL KV_CHECK
SQUALLD=$1
SQUALL=$2
KV_CHECK=$3
trap '' PIPE
. "$(dirname "$0")/lib.sh"
HB_MS=${SQ_TEST_HEARTBEAT_MS:-1000}
[ "$(id -u)" = 0 ] || fail "partition.sh needs root (network namespaces, iptables)"
command -v ip > /dev/null || fail "ip (iproute2) is missing: scripts/install-deps installs it"
command -v iptables > /dev/null || fail "iptables is missing: scripts/install-deps installs it"

TAG=sqp$$            # namespace and interface names of this run (interface names <= 15 bytes)
NSB=${TAG}br         # the bridge's namespace
NSC=${TAG}c          # the clients' namespace
NET=198.18.0
ns_of() { echo "${TAG}m$1"; }
addr_of() { echo "$NET.$((10 + $1))"; }
NAMESPACES=()
teardown() {
  cleanup # the members first (by pid), then their namespaces
  # deleting a namespace deletes the veth ends in it, and their peers
  for n in ${NAMESPACES[@]+"${NAMESPACES[@]}"}; do ip netns del "$n" 2>/dev/null; done
}
trap teardown EXIT

# A bridge in its own namespace, and one veth from it to each member's namespace and the clients'.
ip netns add "$NSB" || fail "ip netns add"
NAMESPACES+=("$NSB")
ip -n "$NSB" link add br0 type bridge || fail "bridge"
ip -n "$NSB" link set br0 up
ip -n "$NSB" link set lo up
attach() { # attach NAMESPACE ADDRESS INDEX
  ip netns add "$1" || fail "ip netns add $1"
  NAMESPACES+=("$1")
  ip -n "$1" link add eth0 type veth peer name "p$3" netns "$NSB" || fail "veth for $1"
  ip -n "$NSB" link set "p$3" master br0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
}
for i in 0 1 2; do attach "$(ns_of $i)" "$(addr_of $i)" "$i"; done
attach "$NSC" "$NET.100" 9
in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }

for i in 0 1 2; do
  {
    printf '[group]\nprovider = tcp\nlog_level = info\ndata_dir = %s/data\n' "$WORK"
    printf 'heartbeat_timeout_ms = %d\nconnect_timeout_ms = 5000\nmax_state_bytes = 16777216\n' "$HB_MS"
    printf '[self]\nid = %d\n' "$i"
    for j in 0 1 2; do
      printf '[member.%d]\nhost = %s\nport = 7400\nclient_port = 7500\n' "$j" "$(addr_of $j)"
    done
    printf '[subgroup.meta]\ndelivery = persistent\nwindow_size = 16\nmax_payload = 4096\n'
    printf '[subgroup.persistent]\ndelivery = persistent\nstore = persistent\nwindow_size = 16\nmax_payload = 8192\n'
  } > "$WORK/m$i.cfg"
done
for i in 0 1 2; do
  ip netns exec "$(ns_of $i)" "$SQUALLD" --config "$WORK/m$i.cfg" > "$WORK/m$i.out" 2> "$WORK/m$i.err" &
  PIDS+=($!)
  eval "PID_$i=$!"
done
MEMBERS="$(addr_of 0):7500,$(addr_of 1):7500,$(addr_of 2):7500"
for ((t = 0; t < 300; t++)); do
  [ "$(cat "$WORK"/m*.out 2>/dev/null | grep -c 'kv ready')" -ge 3 ] && break
  sleep 0.1
done
[ "$(cat "$WORK"/m*.out | grep -c 'kv ready')" -ge 3 ] || fail "the members did not start"
sq() { SQUALL_MEMBERS=$MEMBERS in_ns "$NSC" "$SQUALL" "$@"; }
sq pool create /p persistent > /dev/null || fail "pool create"
echo "3 members up in their namespaces; heartbeat timeout $HB_MS ms"

cut_off() { # cut_off I: member I loses its links to the other members (not to the clients)
  local j
  for j in 0 1 2; do
    [ "$j" = "$1" ] && continue
    in_ns "$(ns_of "$1")" iptables -A INPUT -s "$(addr_of "$j")" -j DROP
    in_ns "$(ns_of "$1")" iptables -A OUTPUT -d "$(addr_of "$j")" -j DROP
  done
}
heal() { in_ns "$(ns_of "$1")" iptables -F; }
# wait_log I TEXT COUNT SECONDS: until member I's log holds TEXT COUNT times
wait_log() {
  local t
  for ((t = 0; t < $4 * 10; t++)); do
    [ "$(grep -c "$2" "$WORK/m$1.err")" -ge "$3" ] && return 0
    sleep 0.1
  done
  return 1
}

echo "== A. member 2 cut off for 10 s while a writer runs"
in_ns "$NSC" "$KV_CHECK" writer "$MEMBERS" /p/a 6000 "$WORK/acked" > "$WORK/writer.out" 2>&1 &
KPID=$!
PIDS+=("$KPID")
sleep 1
cut_off 2
wait_log 0 "installed: members 0,1," 1 15 || fail "members 0 and 1 did not remove member 2"
wait_log 2 "minority side" 1 15 || fail "member 2 did not stop on its minority side"
during=$(wc -l < "$WORK/acked")
sleep 8
heal 2
wait_log 2 "rejoined the group" 1 40 || fail "member 2 did not rejoin after the heal"
kill -0 "$PID_2" 2>/dev/null || fail "member 2 exited"
wait "$KPID" || fail "writer: $(cat "$WORK/writer.out")"
reaped "$KPID"
[ "$(wc -l < "$WORK/acked")" = 6000 ] || fail "the writer had $(wc -l < "$WORK/acked") puts acknowledged"
in_ns "$NSC" "$KV_CHECK" verify "$MEMBERS" "$WORK/acked" || fail "acknowledged puts lost"
in_ns "$NSC" "$KV_CHECK" verify "$(addr_of 2):7500" "$WORK/acked" ||
  fail "member 2 misses acknowledged puts after rejoining"
echo "   removed, stopped on its side, rejoined after the heal (same process); $during puts acknowledged before the cut was noticed, 6000 in all, none lost"
grep -h "suspects member" "$WORK"/m*.err | head -2 | sed 's/^/   logged: /'

echo "== B. member 0, the leader, cut off alone"
cut_off 0
wait_log 1 "installed: members 1,2," 1 15 || fail "members 1 and 2 did not remove member 0"
wait_log 0 "minority side" 1 15 || fail "member 0 did not stop on its minority side"
rc=0
out=$(SQUALL_MEMBERS=$(addr_of 0):7500 in_ns "$NSC" "$SQUALL" --timeout 3000 put /p/b/minority x 2>&1) || rc=$?
[ "$rc" != 0 ] || fail "member 0 alone on its side took a put: $out"
echo "   a put through member 0 alone: exit $rc: ${out:0:160}"
SQUALL_MEMBERS="$(addr_of 1):7500,$(addr_of 2):7500" in_ns "$NSC" "$SQUALL" put /p/b/majority y > /dev/null ||
  fail "the majority side does not take puts"
heal 0
wait_log 0 "rejoined the group" 1 40 || fail "member 0 did not rejoin after the heal"
for ((t = 0; t < 100; t++)); do
  v=$(SQUALL_MEMBERS=$(addr_of 0):7500 in_ns "$NSC" "$SQUALL" get /p/b/majority 2>/dev/null) && break
  sleep 0.1
done
[ "$v" = y ] || fail "member 0 does not serve the put made while it was cut off"
kill -0 "$PID_0" 2>/dev/null || fail "member 0 exited"
echo "   stopped serving on its side; back after the heal, with the put made meanwhile"
echo "PASS"
