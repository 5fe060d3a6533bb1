#!/usr/bin/python3
"""bench/compare.py - one chat-room workload against every server of issue 5.

Drives the same room workload with bench/loadgen (N clients in one room, S senders,
16 messages in flight each) against each of these, cell by cell (every server runs a
cell before the next cell starts, so that the machine's drift stays out of the ratios),
with fresh processes for every run:

  cchannels-memory   examples/cchannels-chat, in-memory layer
  cchannels-redis    two cchannels-chat processes on one redis-server (started here, on
                     a free port); the clients are split between them (loadgen --ports)
  django-memory      Django Channels: `/usr/bin/python3 -m daphne`, the tutorial's
                     ChatConsumer and settings (tests/redis/django_chat, LAYER=memory),
                     InMemoryChannelLayer
  django-redis       the same with channels_redis (RedisChannelLayer), one daphne
  epoll-room         bench/epoll_room: the plain-C epoll room, the machine's limit

Reported per cell: deliveries/s, p50 and p99 latency, server CPU seconds per 1 000
deliveries (every server process summed, redis-server included) and, per server, RSS
per idle connection (a fresh server, N silent clients: (RSS with them - before) / N).
Every loadgen run is bounded in time: a cell that does not finish (e.g. Django with
1 000 clients still joining) is reported "n/a".

Latency at half the peak: for the largest room, each server is run again with every
sender keeping to a rate (loadgen --rate) that offers half the deliveries/s it reached
in its own closed-loop cell; p50 and p99 of that run are what "p99 at half the peak
load" means in issue 5.

Pinning (default when the machine has 2 or more CPUs; --no-pin to turn it off): every
server process and thread (redis-server included) runs on CPUs 0..N-2 and loadgen on
CPU N-1, so that the load generator never competes with the server it measures and
every server gets the same share of the machine.

Prints a Markdown table, writes the results as JSON (--json, default
compare-results.json in --out) and gnuplot PNGs of deliveries/s and p99 against room
size (--out, default /tmp/cchannels-compare; needs gnuplot, Debian gnuplot-nox).

Usage: /usr/bin/python3 bench/compare.py [--build DIR] [--quick] [--servers a,b,...]
           [--clients 10,100,1000] [--senders 1,4] [--duration S] [--warmup S]
           [--no-pin] [--no-half] [--out DIR] [--json FILE] [--no-plot]
           [--plot-only FILE]
--quick: 1 s per cell, 10 and 100 clients. --build: a build directory with the ws
adapter and the Redis layer (configured as a release build here if missing).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "redis"))
from redisutil import RedisServer  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, log, stop_process  # noqa: E402

SERVERS = ["cchannels-memory", "cchannels-redis", "django-memory", "django-redis",
           "epoll-room"]
LABELS = {
    "cchannels-memory": "cchannels (memory layer)",
    "cchannels-redis": "cchannels (Redis layer, 2 processes)",
    "django-memory": "Django Channels (daphne, in-memory layer)",
    "django-redis": "Django Channels (daphne, channels_redis)",
    "epoll-room": "plain-C epoll room (machine's limit)",
}


def build(builddir):
    if not os.path.exists(os.path.join(builddir, "build.ninja")):
        subprocess.run(["meson", "setup", builddir, "-Dbuildtype=release", "-Dtests=disabled",
                        "-Dredis=enabled"], cwd=SRC, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", builddir, "examples/cchannels-chat", "bench/loadgen",
                    "bench/epoll_room"], check=True, stdout=subprocess.DEVNULL)
    return {k: os.path.join(builddir, *v) for k, v in {
        "chat": ("examples", "cchannels-chat"), "loadgen": ("bench", "loadgen"),
        "epoll": ("bench", "epoll_room")}.items()}


def cpu_sets(pin):
    """(server CPUs, loadgen CPUs) as taskset lists, or (None, None) unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or not shutil.which("taskset"):
        return None, None
    return ",".join(map(str, cpus[:-1])), str(cpus[-1])


