#!/usr/bin/env python3
"""chaos.py: squall under fire. Starts a group of 3 or 5 real squalld processes, each in a
network namespace of its own on a bridge the run creates (addresses from 198.18.0.0/15, the
benchmarking range, inside those namespaces only), under a supervisor that restarts a member
that exits (as systemd's Restart=on-failure would). Clients in another namespace
(chaos_client) record every operation while a nemesis, random from the seed, injects faults
one after another, each bounded in time and healed: partitions (a minority cut off, the leader
alone, a bridge, one-way), packet loss, kill -9 of one member, a majority or all, pauses
longer than the heartbeat timeout, clock jumps (libfaketime, when installed), a full disk
under one member (a small tmpfs), and two at once. Then every member is stopped and restarted
from its disk, the logs are read back, chaos_check checks the whole history, and the members'
own logs must hold one history (compared record for record up to the shortest).

  chaos.py --bin BUILD_DIR [--members 3|5] [--duration S] [--seed N] [--out DIR]
           [--heartbeat-ms MS] [--workers N] [--quiet-s S] [--faults KIND,...]
           [--client-timeout-ms MS] [--keep]

Needs root, ip (iproute2) and iptables. Everything it creates (processes, namespaces, the
tmpfs) is removed on exit, also after a failure or Ctrl-C; the work directory is kept when the
run fails or with --keep. Exit status: 0 no anomaly, 1 anomalies (see DIR/report.txt), 2 the
run could not be made."""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

FAKETIME_LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/faketime/libfaketimeMT.so.1"]


def log(msg):
    print(time.strftime("%H:%M:%S") + " " + msg, flush=True)


def sh(*args, check=True, quiet=False):
    r = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


