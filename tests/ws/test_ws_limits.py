"""tests/ws/test_ws_limits.py - message size, outbound buffer and idle limits.

1009 for a message over max_message_bytes (whole or in fragments; exactly the limit
passes); 1008 for a client that stops reading once its outbound buffer is full, while
the other members of its room receive every message; pings after idle_timeout, and
close 1001 when they are not answered.
"""

import json
import selectors
import socket
import struct
import time
import unittest

import wsclient as w


class MessageSize(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server("--max-message", 1000)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def connect(self):
        return w.WS.connect(self.port, "/ws/echo/")

    def test_exactly_the_limit(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"a" * 1000)
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"a" * 1000))
        ws.send(w.OP_BINARY, b"b" * 600, fin=False)
        ws.send(w.OP_CONT, b"b" * 400)
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b"b" * 1000))
        ws.close()

    def test_one_byte_over(self):
        for op in (w.OP_TEXT, w.OP_BINARY):
            ws = self.connect()
            ws.send(op, b"a" * 1001)
            ws.expect_close(1009)

    def test_announced_length_is_enough(self):
        # The header announces too much: closed without waiting for the payload.
        ws = self.connect()
        ws.send_raw(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 40) + b"\1\2\3\4" + b"data")
        ws.expect_close(1009)

    def test_fragments_over(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"a" * 600, fin=False)
        ws.send(w.OP_CONT, b"a" * 401)
        ws.expect_close(1009)

    def test_zz_counted(self):
        self.assertGreaterEqual(self.srv.stats()["closed_too_big"], 4)


class Drainer:
    """Reads room messages from several clients at once."""

    def __init__(self, clients):
        self.sel = selectors.DefaultSelector()
        self.got = {}
        for c in clients:
            c.sock.setblocking(False)
            self.sel.register(c.sock, selectors.EVENT_READ, c)
            self.got[c] = []

    def drain_until(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while any(len(v) < n for v in self.got.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timeout: got %s of %d" % ([len(v) for v in self.got.values()], n))
            for key, _ in self.sel.select(min(left, 1.0)):
                c = key.data
                try:
                    chunk = c.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise AssertionError("a reading client was closed")
                c.buf += chunk
                while True:
                    m = self._parse(c)
                    if m is None:
                        break
                    self.got[c].append(m)

    @staticmethod
    def _parse(c):
        b = c.buf
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < off + n:
            return None
        assert b[0] == 0x81, "expected one text frame, got 0x%02x" % b[0]
        c.buf = b[off + n:]
        return json.loads(b[off:off + n])["n"]


class SlowReader(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server("--max-outbound", 65536)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_slow_reader_closed_others_unaffected(self):
        # The slow client: a small receive buffer, and it never reads.
        slow_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_sock.settimeout(w.TIMEOUT)
        slow_sock.connect(("127.0.0.1", self.port))
        slow_sock.sendall(w.upgrade_request("/ws/room/slow/"))
        status, _, rest = w.read_http_head(slow_sock)
        self.assertEqual(status, 101)
        slow = w.WS(slow_sock, status, {}, rest)

        readers = [w.WS.connect(self.port, "/ws/room/slow/") for _ in range(3)]
        sender = readers[0]
        drainer = Drainer(readers)
        before = self.srv_stats()["closed_slow"]
        pad = "x" * 2000
        sent = 0
        while sent < 20000:
            batch = b"".join(w.frame(w.OP_TEXT, json.dumps({"n": sent + i, "pad": pad}))
                             for i in range(100))
            sender.sock.setblocking(True)
            sender.sock.sendall(batch)
            sender.sock.setblocking(False)
            sent += 100
            drainer.drain_until(sent)
            if self.srv_stats()["closed_slow"] > before:
                break
        stats = self.srv_stats()
        self.assertEqual(stats["closed_slow"], before + 1)
        for c, got in drainer.got.items():
            self.assertEqual(got, list(range(sent)))   # every message, in order
        # The slow client, reading at last: what got through, then close 1008.
        code = None
        try:
            while True:
                op, payload = slow.recv_message()
                if op == w.OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0]
                    break
        except (EOFError, ConnectionResetError):
            pass  # dropped after close_timeout: also closed
        if code is not None:
            self.assertEqual(code, 1008)
        slow.sock.close()
        for r in readers:
            r.sock.setblocking(True)
            r.sock.settimeout(w.TIMEOUT)
            r.close()
        self.assertLessEqual(stats["outbound_bytes"], 3 * 65536 + 65536 + 100000)

    def test_burst_to_fast_reader_passes(self):
        ws = w.WS.connect(self.port, "/ws/cmd/")
        ws.send_text("send 30 1000")  # 30 KB in one callback: within the limit
        for _ in range(30):
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"x" * 1000))
        ws.close()

    def test_burst_to_stalled_reader_closed(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(w.TIMEOUT)
        s.connect(("127.0.0.1", self.port))
        s.sendall(w.upgrade_request("/ws/cmd/"))
        status, _, rest = w.read_http_head(s)
        self.assertEqual(status, 101)
        before = self.srv_stats()["closed_slow"]
        s.sendall(w.frame(w.OP_TEXT, b"send 4000 1000"))  # 4 MB it will not read
        deadline = time.monotonic() + w.TIMEOUT
        while self.srv_stats()["closed_slow"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.srv_stats()["closed_slow"], before + 1)
        s.close()

    def srv_stats(self):
        return self.srv.stats()


class Idle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server("--idle-timeout", 200, "--close-timeout", 500)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_ping_answered_keeps_connection(self):
        ws = w.WS.connect(self.port, "/ws/echo/")
        for _ in range(3):
            fin, op, payload = ws.recv_frame()
            self.assertEqual(op, w.OP_PING)
            ws.send(w.OP_PONG, payload)
        ws.send_text("still open")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"still open"))
        ws.close()

    def test_ping_unanswered_closes_1001(self):
        ws = w.WS.connect(self.port, "/ws/echo/")
        fin, op, payload = ws.recv_frame()
        self.assertEqual(op, w.OP_PING)
        # no pong: after another idle_timeout, close 1001
        fin, op, payload = ws.recv_frame()
        self.assertEqual(op, w.OP_CLOSE)
        self.assertEqual(struct.unpack("!H", payload[:2])[0], 1001)
        ws.send(w.OP_CLOSE, payload[:2])
        ws.expect_eof()
        stats = self.srv.stats()
        self.assertGreaterEqual(stats["pings_sent"], 2)
        self.assertGreaterEqual(stats["idle_closed"], 1)


if __name__ == "__main__":
    w.main()
