"""tests/redis/chatutil.py - WebSocket chat clients and servers for the Redis tests.

ChatServer runs the built example chat (examples/chat) with a --layer; Daphne runs
Debian's daphne serving the Channels tutorial (tests/redis/django_chat). Client is a
python3-websockets client that waits (bounded) for the message it expects, skipping
the others (join notices, hellos).
"""
import asyncio
import json
import os
import socket
import sys
import time

from redisutil import STEP, Process, free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def wait_listening(port, proc):
    end = time.monotonic() + STEP
    while time.monotonic() < end:
        if proc.proc.poll() is not None:
            raise RuntimeError("server exited:\n" + proc.stderr())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server not listening:\n" + proc.stderr())


class ChatServer(Process):
    def __init__(self, exe, layer):
        self.port = free_port()
        super().__init__([exe, "--host", "127.0.0.1", "--port", str(self.port),
                          "--layer", layer, "--log-level", "info"], ours=True)
        wait_listening(self.port, self)

    def url(self, room, name):
        return "ws://127.0.0.1:%d/ws/chat/%s/?name=%s" % (self.port, room, name)


class Daphne(Process):
    def __init__(self, redis_url, layer="core"):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "django_chat"),
                   DJANGO_SETTINGS_MODULE="settings", REDIS_URL=redis_url, LAYER=layer,
                   PYTHONDONTWRITEBYTECODE="1")
        super().__init__(["/usr/bin/python3", "-m", "daphne", "-b", "127.0.0.1", "-p",
                          str(self.port), "asgi:application"], env=env)
        wait_listening(self.port, self)

    def url(self, room, name=None):
        return "ws://127.0.0.1:%d/ws/chat/%s/" % (self.port, room)


class Client:
    """One WebSocket; `until` waits for a JSON message matching a predicate."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.seen = []

    @classmethod
    async def connect(cls, url, name=""):
        import websockets
        ws = await asyncio.wait_for(websockets.connect(url), STEP)
        return cls(ws, name)

    async def send(self, **fields):
        await self.ws.send(json.dumps(fields))

    async def until(self, pred, what=""):
        end = time.monotonic() + STEP
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s in %ss; saw %r" % (self.name, what, STEP, self.seen))
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            m = json.loads(raw)
            self.seen.append(m)
            if pred(m):
                return m

    async def close(self):
        await self.ws.close()