class Cluster:
    """The namespaces, the members' configurations and their supervisors."""

    def __init__(self, args, work):
        self.n = args.members
        self.args = args
        self.work = work
        self.tag = "sqx%d" % (os.getpid() % 100000)
        self.net = "198.19.%d" % (os.getpid() % 200 + 20)
        self.namespaces = []
        self.mounts = []
        self.procs = [None] * self.n
        self.held = [False] * self.n  # a held member is not restarted
        self.stopping = False
        self.lock = threading.Lock()
        self.threads = []
        self.exits = 0
        self.faketime = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
        self.disk_member = self.n - 1  # its data directory is a small tmpfs
        self.resets = None  # where note_reset writes, while the clients run

    def ns(self, i):
        return "%sm%d" % (self.tag, i)

    def addr(self, i):
        return "%s.%d" % (self.net, 10 + i)

    @property
    def client_ns(self):
        return self.tag + "c"

    def members_arg(self):
        return ",".join("%s:7500" % self.addr(i) for i in range(self.n))

    # ---- network ----
    def setup_network(self):
        br = self.tag + "br"
        sh("ip", "netns", "add", br)
        self.namespaces.append(br)
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for idx, (name, address) in enumerate(
                [(self.ns(i), self.addr(i)) for i in range(self.n)] +
                [(self.client_ns, "%s.100" % self.net)]):
            sh("ip", "netns", "add", name)
            self.namespaces.append(name)
            sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name",
               "p%d" % idx, "netns", br)
            sh("ip", "-n", br, "link", "set", "p%d" % idx, "master", "br0", "up")
            sh("ip", "-n", name, "addr", "add", address + "/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")

    def ipt(self, i, *rule):
        sh("ip", "netns", "exec", self.ns(i), "iptables", *rule)

    def cut(self, a, b):
        """a no longer hears b (one way)."""
        self.ipt(a, "-A", "INPUT", "-s", self.addr(b), "-j", "DROP")

    def heal_network(self):
        for i in range(self.n):
            self.ipt(i, "-F")

    # ---- members ----
    def write_configs(self):
        hb = self.args.heartbeat_ms
        # The members authenticate each other, as an operator's would: every restart, rejoin
        # and partition heal below goes through the group-key handshake.
        key = os.path.join(self.work, "group.key")
        if not os.path.exists(key):
            sh(self.args.squalld, "--gen-key", key)
        for i in range(self.n):
            data = os.path.join(self.work, "data%d" % i)
            os.makedirs(data, exist_ok=True)
            if i == self.disk_member:
                # small, so that filling it is quick, but room for the log of the whole run
                # (which only grows: about 100 MiB per 600 s at 3 members here; seed 121 filled
                # 96 MiB with it)
                size_mb = max(96, int(self.args.duration))
                sh("mount", "-t", "tmpfs", "-o", "size=%dm" % size_mb, "tmpfs", data)
                self.mounts.append(data)
            with open(os.path.join(self.work, "m%d.cfg" % i), "w") as f:
                f.write("[group]\nprovider = tcp\nlog_level = info\ndata_dir = %s\n" % data)
                f.write("key_file = %s\n" % key)
                f.write("heartbeat_timeout_ms = %d\nconnect_timeout_ms = 10000\n" % hb)
                f.write("max_state_bytes = 16777216\nsegment_bytes = 4194304\n")
                f.write("[self]\nid = %d\n" % i)
                for j in range(self.n):
                    f.write("[member.%d]\nhost = %s\nport = 7400\nclient_port = 7500\n"
                            % (j, self.addr(j)))
                f.write("[subgroup.meta]\ndelivery = persistent\nwindow_size = 16\n"
                        "max_payload = 4096\n")
                f.write("[subgroup.persistent]\ndelivery = persistent\nstore = persistent\n"
                        "window_size = 64\nmax_payload = 8192\n")
                f.write("[subgroup.volatile]\ndelivery = atomic\nstore = volatile\n"
                        "window_size = 64\nmax_payload = 8192\n")

    def clock_file(self, i):
        return os.path.join(self.work, "clock%d" % i)

    def set_clock(self, i, offset_s):
        tmp = self.clock_file(i) + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+d\n" % offset_s)
        os.rename(tmp, self.clock_file(i))

    def start_supervisors(self):
        self.stopping = False
        for i in range(self.n):
            if self.faketime:
                self.set_clock(i, 0)
            t = threading.Thread(target=self.supervise, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def supervise(self, i):
        out = open(os.path.join(self.work, "m%d.log" % i), "a")
        env = dict(os.environ)
        if self.faketime:
            # only the wall clock moves: monotonic time (timeouts, heartbeats) stays true
            env.update(LD_PRELOAD=self.faketime, FAKETIME_TIMESTAMP_FILE=self.clock_file(i),
                       FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_CACHE_DURATION="1")
        while not self.stopping:
            if self.held[i]:
                time.sleep(0.05)
                continue
            out.write("=== start %.3f\n" % time.monotonic())
            out.flush()
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(i), self.args.squalld,
                                  "--config", os.path.join(self.work, "m%d.cfg" % i)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                 text=True, errors="replace")
            with self.lock:
                self.procs[i] = p
            for line in p.stdout:
                out.write(line)
                # a shard none of whose members is left starts empty (README, "Subgroups and
                # shards"): a volatile pool's keys are gone, which the checker must know
                if "starts empty" in line and "subgroup volatile" in line:
                    self.note_reset(i)
            out.flush()
            rc = p.wait()
            with self.lock:
                self.procs[i] = None
            out.write("=== exit %d at %.3f\n" % (rc, time.monotonic()))
            out.flush()
            if self.stopping:
                break
            self.exits += 1
            time.sleep(1.0)  # RestartSec
        out.close()

    def note_reset(self, i):
        with self.lock:
            if self.resets is not None:
                # a second early: the line is read a little after the view began, and
                # cutting early only checks less
                t = time.monotonic_ns() - 1000000000
                self.resets.write("reset volatile-started-empty-at-member-%d %d %d\n" % (i, t, t))
                self.resets.flush()

    def signal(self, i, sig):
        with self.lock:
            p = self.procs[i]
            if p is not None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
            return p is not None

    def stop_members(self):
        self.stopping = True
        for i in range(self.n):
            self.signal(i, signal.SIGCONT)
            self.signal(i, signal.SIGTERM)
        deadline = time.time() + 15
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))
        for i in range(self.n):
            self.signal(i, signal.SIGKILL)
        for t in self.threads:
            t.join(5)
        self.threads = []

    def teardown(self):
        self.stopping = True
        for i in range(self.n):
            self.signal(i, signal.SIGCONT)
            self.signal(i, signal.SIGKILL)
        for t in self.threads:
            t.join(5)
        for m in self.mounts:
            sh("umount", "-l", m, check=False)
        self.mounts = []
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)
        self.namespaces = []

    def in_client_ns(self, *cmd, **kw):
        return subprocess.run(["ip", "netns", "exec", self.client_ns] + list(cmd), **kw)


