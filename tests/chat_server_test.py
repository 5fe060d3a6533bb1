#!/usr/bin/python3
"""chat_server_test.py - the example chat server over real sockets.

Starts the built example (examples/chat) on a free loopback port and talks to it
with Debian's python3-websockets: two clients in one room exchange messages and a
direct message, the echo endpoint returns what it gets, the web page is served,
SIGTERM closes every client with 1001 and the process exits 0, and the command line
flags behave. Every step is bounded in time; the server is always stopped.

Usage: /usr/bin/python3 chat_server_test.py SERVER_EXECUTABLE
Exit code 77 (skipped) when the websockets module is missing.
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

try:
    import websockets
except ImportError:
    print("SKIP: python3-websockets is not installed")
    sys.exit(77)

import server_wrap     # noqa: E402  (tests/server_wrap.py: the valgrind pass)

SERVER = None          # set from argv
STEP = 10.0 * server_wrap.SLOWDOWN   # seconds allowed for any one step


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The example server on a free loopback port, its stderr kept in a file."""

    def __init__(self, *extra):
        self.log = tempfile.TemporaryFile(mode="w+")
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                server_wrap.command([SERVER, "--host", "127.0.0.1", "--port", str(self.port),
                                     "--log-level", "info", *extra]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError("the server did not start:\n" + self.stderr())

    def _wait_listening(self):
        end = time.monotonic() + STEP
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def url(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def close(self):
        self.stop()
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STEP)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def assert_no_sanitizer_report(text):
    for needle in ("Sanitizer", "runtime error:"):
        assert needle not in text, text
    assert server_wrap.report(text) is None, text


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 3 * STEP))


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), STEP))


async def join(server, room, name):
    ws = await asyncio.wait_for(
        websockets.connect(server.url("/ws/chat/%s/?name=%s" % (room, name)),
                           open_timeout=STEP, close_timeout=STEP), STEP)
    hello = await recv_json(ws)
    assert hello["event"] == "hello" and hello["user"] == name, hello
    joined = await recv_json(ws)
    assert joined["event"] == "join" and joined["user"] == name, joined
    return ws


class ChatTest(unittest.TestCase):
    def setUp(self):
        self.server = Server()

    def tearDown(self):
        rc = self.server.stop()
        log = self.server.stderr()
        self.server.close()
        # SIGTERM is a clean exit; sanitizers (in a sanitized build) report here.
        self.assertEqual(rc, 0, log)
        assert_no_sanitizer_report(log)

    def test_two_clients_exchange_messages(self):
        async def scenario():
            alice = await join(self.server, "itest", "alice")
            bob = await join(self.server, "itest", "bob")
            ev = await recv_json(alice)
            self.assertEqual(ev["event"], "join")
            self.assertEqual(ev["members"], ["alice", "bob"])
            self.assertEqual(ev["owner"], "alice")

            await alice.send(json.dumps({"message": "hello bob"}))
            for ws in (alice, bob):
                self.assertEqual(await recv_json(ws), {"message": "hello bob", "user": "alice"})
            await bob.send(json.dumps({"message": "hi alice \u00e9\u4e2d"}))
            for ws in (alice, bob):
                self.assertEqual(await recv_json(ws),
                                 {"message": "hi alice \u00e9\u4e2d", "user": "bob"})

            # A direct message, and an error reply for invalid JSON.
            await bob.send(json.dumps({"message": "dm", "users": ["alice"]}))
            want = {"message": "dm", "user": "bob", "users": ["alice"]}
            self.assertEqual(await recv_json(alice), want)
            self.assertEqual(await recv_json(bob), want)
            await alice.send("{not json")
            self.assertIn("error", await recv_json(alice))

            await bob.close()
            ev = await recv_json(alice)
            self.assertEqual((ev["event"], ev["user"], ev["members"]), ("leave", "bob", ["alice"]))
            await alice.close()
            self.assertEqual(bob.close_code, 1000)
        run(scenario())
        log = self.server.stderr()
        self.assertIn("chat connect room=itest user=alice", log)
        self.assertIn("chat accept room=itest user=bob", log)
        self.assertIn("chat disconnect room=itest user=bob code=1000", log)

    def test_the_room_creator_closes_the_room(self):
        async def scenario():
            alice = await join(self.server, "closing", "alice")
            bob = await join(self.server, "closing", "bob")
            await recv_json(alice)
            await alice.send(json.dumps({"command": "close"}))
            for ws in (alice, bob):
                self.assertEqual((await recv_json(ws))["event"], "close")
                await asyncio.wait_for(ws.wait_closed(), STEP)
                self.assertEqual((ws.close_code, ws.close_reason), (4000, "room closed"))
        run(scenario())

    def test_echo_endpoint(self):
        async def scenario():
            async with websockets.connect(self.server.url("/ws/echo/"), open_timeout=STEP,
                                          max_size=None) as ws:
                for msg in ["", "text \u00e9", b"", b"\x00\xffbinary", "x" * 70000,
                            bytes(range(256)) * 300]:
                    await ws.send(msg)
                    got = await asyncio.wait_for(ws.recv(), STEP)
                    self.assertEqual(type(got), type(msg))
                    self.assertEqual(got, msg)
        run(scenario())

    def test_web_page_is_served(self):
        base = "http://127.0.0.1:%d" % self.server.port
        for path, ctype, needle in [("/", "text/html", b"room-name-input"),
                                    ("/index.html", "text/html", b"room-name-input"),
                                    ("/room.html", "text/html", b"chat-log"),
                                    ("/chat.js", "javascript", b"new WebSocket"),
                                    ("/chat.css", "text/css", b"--accent")]:
            with urllib.request.urlopen(base + path, timeout=STEP) as r:
                self.assertEqual(r.status, 200)
                self.assertIn(ctype, r.headers["Content-Type"])
                self.assertIn(needle, r.read())

    def test_bad_names_are_closed_with_a_reason(self):
        async def scenario():
            ws = await websockets.connect(self.server.url("/ws/chat/lobby/?name=no%20spaces"),
                                          open_timeout=STEP)
            await asyncio.wait_for(ws.wait_closed(), STEP)
            self.assertEqual((ws.close_code, ws.close_reason), (4001, "invalid name"))
        run(scenario())


