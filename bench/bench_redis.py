#!/usr/bin/python3
"""bench/bench_redis.py - the channels_redis half of bench/run_redis_bench.py.

The same work as bench/bench_redis.c, with Debian's python3-channels-redis
(RedisChannelLayer, capacity 100000):

  bench_redis.py recv URL GROUP MEMBERS COUNT   -> "ready", then one JSON line
  bench_redis.py send URL GROUP COUNT RATE      -> one JSON line
"""
import asyncio
import json
import sys
import time

from channels_redis.core import RedisChannelLayer


def layer(url):
    return RedisChannelLayer(hosts=[url], capacity=100000)


async def recv(url, group, members, count):
    lay = layer(url)
    chans = [await lay.new_channel() for _ in range(members)]
    for c in chans:
        await lay.group_add(group, c)
    print("ready", flush=True)
    lat, first, last = [], [None], [0]

    async def one(c):
        for _ in range(count):
            m = await lay.receive(c)
            t = time.time_ns()
            lat.append(t - m["t"])
            first[0] = m["t"] if first[0] is None else min(first[0], m["t"])
            last[0] = max(last[0], t)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(c) for c in chans)), 600)
    except asyncio.TimeoutError:
        pass
    lat.sort()
    pct = (lambda p: lat[int((len(lat) - 1) * p)] // 1000 if lat else 0)
    print(json.dumps({"received": len(lat), "first_sent_ns": first[0] or 0,
                      "last_recv_ns": last[0],
                      "lat_us": [pct(0.5), pct(0.9), pct(0.99), pct(1.0)]}), flush=True)
    for c in chans:
        await lay.group_discard(group, c)


async def send(url, group, count, rate):
    lay = layer(url)
    start = time.monotonic()
    for i in range(count):
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await lay.group_send(group, {"type": "bench.message", "t": time.time_ns(), "i": i,
                                     "message": "hello world"})
    print(json.dumps({"sent": count, "secs": time.monotonic() - start}), flush=True)


def main():
    mode, url, group = sys.argv[1:4]
    if mode == "recv":
        asyncio.run(recv(url, group, int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(send(url, group, int(sys.argv[4]), float(sys.argv[5])))


if __name__ == "__main__":
    main()
