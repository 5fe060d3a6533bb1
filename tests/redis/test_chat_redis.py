#!/usr/bin/python3
"""tests/redis/test_chat_redis.py - two example chat processes sharing one Redis.

Two cchannels-chat servers (examples/chat) on different ports, both with
--layer redis://127.0.0.1:PORT of a redis-server started here: clients in the same
room on each server see each other's join notices and messages, both ways, and a
direct message crosses too. The same in the pub/sub format.

Usage: /usr/bin/python3 test_chat_redis.py CHAT_EXECUTABLE   (exit 77: packages missing)
"""
import asyncio
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redisutil import RedisServer, need_packages  # noqa: E402

need_packages("websockets")

from chatutil import ChatServer, Client  # noqa: E402

CHAT = None


class TwoChats(unittest.TestCase):
    scheme = "redis"

    def setUp(self):
        self.redis = RedisServer()
        url = self.redis.url.replace("redis://", self.scheme + "://")
        self.chats = [ChatServer(CHAT, url), ChatServer(CHAT, url)]

    def tearDown(self):
        for c in self.chats:
            self.assertEqual(c.stop(), 0, c.stderr())
        self.redis.close()

    def test_messages_cross_both_ways(self):
        async def go():
            alice = await Client.connect(self.chats[0].url("lobby", "alice"), "alice")
            # her own join notice went through Redis: her membership is there
            await alice.until(lambda m: m.get("event") == "join" and m.get("user") == "alice",
                              "own join")
            bob = await Client.connect(self.chats[1].url("lobby", "bob"), "bob")
            await bob.until(lambda m: m.get("event") == "join" and m.get("user") == "bob",
                            "own join")
            await alice.until(lambda m: m.get("event") == "join" and m.get("user") == "bob",
                              "bob's join (from the other server)")
            await alice.send(message="hi bob")
            m = await bob.until(lambda m: m.get("message") == "hi bob", "alice's message")
            self.assertEqual(m, {"message": "hi bob", "user": "alice"})
            await bob.send(message="hi alice")
            m = await alice.until(lambda m: m.get("message") == "hi alice", "bob's message")
            self.assertEqual(m, {"message": "hi alice", "user": "bob"})
            await alice.send(message="psst", users=["bob"])
            m = await bob.until(lambda m: m.get("message") == "psst", "the direct message")
            self.assertEqual(m["users"], ["bob"])
            # another room on the same servers does not see it
            carol = await Client.connect(self.chats[1].url("other", "carol"), "carol")
            await carol.until(lambda m: m.get("event") == "join", "own join")
            await alice.send(message="lobby only")
            await bob.until(lambda m: m.get("message") == "lobby only", "lobby message")
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(carol.ws.recv(), 0.5)
            for c in (alice, bob, carol):
                await c.close()
        asyncio.run(asyncio.wait_for(go(), 60))


class TwoChatsPubSub(TwoChats):
    scheme = "redis+pubsub"


if __name__ == "__main__":
    CHAT = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
