#!/usr/bin/python3
"""bench/run_redis_bench.py - group_send through Redis between two processes:
cchannels' Redis layer against channels_redis, same work, same redis-server, same run.

  /usr/bin/python3 bench/run_redis_bench.py BUILD_DIR [--count N] [--rate R]

For each implementation (C: BUILD_DIR/bench/bench_redis; Python: bench/bench_redis.py)
and each group size (1 and 10 members, all in the receiving process):
  - throughput: the sender group_sends COUNT messages as fast as it can; messages
    delivered per second = COUNT * members / (last delivery - first send);
  - latency: RATE messages per second for 2 seconds; one-way latency (delivery time
    minus the send time in the message) p50/p90/p99/max.
A fresh redis-server (persistence off) on a free loopback port serves every run.
Prints a Markdown table and the C/Python ratios.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "redis"))
from redisutil import RedisServer  # noqa: E402


def run_pair(recv_cmd, send_cmd, timeout=900):
    r = subprocess.Popen(recv_cmd, stdout=subprocess.PIPE, text=True)
    assert r.stdout.readline().strip() == "ready", "receiver did not start"
    s = subprocess.run(send_cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, check=True)
    out, _ = r.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1]), json.loads(s.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500)
    a = ap.parse_args()
    impls = {
        "cchannels (C)": [os.path.join(a.build_dir, "bench", "bench_redis")],
        "channels_redis (Python)": ["/usr/bin/python3", os.path.join(HERE, "bench_redis.py")],
    }
    redis = RedisServer()
    rows, results = [], {}
    try:
        for members in (1, 10):
            for name, cmd in impls.items():
                redis.command("FLUSHALL")
                g = "bench%d" % members
                recv, send = run_pair(cmd + ["recv", redis.url, g, str(members), str(a.count)],
                                      cmd + ["send", redis.url, g, str(a.count), "0"])
                secs = (recv["last_recv_ns"] - recv["first_sent_ns"]) / 1e9
                thr = recv["received"] / secs if secs > 0 else 0
                n_lat = int(a.rate * 2)
                redis.command("FLUSHALL")
                lrecv, _ = run_pair(cmd + ["recv", redis.url, g, str(members), str(n_lat)],
                                    cmd + ["send", redis.url, g, str(n_lat), str(a.rate)])
                results[(name, members)] = (thr, lrecv["lat_us"])
                rows.append("| %s | %d | %d | %d | %.0f | %d | %d | %d | %d |" % (
                    name, members, a.count, recv["received"], thr, *lrecv["lat_us"]))
    finally:
        redis.close()
    print("| implementation | members | group_sends | deliveries | deliveries/s "
          "| p50 µs | p90 µs | p99 µs | max µs |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(r)
    print()
    for members in (1, 10):
        c = results[("cchannels (C)", members)]
        p = results[("channels_redis (Python)", members)]
        print("members=%d: throughput ratio C/Python = %.1fx; p50 latency Python/C = %.1fx"
              % (members, c[0] / p[0] if p[0] else float("inf"),
                 p[1][0] / c[1][0] if c[1][0] else float("inf")))


if __name__ == "__main__":
    main()
