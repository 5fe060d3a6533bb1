#!/usr/bin/python3
"""tests/redis/test_django_chat.py - the example chat and a real Django Channels server.

Debian's daphne serves the Channels tutorial's ChatConsumer (tests/redis/django_chat)
with channels_redis, and cchannels-chat runs with --layer redis on the same
redis-server: a WebSocket client of daphne and a client of our chat in the same room
see each other's messages. Then the same with RedisPubSubChannelLayer.

Usage: /usr/bin/python3 test_django_chat.py CHAT_EXECUTABLE   (exit 77: packages missing)
"""
import asyncio
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redisutil import RedisServer, need_packages  # noqa: E402

need_packages("websockets", "daphne", "channels", "channels_redis", "django")

from chatutil import ChatServer, Client, Daphne  # noqa: E402

CHAT = None


class WithDjango(unittest.TestCase):
    layer = "core"
    scheme = "redis"

    def setUp(self):
        self.redis = RedisServer()
        self.daphne = Daphne(self.redis.url, self.layer)
        self.chat = ChatServer(CHAT, self.redis.url.replace("redis://", self.scheme + "://"))

    def tearDown(self):
        self.assertEqual(self.chat.stop(), 0, self.chat.stderr())
        self.daphne.stop()
        self.redis.close()

    def test_tutorial_room_shared(self):
        async def go():
            carol = await Client.connect(self.daphne.url("lobby"), "carol (django)")
            alice = await Client.connect(self.chat.url("lobby", "alice"), "alice (C)")
            await alice.until(lambda m: m.get("event") == "join" and m.get("user") == "alice",
                              "own join")
            # the Django consumer got our join notice: only "message" is forwarded
            await carol.until(lambda m: m == {"message": "alice joined"}, "alice's join")
            await carol.send(message="hi from django")
            m = await alice.until(lambda m: m.get("message") == "hi from django",
                                  "the Django client's message")
            self.assertEqual(m, {"message": "hi from django"})
            await alice.send(message="hi from C")
            m = await carol.until(lambda m: m.get("message") == "hi from C", "our message")
            self.assertEqual(m, {"message": "hi from C"})
            await carol.close()
            await alice.close()
        asyncio.run(asyncio.wait_for(go(), 60))
        self.assertNotIn("Traceback", self.daphne.stderr())


class WithDjangoPubSub(WithDjango):
    layer = "pubsub"
    scheme = "redis+pubsub"


if __name__ == "__main__":
    CHAT = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
