#!/usr/bin/python3
"""tests/redis/test_interop.py - the Redis layer against the real channels_redis.

A C process (tests/redis/redis_peer, on cchannels' Redis layer) and Debian's
python3-channels-redis 4.0 share redis-servers started here on free loopback ports:
  - a Python group_send reaches a C consumer with the exact fields;
  - a C group_send reaches a Python receiver as the exact dict;
  - a C consumer and a Python consumer in one group both get one group_send, from
    either side, once;
  - direct sends both ways; a value JSON cannot hold (bytes) is counted, not fatal;
  - the same over two sharded servers (group_send both ways, direct C -> Python);
  - the pub/sub format (RedisPubSubChannelLayer) both ways.

Usage: /usr/bin/python3 test_interop.py PEER_EXECUTABLE   (exit 77: packages missing)
"""
import asyncio
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redisutil import Peer, RedisServer, need_packages, server_wrap  # noqa: E402

need_packages("channels_redis", "msgpack", "redis")

from channels_redis.core import RedisChannelLayer  # noqa: E402
from channels_redis.pubsub import RedisPubSubChannelLayer  # noqa: E402

PEER = None
STEP = 10.0 * server_wrap.SLOWDOWN

# Every kind of value a message carries, as Python sends it and as C must see it.
FIELDS = {"message": "h\u00e9llo \u2603", "n": 42, "neg": -7, "big": 2**53 + 1,
          "f": 1.5, "tiny": 1e-300, "yes": True, "no": False, "none": None,
          "list": [1, "two", [3.0], {"four": 4}], "nested": {"a": {"b": []}}, "empty": ""}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def receive(layer, channel, timeout=STEP):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def nothing(layer, channel, timeout=0.5):
    try:
        m = await asyncio.wait_for(layer.receive(channel), timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected message %r" % (m,))


def json_line(d):
    import json
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


class Core(unittest.TestCase):
    """channels_redis.core.RedisChannelLayer, one server."""

    nservers = 1

    @classmethod
    def setUpClass(cls):
        cls.servers = [RedisServer() for _ in range(cls.nservers)]
        cls.urls = [s.url for s in cls.servers]

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers:
            s.close()

    def setUp(self):
        for s in self.servers:
            s.command("FLUSHALL")
        self.peer = Peer(PEER, *self.urls)

    def tearDown(self):
        self.assertEqual(self.peer.close(), 0, self.peer.stderr())

    def layer(self):
        return RedisChannelLayer(hosts=list(self.urls))

    def groups(self):
        """Group names that land on every shard."""
        from channels_redis.utils import _consistent_hash
        found = {}
        for i in range(64):
            g = "chat_room%d" % i
            found.setdefault(_consistent_hash(g, self.nservers), g)
        return [found[k] for k in sorted(found)]

    def test_python_group_send_reaches_c(self):
        ch = self.peer.new_channel()
        for g in self.groups():
            self.peer.ok("add %s %s" % (g, ch))
        self.peer.ok("sync")

        async def go():
            layer = self.layer()
            for g in self.groups():
                await layer.group_send(g, {"type": "chat_message", **FIELDS})
        run(go())
        for _ in self.groups():
            channel, mtype, body = self.peer.msg()
            self.assertEqual(channel, ch)
            self.assertEqual(mtype, "chat_message")
            self.assertEqual(body, FIELDS)
        self.peer.no_msg()

    def test_c_group_send_reaches_python(self):
        async def go():
            layer = self.layer()
            ch = await layer.new_channel()
            for g in self.groups():
                await layer.group_add(g, ch)
            for g in self.groups():
                self.peer.ok("gsend %s chat_message %s" % (g, json_line(FIELDS)))
                m = await receive(layer, ch)
                self.assertEqual(m, {"type": "chat_message", **FIELDS})
            await nothing(layer, ch)
        run(go())

    def test_mixed_group_one_send_each(self):
        ch = self.peer.new_channel()

        async def go():
            layer = self.layer()
            pych = await layer.new_channel()
            for g in self.groups():
                await layer.group_add(g, pych)
                self.peer.ok("add %s %s" % (g, ch))
            self.peer.ok("sync")
            for g in self.groups():
                # from Python: both get it once
                await layer.group_send(g, {"type": "chat_message", "message": "from py " + g})
                self.assertEqual(await receive(layer, pych),
                                 {"type": "chat_message", "message": "from py " + g})
                self.assertEqual(self.peer.msg(), (ch, "chat_message", {"message": "from py " + g}))
                # from C: both get it once
                self.peer.ok('gsend %s chat_message {"message": "from c"}' % g)
                self.assertEqual(await receive(layer, pych),
                                 {"type": "chat_message", "message": "from c"})
                self.assertEqual(self.peer.msg(), (ch, "chat_message", {"message": "from c"}))
            await nothing(layer, pych)
            self.peer.no_msg()
            # presence from C sees the Python member
            members = self.peer.do("members %s" % self.groups()[0])
            self.assertIn(pych, members)
            self.assertIn(ch, members)
        run(go())

    def test_direct_sends(self):
        ch = self.peer.new_channel()

        async def go():
            layer = self.layer()
            pych = await layer.new_channel()
            self.peer.ok("send %s chat.message %s" % (pych, json_line(FIELDS)))
            self.assertEqual(await receive(layer, pych), {"type": "chat.message", **FIELDS})
            # channels_redis 4.0 puts these on the shard of the FULL name: the C side
            # pops its queue key on every shard, so they arrive. With two servers, use
            # a channel whose two hashes differ, the case Python itself gets wrong.
            target = ch
            if self.nservers > 1:
                from channels_redis.utils import _consistent_hash as h
                while h(target, 2) == h(target[:target.index("!") + 1], 2):
                    target = self.peer.new_channel()
            for i in range(4):
                await layer.send(target, {"type": "chat.message", "i": i, **FIELDS})
            for i in range(4):
                self.assertEqual(self.peer.msg(),
                                 (target, "chat.message", {"i": i, **FIELDS}))
            # a plain (non-process-local) channel, both ways
            await layer.send("plainq", {"type": "t", "x": 1})
            self.peer.ok('send plainq2 t {"y": 2}')
            self.assertEqual(await receive(layer, "plainq2"), {"type": "t", "y": 2})
        run(go())

    def test_value_json_cannot_hold_is_counted(self):
        ch = self.peer.new_channel()
        self.peer.ok("add chat_bin %s" % ch)
        self.peer.ok("sync")

        async def go():
            layer = self.layer()
            await layer.group_send("chat_bin", {"type": "chat_message", "data": b"\x00\x01"})
            await layer.group_send("chat_bin", {"type": "chat_message", "message": "after"})
        run(go())
        self.assertEqual(self.peer.msg(), (ch, "chat_message", {"message": "after"}))
        self.assertEqual(self.peer.stats()["errors"], 1)
        self.assertIn("bin", self.peer.stderr())


class CoreSharded(Core):
    """The same over two redis-servers: both sides pick the same shard for each key."""

    nservers = 2

    def test_keys_on_their_shards(self):
        from channels_redis.utils import _consistent_hash
        ch = self.peer.new_channel()
        g = self.groups()
        for name in g:
            self.peer.ok("add %s %s" % (name, ch))
        self.peer.ok("sync")
        for name in g:
            shard = _consistent_hash(name, 2)
            self.assertEqual(self.servers[shard].command("EXISTS", "asgi:group:" + name), b":1\r\n")
            self.assertEqual(self.servers[1 - shard].command("EXISTS", "asgi:group:" + name),
                             b":0\r\n")


class PubSub(unittest.TestCase):
    """channels_redis.pubsub.RedisPubSubChannelLayer."""

    @classmethod
    def setUpClass(cls):
        cls.server = RedisServer()
        cls.url = cls.server.url.replace("redis://", "redis+pubsub://")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def setUp(self):
        self.peer = Peer(PEER, self.url)

    def tearDown(self):
        self.assertEqual(self.peer.close(), 0, self.peer.stderr())

    def test_both_ways(self):
        ch = self.peer.new_channel()
        self.peer.ok("add chat_ps %s" % ch)
        self.peer.ok("sync")

        async def go():
            layer = RedisPubSubChannelLayer(hosts=[self.server.url])
            pych = await layer.new_channel()
            await layer.group_add("chat_ps", pych)
            await asyncio.sleep(0.2)  # its subscription is made by a background task
            await layer.group_send("chat_ps", {"type": "chat_message", **FIELDS})
            self.assertEqual(await receive(layer, pych), {"type": "chat_message", **FIELDS})
            self.assertEqual(self.peer.msg(), (ch, "chat_message", FIELDS))
            self.peer.ok("gsend chat_ps chat_message %s" % json_line(FIELDS))
            self.assertEqual(await receive(layer, pych), {"type": "chat_message", **FIELDS})
            self.assertEqual(self.peer.msg(), (ch, "chat_message", FIELDS))
            # direct, both ways
            await layer.send(ch, {"type": "t", "to": "c"})
            self.assertEqual(self.peer.msg(), (ch, "t", {"to": "c"}))
            self.peer.ok('send %s t {"to": "py"}' % pych)
            self.assertEqual(await receive(layer, pych), {"type": "t", "to": "py"})
            await layer.flush()
        run(go())
        self.peer.no_msg()


if __name__ == "__main__":
    PEER = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
