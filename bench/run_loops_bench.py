#!/usr/bin/python3
"""bench/run_loops_bench.py - the chat room on 1 loop against 2 loops (issue 5).

Builds (or reuses) the release build of bench/run_ws_bench.py, then drives the
example chat's 1 000-client room with bench/loadgen, 1 and 4 senders, 16 messages
in flight each, in these set-ups (a fresh server for every run):

  1 loop,  server on CPU 0,        loadgen on CPU 1   (run_ws_bench.py's set-up)
  2 loops, server on CPU 0,        loadgen on CPU 1   (two loops sharing one core)
  2 loops, server on CPUs 0 and 1, loadgen on CPU 1   (loop 1 shares loadgen's core)
  1 loop and 2 loops, nothing pinned

The server runs with --threads 1 or 2 (cch_ws_run_loops: loop 0 accepts and hands
the clients to the loops, 500 each; a group_send reaches both halves through the
one memory layer). On a 2-CPU machine nothing gives the two loops and loadgen a
core each: the table says what each arrangement costs, not how far 2 loops scale.

Each cell is run --repeat times (default 3); the table shows the median run by
deliveries/s with the range; a run that other processes disturbed by more than
--max-other busy CPUs is run again (at most twice).

Usage: /usr/bin/python3 bench/run_loops_bench.py [--build DIR] [--repeat R]
           [--duration S] [--warmup S] [--capacity N] [--quick] [--json FILE]
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (the chat server)
import run_ws_bench as wsb  # noqa: E402  (build, loadgen runner, formatting)

SETUPS = [  # (label, loops, server CPUs or None)
    ("1 loop, server on CPU 0", 1, "0"),
    ("2 loops, server on CPU 0", 2, "0"),
    ("2 loops, server on CPUs 0-1", 2, "0,1"),
    ("1 loop, not pinned", 1, None),
    ("2 loops, not pinned", 2, None),
]


def busy_cpus(interval=0.5):
    """CPUs kept busy by everything over `interval` seconds (/proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)
    b0, t0 = sample()
    time.sleep(interval)
    b1, t1 = sample()
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit, max_wait):
    """Waits (at most max_wait s) until other processes keep under `limit` CPUs busy."""
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        b = busy_cpus()
        if b < limit:
            return
        wsb.log("    (waiting: other processes keep %.2f CPUs busy)" % b)
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="/tmp/cchannels-bench",
                    help="release build directory (made if missing)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--capacity", type=int, help="the chat's --capacity (default: its own, 100)")
    ap.add_argument("--quick", action="store_true", help="one run per cell, 1 s windows")
    ap.add_argument("--max-other", type=float, default=0.1)
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each run, wait up to this many seconds for a quiet machine")
    ap.add_argument("--json", help="write every run's loadgen result here")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.duration, a.warmup = 1, 1.0, 0.5
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        sys.exit("needs 2 CPUs and taskset")
    started = time.monotonic()
    wsb.log("building in %s ..." % a.build)
    chat, loadgen = wsb.build(a.build)
    m = wsb.machine()
    timeout = a.warmup + a.duration + 60
    runs, rows = [], []
    for senders in (1, 4):
        for label, loops, cpus in SETUPS:
            results = []
            for _ in range(a.repeat):
                for attempt in range(3):
                    if a.wait_quiet:
                        wait_quiet(a.max_other, a.wait_quiet)
                    srv = benchlib.ChatServer(
                        chat, ["--threads", str(loops), "--log-level", "warn"]
                        + (["--capacity", str(a.capacity)] if a.capacity else []),
                        ["taskset", "-c", cpus] if cpus else [])
                    try:
                        # loadgen on CPU 1 when the server is pinned, else unpinned too
                        r = wsb.run_loadgen(loadgen, srv, "/ws/chat/bench/",
                                            ["-c", str(a.clients), "-s", str(senders),
                                             "-f", "16", "-w", str(a.warmup),
                                             "-d", str(a.duration)],
                                            cpus is not None, timeout)
                    finally:
                        err = srv.stop()
                    r.update(server_log=err[-2000:], attempt=attempt, setup=label,
                             loops=loops)
                    runs.append(r)
                    if r["other_busy_cpus"] <= a.max_other:
                        break
                    wsb.log("    (rerun: other processes kept %.2f CPUs busy)" %
                            r["other_busy_cpus"])
                results.append(r)
            results.sort(key=lambda r: r["deliveries_per_s"])
            med = results[len(results) // 2]
            lo, hi = results[0]["deliveries_per_s"], results[-1]["deliveries_per_s"]
            rows.append((senders, label, med, lo, hi, results))
            wsb.log("%d sender(s), %-28s %.2f M/s (%.2f-%.2f), p99 %s us, server %.0f ns/deliv"
                    % (senders, label + ":", med["deliveries_per_s"] / 1e6, lo / 1e6, hi / 1e6,
                       wsb.us(med["lat_p99_us"]), med["server_cpu_ns_per_delivery"]))
    out = ["Machine: `nproc` = %s, CPU \"%s\", Linux %s, %s. Date: %s." %
           (m["nproc"], m["cpu"], m["kernel"], m["compiler"], m["date"]), "",
           "%d clients in one room, 16 messages in flight per sender, 32-byte messages, "
           "channel capacity %s; each cell: a fresh server, %d run%s of %g s after %g s of "
           "warm-up, the median by deliveries/s with the range; `dropped`: messages clients "
           "missed (a full channel), in all the cell's runs. loadgen is on CPU 1 whenever "
           "the server is pinned." % (a.clients, a.capacity or "100 (the default)", a.repeat,
                                      "" if a.repeat == 1 else "s", a.duration, a.warmup), "",
           "| senders | server | deliveries/s (range) | p50 | p99 | server CPU/delivery "
           "| dropped | other load |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for senders, label, med, lo, hi, results in rows:
        missing = sum(r["missing"] for r in results)
        out.append("| %d | %s | %s (%s–%s) | %s µs | %s µs | %.0f ns | %s | %.2f |" % (
            senders, label, wsb.fmt_rate(med["deliveries_per_s"]), wsb.fmt_rate(lo),
            wsb.fmt_rate(hi), wsb.us(med["lat_p50_us"]), wsb.us(med["lat_p99_us"]),
            med["server_cpu_ns_per_delivery"], missing,
            max(r["other_busy_cpus"] for r in results)))
    out.append("")
    out.append("Whole run: %.0f s." % (time.monotonic() - started))
    print("\n".join(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": m, "runs": runs}, f, indent=1)
    errors = [r for r in runs if r["errors"] and r["errors"] != r["missing"]]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