class Nemesis:
    """Faults one after another, random from the seed; each healed before the next."""

    def __init__(self, cluster, rng, hist):
        self.c = cluster
        self.rng = rng
        self.hist = hist
        self.count = 0
        self.kinds = {}

    def record(self, name, start, heal):
        self.hist.write("fault %s %d %d\n" % (name, start, heal))
        self.hist.flush()
        self.count += 1
        self.kinds[name.split(":")[0]] = self.kinds.get(name.split(":")[0], 0) + 1

    def choices(self):
        kinds = ["partition-minority", "partition-leader", "bridge", "one-way", "loss",
                 "kill-one", "kill-majority", "kill-all", "pause", "disk-full", "combined"]
        if self.c.faketime:
            kinds.append("clock")
        if self.c.args.faults:
            wanted = self.c.args.faults.split(",")
            unknown = [k for k in wanted if k not in kinds]
            if unknown:
                raise RuntimeError("unknown or unavailable faults: %s (there are: %s)"
                                   % (",".join(unknown), ",".join(kinds)))
            kinds = wanted
        return kinds

    def apply(self, kind):
        """Starts the fault; returns a function that heals it and its name."""
        c, n, rng = self.c, self.c.n, self.rng
        members = list(range(n))
        if kind == "partition-minority":
            minority = rng.sample(members, rng.randint(1, (n - 1) // 2))
            for a in minority:
                for b in members:
                    if b not in minority:
                        c.cut(a, b)
                        c.cut(b, a)
            return c.heal_network, "%s:%s" % (kind, "+".join(map(str, minority)))
        if kind == "partition-leader":
            leader = min(members)  # the lowest ranked member of a full view
            for b in members[1:]:
                c.cut(leader, b)
                c.cut(b, leader)
            return c.heal_network, "%s:%d" % (kind, leader)
        if kind == "bridge":
            order = rng.sample(members, n)
            bridge, rest = order[0], order[1:]
            half = len(rest) // 2
            left, right = rest[:half], rest[half:]
            for a in left:
                for b in right:
                    c.cut(a, b)
                    c.cut(b, a)
            return c.heal_network, "%s:%d" % (kind, bridge)
        if kind == "one-way":
            deaf = rng.choice(members)
            for b in members:
                if b != deaf:
                    c.cut(deaf, b)
            return c.heal_network, "%s:%d-hears-nobody" % (kind, deaf)
        if kind == "loss":
            victims = rng.sample(members, rng.randint(1, n))
            p = rng.choice([0.1, 0.2, 0.3])
            for v in victims:
                c.ipt(v, "-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability",
                      str(p), "-j", "DROP")
            return c.heal_network, "%s:%s@%g" % (kind, "+".join(map(str, victims)), p)
        if kind in ("kill-one", "kill-majority", "kill-all"):
            k = {"kill-one": 1, "kill-majority": n // 2 + 1, "kill-all": n}[kind]
            victims = rng.sample(members, k)
            for v in victims:
                c.held[v] = True
                c.signal(v, signal.SIGKILL)

            def heal():
                for v in victims:
                    c.held[v] = False
            return heal, "%s:%s" % (kind, "+".join(map(str, victims)))
        if kind == "pause":
            v = rng.choice(members)
            c.signal(v, signal.SIGSTOP)
            return (lambda: c.signal(v, signal.SIGCONT)), "%s:%d" % (kind, v)
        if kind == "clock":
            v = rng.choice(members)
            jump = rng.choice([-1, 1]) * rng.randint(30, 3600)
            c.set_clock(v, jump)
            return (lambda: c.set_clock(v, 0)), "%s:%d%+ds" % (kind, v, jump)
        if kind == "disk-full":
            v = c.disk_member
            filler = os.path.join(c.work, "data%d" % v, "filler")
            subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def heal():
                try:
                    os.unlink(filler)
                except FileNotFoundError:
                    pass
            return heal, "%s:%d" % (kind, v)
        if kind == "combined":
            a, b = rng.sample(["partition-minority", "one-way", "loss", "kill-one", "pause",
                               "disk-full"], 2)
            h1, n1 = self.apply(a)
            h2, n2 = self.apply(b)

            def heal():
                h1()
                h2()
            return heal, "combined:%s+%s" % (n1, n2)
        raise ValueError(kind)

    def run(self, until, stop_event):
        hb = self.c.args.heartbeat_ms / 1000.0
        while not stop_event.is_set():
            gap = self.rng.uniform(2.0, 5.0)
            kind = self.rng.choice(self.choices())
            hold = self.rng.uniform(1.5 * hb, 4.0 * hb) if kind == "pause" else \
                self.rng.uniform(2.0, 8.0)
            if time.monotonic() + gap + hold > until:
                break
            if stop_event.wait(gap):
                break
            start = time.monotonic_ns()
            heal, name = self.apply(kind)
            log("fault %s for %.1f s" % (name, hold))
            stop_event.wait(hold)
            heal()
            self.record(name, start, time.monotonic_ns())


def log_agreement(cluster, args):
    """After the last restart every member answered, so each took the shard's history from a
    holder (cutting what went past it): their logs of the persistent pool's subgroup must now be
    prefixes of one history, record for record, timestamps included. Compares each member's log
    up to the shortest one's last version (squalld --dump-log --upto)."""
    def dump(i, upto=None):
        cmd = [args.squalld, "--config", os.path.join(cluster.work, "m%d.cfg" % i),
               "--dump-log", "--subgroup", "persistent"]
        if upto is not None:
            cmd += ["--upto", "%#x" % upto]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode != 0 or not line.startswith("log "):
            raise RuntimeError("squalld --dump-log of member %d failed: %s" % (
                i, (r.stderr or r.stdout).strip()))
        return dict(kv.split("=", 1) for kv in line.split()[1:])
    lasts = [int(dump(i)["last"], 16) for i in range(cluster.n)]
    upto = min(lasts)
    hashes = [dump(i, upto) for i in range(cluster.n)]
    seen = sorted(set((h["upto_records"], h["upto_hash"]) for h in hashes))
    if len(seen) == 1 and all(h.get("has_upto") == "1" for h in hashes):
        return "logs: all %d members hold one history up to version %#x (%s records)\n" % (
            cluster.n, upto, seen[0][0])
    return "ANOMALY logs: the members' logs differ up to version %#x: %s\n" % (
        upto, "; ".join("member %d records=%s hash=%s has=%s" % (
            i, h["upto_records"], h["upto_hash"], h.get("has_upto")) for i, h in enumerate(hashes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the build directory")
    ap.add_argument("--members", type=int, default=3, choices=[3, 5])
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--quiet-s", type=float, default=15, help="fault-free time at the end")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--client-timeout-ms", type=int, default=15000,
                    help="bound on each client call: shorter leaves more calls unanswered")
    ap.add_argument("--faults", default=None,
                    help="only these kinds, comma-separated (default: all of them)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    args.squalld = os.path.join(args.bin, "squalld")
    client = os.path.join(args.bin, "chaos_client")
    check = os.path.join(args.bin, "chaos_check")
    squall = os.path.join(args.bin, "squall")
    for b in (args.squalld, client, check, squall):
        if not os.access(b, os.X_OK):
            print("chaos: %s is missing: build first (make build)" % b, file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces, iptables, a tmpfs)", file=sys.stderr)
        return 2
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            print("chaos: %s is missing: scripts/install-deps installs it" % tool,
                  file=sys.stderr)
            return 2
    work = args.out or tempfile.mkdtemp(prefix="squall-chaos-")
    os.makedirs(work, exist_ok=True)
    log("chaos: %d members, %.0f s, seed %d, work dir %s" % (args.members, args.duration,
                                                           args.seed, work))
    cluster = Cluster(args, work)
    rc = 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    client_proc = None
    try:
        cluster.setup_network()
        cluster.write_configs()
        if not cluster.faketime:
            log("chaos: libfaketime not installed: no clock faults (scripts/install-deps)")
        cluster.start_supervisors()
        members = cluster.members_arg()
        r = cluster.in_client_ns(client, "ready", "--members", members, "--seconds", "60")
        if r.returncode != 0:
            raise RuntimeError("the group did not start (see %s/m*.log)" % work)
        for pool, store in (("/p", "persistent"), ("/v", "volatile")):
            r = cluster.in_client_ns(squall, "--member", members, "pool", "create", pool, store,
                                     "--shards", "1", stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise RuntimeError("pool create %s: %s" % (pool, r.stderr.strip()))
        log("chaos: group up, pools /p (persistent) and /v (volatile)")

        hist_path = os.path.join(work, "history.txt")
        faults_path = os.path.join(work, "faults.txt")
        resets_path = os.path.join(work, "resets.txt")
        cluster.resets = open(resets_path, "w")
        total = args.duration + args.quiet_s
        client_proc = subprocess.Popen(
            ["ip", "netns", "exec", cluster.client_ns, client, "run", "--members", members,
             "--out", hist_path, "--seconds", str(total), "--workers", str(args.workers),
             "--watchers", "2", "--keys", "3", "--seed", str(args.seed),
             "--timeout-ms", str(args.client_timeout_ms)],
            stdout=open(os.path.join(work, "client.log"), "w"), stderr=subprocess.STDOUT)
        rng = random.Random(args.seed)
        stop = threading.Event()
        with open(faults_path, "w") as faults:
            nemesis = Nemesis(cluster, rng, faults)
            nemesis.run(time.monotonic() + args.duration, stop)
        cluster.heal_network()
        log("chaos: %d faults injected (%s); %.0f s without faults" % (
            nemesis.count, ", ".join("%s %d" % kv for kv in sorted(nemesis.kinds.items())),
            args.quiet_s))
        client_proc.wait()
        with cluster.lock:
            cluster.resets.close()
            cluster.resets = None
        log("chaos: clients done: " + open(os.path.join(work, "client.log")).read().strip())

        # durability: every member stopped, restarted from its disk, the logs read back
        cluster.stop_members()
        log("chaos: all members stopped; restarting them from their disks")
        cluster.start_supervisors()
        r = cluster.in_client_ns(client, "ready", "--members", members, "--seconds", "120")
        if r.returncode != 0:
            raise RuntimeError("the group did not come back after the restart")
        dump_path = os.path.join(work, "dump.txt")
        r = cluster.in_client_ns(client, "dump", "--members", members, "--out", dump_path,
                                 "--keys", "3")
        if r.returncode != 0:
            raise RuntimeError("reading the logs back failed")
        cluster.stop_members()
        agreement = log_agreement(cluster, args)

        report = os.path.join(work, "report.txt")
        with open(report, "w") as f:
            f.write("seed %d members %d duration %.0f s heartbeat %d ms\n" % (
                args.seed, args.members, args.duration, args.heartbeat_ms))
            f.write("member exits seen by the supervisor: %d\n" % cluster.exits)
            f.write(agreement)
        r = subprocess.run([check, "--report", report + ".check", hist_path, dump_path,
                            faults_path, resets_path])
        with open(report, "a") as f:
            f.write(open(report + ".check").read())
        os.unlink(report + ".check")
        rc = 0 if r.returncode == 0 and "ANOMALY" not in agreement else 1
        if nemesis.count == 0:
            with open(report, "a") as f:
                f.write("ANOMALY no fault was injected: nothing was tested\n")
            rc = 1
        print(open(report).read(), end="")
        log("chaos: %s (report %s)" % ("no anomaly" if rc == 0 else "ANOMALIES", report))
    except KeyboardInterrupt:
        log("chaos: interrupted")
        rc = 2
    except Exception as e:  # noqa: a failed set-up or step: say what, tear down
        log("chaos: %s" % e)
        rc = 2
    finally:
        if client_proc is not None and client_proc.poll() is None:
            client_proc.kill()
            client_proc.wait()
        cluster.teardown()
        if rc == 0 and not args.keep and args.out is None:
            shutil.rmtree(work, ignore_errors=True)
        elif rc != 0:
            log("chaos: work dir kept: %s" % work)
    return rc


if __name__ == "__main__":
    sys.exit(main())