def pin_all_threads(pids, cpus):
    """Moves every thread of these processes onto `cpus` (taskset -a)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", cpus, str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


class Proc:
    def __init__(self, argv, env=None):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited (%d)" % (argv[0], self.proc.returncode))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("%s did not start listening" % argv[0])

    def stop(self):
        stop_process(self.proc)


class Setup:
    """The processes of one server kind: ports, pids (for CPU and RSS), teardown."""

    def __init__(self, kind, exe):
        self.procs, self.redis = [], None
        django_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
                          DJANGO_SETTINGS_MODULE="settings",
                          PYTHONPATH=os.path.join(SRC, "tests", "redis", "django_chat"))
        daphne = ["/usr/bin/python3", "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}",
                  "asgi:application"]
        chat = [exe["chat"], "--host", "127.0.0.1", "--port", "{port}", "--log-level", "error"]
        try:
            if kind == "cchannels-memory":
                self.procs.append(Proc(chat))
            elif kind == "cchannels-redis":
                self.redis = RedisServer()
                for _ in range(2):
                    self.procs.append(Proc(chat + ["--layer", self.redis.url]))
            elif kind == "django-memory":
                self.procs.append(Proc(daphne, dict(django_env, LAYER="memory")))
            elif kind == "django-redis":
                self.redis = RedisServer()
                self.procs.append(Proc(daphne, dict(django_env, LAYER="core",
                                                    REDIS_URL=self.redis.url)))
            elif kind == "epoll-room":
                self.procs.append(Proc([exe["epoll"], "--host", "127.0.0.1", "--port", "{port}"]))
            else:
                raise ValueError(kind)
        except BaseException:
            self.stop()
            raise

    def pids(self):
        p = [x.proc.pid for x in self.procs]
        if self.redis:
            p.append(self.redis.proc.pid)
        return p

    def stop(self):
        for p in self.procs:
            p.stop()
        if self.redis:
            self.redis.close()


def loadgen(exe, setup, clients, senders, inflight, warmup, duration, timeout, rate=0.0,
            cpus=None):
    ports = [p.port for p in setup.procs]
    cmd = (["taskset", "-c", cpus] if cpus else []) + [
           exe["loadgen"], "--url", "ws://127.0.0.1:%d/ws/chat/bench/" % ports[0],
           "--ports", ",".join(map(str, ports)),
           "--server-pid", ",".join(map(str, setup.pids())), "--json",
           "--clients", str(clients), "--senders", str(senders), "--inflight", str(inflight),
           "--warmup", str(warmup), "--duration", str(duration),
           "--connect-timeout", str(max(5, timeout / 2)), "--stall", "2"]
    if rate > 0:
        cmd += ["--rate", "%.3f" % rate]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %.0f s" % timeout}
    lines = [ln for ln in p.stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": "no result (exit %d): %s" % (p.returncode,
                                                      p.stderr.decode(errors="replace")[-300:])}
    r = json.loads(lines[-1])
    if r.get("clients_open", 0) < clients:
        r["error"] = "only %d of %d clients joined" % (r.get("clients_open", 0), clients)
    return r


def fmt_rate(v):
    return "n/a" if v is None else ("%.2f M" % (v / 1e6) if v >= 1e6 else
                                    "%.0f k" % (v / 1e3) if v >= 1e4 else "%.0f" % v)


def fmt_us(v):
    return "n/a" if v is None else ("%.1f ms" % (v / 1e3) if v >= 1000 else "%.0f µs" % v)


def cell(r):
    """The reported figures of one loadgen result (None where it failed)."""
    if not r or r.get("error") or not r.get("deliveries"):
        return {"deliveries_per_s": None, "p50_us": None, "p99_us": None,
                "server_cpu_s_per_1000": None, "error": (r or {}).get("error", "no deliveries")}
    return {"deliveries_per_s": r["deliveries_per_s"], "p50_us": r["lat_p50_us"],
            "p99_us": r["lat_p99_us"],
            "server_cpu_s_per_1000": r["server_cpu_s"] / r["deliveries"] * 1000,
            "errors": r["errors"], "other_busy_cpus": r["other_busy_cpus"]}


def table(res):
    out = ["| server | clients | senders | deliveries/s | p50 | p99 | server CPU s / 1 000 "
           "deliveries | RSS per idle connection | loadgen errors | other load (CPUs) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in res["servers"]:
        idle = res["idle"].get(kind, {})
        for c in res["cells"]:
            if c["server"] != kind:
                continue
            rss = idle.get("rss_per_conn_bytes")
            cpu = c["server_cpu_s_per_1000"]
            raw = c.get("raw") or {}
            out.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                LABELS[kind], c["clients"], c["senders"], fmt_rate(c["deliveries_per_s"]),
                fmt_us(c["p50_us"]), fmt_us(c["p99_us"]),
                "n/a" if cpu is None else "%.4f" % cpu,
                "n/a" if rss is None else ("%.0f B" % rss if rss < 2048 else "%.1f KiB" %
                                           (rss / 1024)) + " (%d idle)" % idle["clients"],
                raw.get("errors", "n/a"),
                "%.2f" % raw["other_busy_cpus"] if "other_busy_cpus" in raw else "n/a"))
    return "\n".join(out)


def plot(res, outdir):
    gp = shutil.which("gnuplot")
    if not gp:
        log("compare: gnuplot not found (apt-get install gnuplot-nox): no plots")
        return []
    series = []  # (data file, title, colour index, senders)
    for ki, kind in enumerate(res["servers"]):
        for s in sorted({c["senders"] for c in res["cells"]}):
            pts = [c for c in res["cells"] if c["server"] == kind and c["senders"] == s and
                   c["deliveries_per_s"]]
            if not pts:
                continue
            path = os.path.join(outdir, "data-%s-%d.dat" % (kind, s))
            with open(path, "w") as f:
                for c in sorted(pts, key=lambda c: c["clients"]):
                    f.write("%d %g %g\n" % (c["clients"], c["deliveries_per_s"], c["p99_us"]))
            series.append((path, "%s, %d sender%s" % (LABELS[kind], s, "" if s == 1 else "s"),
                           ki, s))
    if not series:
        return []
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#000000", "#ff7f0e"]
    pngs = []
    for name, col, ylabel in (("deliveries.png", 2, "deliveries per second"),
                              ("p99.png", 3, "p99 latency (µs)")):
        png = os.path.join(outdir, name)
        lines = ['set terminal pngcairo size 1000,750' if _has_cairo(gp) else
                 'set terminal png size 1000,750',
                 'set output "%s"' % png, 'set logscale xy', 'set grid',
                 'set key below', 'set termoption noenhanced', 'set xlabel "clients in the room"',
                 'set ylabel "%s"' % ylabel,
                 'set title "%s against room size (%d in flight per sender; '
                 'solid: 1 sender, dashed: several)"' % (ylabel, res.get("inflight", 16))]
        plots = ['"%s" using 1:%d with linespoints lw 2 pt %d dt %d lc rgb "%s" title "%s"' % (
                 p, col, 5 + ki, 1 if s == 1 else 2, colours[ki % len(colours)],
                 t.replace('"', '')) for p, t, ki, s in series]
        lines.append("plot " + ", ".join(plots))
        subprocess.run([gp], input="\n".join(lines) + "\n", text=True, check=True)
        pngs.append(png)
    return pngs


def ratios(res):
    """What the targets of issue 5 compare, per room size and senders."""
    by = {(c["server"], c["clients"], c["senders"]): c["deliveries_per_s"]
          for c in res["cells"]}
    pairs = [("cchannels-memory", "epoll-room", "memory layer / plain-C room", "%"),
             ("cchannels-memory", "django-memory", "memory layer / Django in-memory", "x"),
             ("cchannels-redis", "django-redis", "Redis layer / channels_redis", "x")]
    keys = sorted({(c["clients"], c["senders"]) for c in res["cells"]})
    head = "| ratio of deliveries/s | " + " | ".join(
        "%d clients, %d sender%s" % (n, s, "" if s == 1 else "s") for n, s in keys) + " |"
    out = [head, "|---|" + "---:|" * len(keys)]
    for a, b, label, unit in pairs:
        if a not in res["servers"] or b not in res["servers"]:
            continue
        row = []
        for n, s in keys:
            x, y = by.get((a, n, s)), by.get((b, n, s))
            row.append("n/a" if not x or not y else
                       ("%.0f %%" % (100 * x / y) if unit == "%" else "%.0f x" % (x / y)))
        out.append("| %s | %s |" % (label, " | ".join(row)))
    return "\n".join(out)


def half_table(res):
    out = ["| server | clients | senders | offered (half the peak) | deliveries/s | p50 | p99 "
           "| server CPU s / 1 000 deliveries | loadgen errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {k: i for i, k in enumerate(res["servers"])}
    for c in sorted(res.get("half", []), key=lambda c: (order[c["server"]], c["senders"])):
        cpu = c["server_cpu_s_per_1000"]
        out.append("| %s | %d | %d | %s/s (%.0f msg/s per sender) | %s | %s | %s | %s | %s |" % (
            LABELS[c["server"]], c["clients"], c["senders"], fmt_rate(c["offered"]),
            c["rate_per_sender"], fmt_rate(c["deliveries_per_s"]), fmt_us(c["p50_us"]),
            fmt_us(c["p99_us"]), "n/a" if cpu is None else "%.4f" % cpu,
            (c.get("raw") or {}).get("errors", "n/a")))
    return "\n".join(out)


def report(res):
    pin = res.get("pinned")
    head = "%s, %d CPUs, %d in flight per sender, %.1f s windows after %.1f s warm-up, %s\n" % (
        res["date"], res["nproc"], res["inflight"], res["duration_s"], res["warmup_s"],
        "servers on CPU %s and loadgen on CPU %s" % (pin["servers"], pin["loadgen"]) if pin
        else "not pinned")
    parts = [head, table(res), "", ratios(res)]
    if res.get("half"):
        parts += ["", "Latency at half the peak (largest room; each server at half its own "
                  "closed-loop deliveries/s):", "", half_table(res)]
    return "\n".join(parts)


def _has_cairo(gp):
    r = subprocess.run([gp, "-e", "set terminal"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return "pngcairo" in r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="/tmp/cchannels-compare")
    ap.add_argument("--quick", action="store_true", help="1 s per cell, 10/100 clients")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--clients", default="10,100,1000")
    ap.add_argument("--senders", default="1,4")
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--out", default="/tmp/cchannels-compare-out")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-pin", action="store_true", help="do not pin servers and loadgen")
    ap.add_argument("--no-half", action="store_true", help="skip the half-peak latency runs")
    ap.add_argument("--plot-only", metavar="FILE", help="only plot a results JSON file")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.plot_only:
        with open(a.plot_only) as f:
            res = json.load(f)
        print(report(res))
        for p in plot(res, a.out):
            print(p)
        return 0
    if a.quick:
        a.duration, a.warmup, a.clients = 1.0, 0.5, "10,100"
    clients = [int(x) for x in a.clients.split(",")]
    senders = [int(x) for x in a.senders.split(",")]
    servers = [s for s in a.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            ap.error("unknown server %s (known: %s)" % (s, ", ".join(SERVERS)))
    exe = build(a.build)
    server_cpus, loadgen_cpus = cpu_sets(not a.no_pin)
    res = {"servers": servers, "inflight": a.inflight, "duration_s": a.duration,
           "warmup_s": a.warmup, "nproc": os.cpu_count(),
           "pinned": {"servers": server_cpus, "loadgen": loadgen_cpus} if server_cpus else None,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cells": [],
           "half": [], "idle": {}}

    # bound: connecting (Django joins ~hundreds/s), settling, warm-up, window, margin
    def bound(n):
        return 20 + a.warmup + a.duration + n / 50.0

    def run(kind, n, s, rate=0.0, inflight=a.inflight, warmup=a.warmup, duration=a.duration):
        """One loadgen run against fresh processes of `kind`."""
        try:
            st = Setup(kind, exe)
        except Exception as e:  # noqa: BLE001 - reported as n/a
            return {"error": str(e)}
        try:
            if server_cpus:
                pin_all_threads(st.pids(), server_cpus)
            return loadgen(exe, st, n, s, inflight, warmup, duration, bound(n), rate,
                           loadgen_cpus)
        finally:
            st.stop()

    # Cell by cell, every server in turn: the servers of one cell run minutes apart at
    # most, so that the machine's drift (20-30% over an hour on a VM) stays out of the
    # ratios between them.
    for n in clients:
        for s in senders:
            for kind in servers:
                log("compare: %s, %d clients, %d sender(s)" % (kind, n, s))
                r = run(kind, n, s)
                c = dict(cell(r), server=kind, clients=n, senders=s, raw=r)
                if c.get("error"):
                    log("compare:   n/a: %s" % c["error"])
                res["cells"].append(c)
    n = max(clients)
    for s in senders if not a.no_half else []:
        for kind in servers:
            peak = next((c["deliveries_per_s"] for c in res["cells"] if c["server"] == kind
                         and c["clients"] == n and c["senders"] == s), None)
            if not peak:
                continue
            rate = peak / 2 / n / s  # messages per second per sender
            log("compare: %s, %d clients, %d sender(s) at %.0f msg/s each (half the peak)" %
                (kind, n, s, rate))
            r = run(kind, n, s, rate=rate)
            res["half"].append(dict(cell(r), server=kind, clients=n, senders=s,
                                    offered=peak / 2, rate_per_sender=rate, raw=r))
    for kind in servers:
        log("compare: %s, %d idle clients" % (kind, n))
        r = run(kind, n, 0, inflight=1, warmup=0, duration=0.5)
        ok = not r.get("error") and "server_rss_per_conn_bytes" in r
        res["idle"][kind] = {"clients": n, "rss_per_conn_bytes":
                             r["server_rss_per_conn_bytes"] if ok else None,
                             "error": r.get("error")}
    path = a.json or os.path.join(a.out, "compare-results.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(report(res))
    print("\nresults: %s" % path)
    if not a.no_plot:
        for p in plot(res, a.out):
            print("plot: %s" % p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