class OriginTest(unittest.TestCase):
    def test_allowed_origins(self):
        server = Server("--allowed-origins", "example.com, localhost:8000")
        try:
            async def scenario():
                for origin in (None, "http://evil.example", "http://localhost:9000"):
                    with self.assertRaises(websockets.InvalidStatusCode) as cm:
                        await websockets.connect(server.url("/ws/echo/"), origin=origin,
                                                 open_timeout=STEP)
                    self.assertEqual(cm.exception.status_code, 403)
                for origin in ("http://example.com", "http://localhost:8000"):
                    async with websockets.connect(server.url("/ws/echo/"), origin=origin,
                                                  open_timeout=STEP) as ws:
                        await ws.send("ok")
                        self.assertEqual(await asyncio.wait_for(ws.recv(), STEP), "ok")
            run(scenario())
            self.assertEqual(server.stop(), 0)
        finally:
            server.close()


class ShutdownTest(unittest.TestCase):
    def test_sigterm_closes_clients_with_1001_and_exits_0(self):
        server = Server()
        try:
            async def scenario():
                clients = [await join(server, "shutdown", n) for n in ("alice", "bob")]
                await recv_json(clients[0])          # bob joined
                server.proc.send_signal(signal.SIGTERM)
                for ws in clients:
                    await asyncio.wait_for(ws.wait_closed(), STEP)
                    self.assertEqual(ws.close_code, 1001)
            run(scenario())
            self.assertEqual(server.proc.wait(STEP), 0)
            log = server.stderr()
            assert_no_sanitizer_report(log)
            self.assertIn("chat disconnect room=shutdown user=alice code=1001", log)
        finally:
            server.close()


class FlagsTest(unittest.TestCase):
    def run_server(self, *args):
        return subprocess.run(server_wrap.command([SERVER, *args]), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=STEP)

    def test_help(self):
        r = self.run_server("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--host", "--port", "--static", "--layer", "--log-level",
                     "--allowed-origins"):
            self.assertIn(flag, r.stdout)

    def test_bad_redis_layer_urls(self):
        # (the Redis layer itself, with a server: tests/redis/test_chat_redis.py)
        for url in ("redis://127.0.0.1:99999", "redis://", "rediss://127.0.0.1:6379"):
            r = self.run_server("--port", str(free_port()), "--layer", url)
            self.assertEqual(r.returncode, 2, url)
            self.assertIn("redis", r.stderr.lower())
            assert_no_sanitizer_report(r.stderr)

    def test_bad_flags(self):
        for args in (["--layer", "carrier-pigeon"], ["--port", "70000"], ["--port", "x"],
                     ["--log-level", "loud"], ["--bogus"], ["--static", "/nonexistent/dir"],
                     ["--allowed-origins", "a,,b"], ["--allowed-origins", ""], ["extra"]):
            r = self.run_server("--port", str(free_port()), *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr.strip(), args)
            assert_no_sanitizer_report(r.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: chat_server_test.py SERVER_EXECUTABLE", file=sys.stderr)
        sys.exit(2)
    SERVER = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
