#!/usr/bin/python3
"""bench_loadgen_smoke.py - keeps the benchmark's load generator (bench/loadgen.c)
working: runs it for about a second against the example chat server (examples/chat)
on a free loopback port, with 10 clients in one room and one sender, and checks that
it reports deliveries, latencies and no errors; then once against the echo endpoint
(where only the sender gets its messages back); against a scripted fake server
(an oversized message, a ping that must be answered with a masked pong, a close; and
a wrong Sec-WebSocket-Accept); and that a bad option is a usage error. No timing is
asserted.

Usage: /usr/bin/python3 bench_loadgen_smoke.py LOADGEN CHAT_SERVER
"""
import base64
import hashlib
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

LOADGEN = CHAT = None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_frame(conn):
    """One client frame: (opcode, unmasked payload, was masked)."""
    def need(n):
        b = b""
        while len(b) < n:
            chunk = conn.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b
    b0, b1 = need(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", need(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", need(8))[0]
    key = need(4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytes(c ^ key[i % 4] for i, c in enumerate(need(n)))
    return b0 & 0x0F, data, bool(b1 & 0x80)


def server_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


class FakeServer(threading.Thread):
    """Accepts one client, answers its handshake (with a wrong accept value when
    asked), then sends an oversized text message and a ping, checks the pong, and
    closes with 1001."""

    def __init__(self, wrong_accept=False):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]
        self.wrong_accept = wrong_accept
        self.request = b""
        self.pong = None
        self.error = None

    def run(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(20)
            with conn:
                while b"\r\n\r\n" not in self.request:
                    self.request += conn.recv(4096)
                key = [l.split(b":", 1)[1].strip() for l in self.request.split(b"\r\n")
                       if l.lower().startswith(b"sec-websocket-key:")][0]
                if self.wrong_accept:
                    key += b"x"
                accept = base64.b64encode(hashlib.sha1(
                    key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                big = b'{"message": "' + b"a" * 300000 + b'"}'
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\n\r\n" + server_frame(1, big) + server_frame(9, b"hi"))
                if self.wrong_accept:
                    return
                self.pong = recv_frame(conn)
                conn.sendall(server_frame(8, struct.pack(">H", 1001) + b"bye"))
                recv_frame(conn)                # the client's close
        except Exception as e:                  # reported by the test
            self.error = e
        finally:
            self.sock.close()


class LoadgenSmoke(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.server = subprocess.Popen(
            [CHAT, "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while True:
            self.assertIsNone(self.server.poll(), "the chat server exited")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                self.assertLess(time.monotonic(), end, "the chat server does not listen")
                time.sleep(0.02)

    def tearDown(self):
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stderr.close()

    def run_loadgen(self, *args):
        p = subprocess.run([LOADGEN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        out = p.stdout.decode()
        lines = [l for l in out.splitlines() if l.startswith("{")]
        self.assertEqual(len(lines), 1, out + p.stderr.decode())
        return p.returncode, json.loads(lines[0]), out + p.stderr.decode()

    def test_chat_room(self):
        rc, r, text = self.run_loadgen(
            "--url", "ws://127.0.0.1:%d/ws/chat/smoke/" % self.port, "-c", "10", "-s", "1",
            "-f", "4", "-w", "0.2", "-d", "1", "--server-pid", str(self.server.pid))
        self.assertEqual(rc, 0, text)
        self.assertEqual(r["clients_open"], 10, text)
        self.assertEqual(r["errors"], 0, text)
        self.assertGreater(r["deliveries"], 0, text)
        self.assertGreater(r["sends"], 0, text)
        # every client is in the room, so each send reaches all ten (give or take the
        # messages in flight at the window's edges)
        self.assertGreater(r["deliveries"], 5 * r["sends"], text)
        self.assertGreater(r["lat_p50_us"], 0, text)
        self.assertLessEqual(r["lat_p50_us"], r["lat_p99_us"], text)
        self.assertGreater(r["server_cpu_s"], 0, text)
        self.assertGreater(r["server_rss_kb"], 0, text)
        self.assertIn("deliveries", text)          # the human summary is there too

    def test_echo_endpoint(self):
        rc, r, text = self.run_loadgen(
            "--url", "ws://127.0.0.1:%d/ws/echo/" % self.port, "--no-name", "-c", "3",
            "-s", "2", "-w", "0.1", "-d", "0.5", "--json")
        self.assertEqual(rc, 0, text)
        self.assertEqual(r["errors"], 0, text)
        self.assertGreater(r["deliveries"], 0, text)
        # only the senders get their own messages back
        self.assertLessEqual(r["deliveries"], r["sends"] + 2 * 16, text)

    def test_refused_handshake_is_an_error(self):
        rc, r, text = self.run_loadgen(
            "--url", "ws://127.0.0.1:%d/no/such/route/" % self.port, "-c", "2", "-s", "0",
            "-w", "0", "-d", "0.1", "--json")
        self.assertEqual(rc, 1, text)
        self.assertEqual(r["handshake_failed"], 2, text)
        self.assertIn("404", text)

    def test_fake_server(self):
        fake = FakeServer()
        fake.start()
        rc, r, text = self.run_loadgen(
            "--url", "ws://127.0.0.1:%d/ws/chat/x/" % fake.port, "-c", "1", "-s", "0",
            "-w", "0", "-d", "0.5", "--settle", "1", "--json")
        fake.join(20)
        self.assertIsNone(fake.error, text)
        self.assertIn(b"GET /ws/chat/x/?name=c0 HTTP/1.1\r\n", fake.request)
        self.assertEqual(fake.pong, (10, b"hi", True), text)
        self.assertEqual(rc, 1, text)
        self.assertEqual(r["clients_open"], 1, text)
        self.assertEqual(r["closed_by_server"], 1, text)
        self.assertEqual(r["protocol_errors"], 0, text)
        self.assertIn("1001 bye", text)

    def test_wrong_accept(self):
        fake = FakeServer(wrong_accept=True)
        fake.start()
        rc, r, text = self.run_loadgen(
            "--url", "ws://127.0.0.1:%d/ws/chat/x/" % fake.port, "-c", "1", "-s", "0",
            "-w", "0", "-d", "0.1", "--json")
        fake.join(20)
        self.assertEqual(rc, 1, text)
        self.assertEqual(r["clients_open"], 0, text)
        self.assertEqual(r["handshake_failed"], 1, text)
        self.assertIn("Sec-WebSocket-Accept", text)

    def test_usage_error(self):
        p = subprocess.run([LOADGEN, "--clients", "zero"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(p.returncode, 2)
        p = subprocess.run([LOADGEN, "-c", "1", "-s", "2"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    LOADGEN, CHAT = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
