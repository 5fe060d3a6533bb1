"""tests/fault/test_fault_input.py - abusive input on open WebSocket connections.

Against tests/ws_echo_server on 127.0.0.1: invalid UTF-8 (1007), oversize messages
and frames (1009), and ping and pong floods. The abuser sits in a room with a
listener, which must receive nothing of what was refused (its next message is the
witness's marker sent afterwards); a control pair in another room keeps exchanging
messages throughout (faultlib.Control); parsers, queued bytes and connections are
back to their baseline afterwards.

The byte-level cases (every invalid sequence, split at every point; lengths one byte
over the limit) are in tests/ws/test_ws_utf8.py and test_ws_limits.py; these tests
add the effect on the others, many abusers at once, and the bounds.
"""

import json
import socket
import struct
import time

import faultlib as f
import wsclient as w
from test_fault_clients import parse_frames, raw_connect, read_to_end, ws_over
from test_ws_utf8 import INVALID


class RoomCase(f.ControlledTest):
    """A listener and a witness in room "abuse"; the abuser joins it too."""

    ROOM = "/ws/room/abuse/"

    def make_control(self):
        return f.echo_room(self.port)

    def setUp(self):
        super().setUp()
        self.listener = w.WS.connect(self.port, self.ROOM)
        self.witness = w.WS.connect(self.port, self.ROOM)
        self.marks = 0

    def tearDown(self):
        self.listener.close()
        self.witness.close()
        super().tearDown()

    def assert_nothing_delivered(self):
        """The listener's next message is the witness's marker: whatever the abuser
        sent before it never reached the room."""
        self.marks += 1
        self.witness.send_text(json.dumps({"mark": self.marks}))
        for ws in (self.listener, self.witness):
            op, data = ws.recv_message()
            self.assertEqual((op, json.loads(data)), (w.OP_TEXT, {"mark": self.marks}))

    def settled(self, base):
        """Waits until only the base connections and the room pair are left."""
        return self.srv.wait_stats(
            lambda s: s["tcp_active"] == base["tcp_active"] and s["input_contexts"] == 0,
            what="abusers gone")


class InvalidUtf8(RoomCase):
    """Text that is not valid UTF-8 (in one frame, at the end of a 1 MiB message, in a
    later fragment, from 100 clients at once) closes the abuser with 1007 (counted
    in closed_protocol), and nothing of it reaches the other members of its room."""

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-message", 2 << 20)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_each_invalid_sequence_in_a_room(self):
        base = self.srv.stats()
        for bad in INVALID:
            ws = w.WS.connect(self.port, self.ROOM)
            ws.send(w.OP_TEXT, b'{"m":"' + bad + b'"}')
            ws.expect_close(1007)
        self.assert_nothing_delivered()
        after = self.settled(base)
        self.assertEqual(after["closed_protocol"] - base["closed_protocol"], len(INVALID))

    def test_invalid_byte_at_the_end_of_a_large_message(self):
        base = self.srv.stats()
        body = b'{"m":"' + "é".encode() * 500000 + b'\xff"}'     # ~1 MB
        ws = w.WS.connect(self.port, self.ROOM)
        ws.send(w.OP_TEXT, body)
        ws.expect_close(1007)
        ws = w.WS.connect(self.port, self.ROOM)                  # in 16 fragments
        step = len(body) // 16 + 1
        parts = [body[i:i + step] for i in range(0, len(body), step)]
        try:
            for i, p in enumerate(parts):
                ws.send(w.OP_TEXT if i == 0 else w.OP_CONT, p, fin=i == len(parts) - 1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        ws.expect_close(1007)
        self.assert_nothing_delivered()
        self.settled(base)

    def test_hundred_abusers_at_once(self):
        base = self.srv.stats()
        abusers = [w.WS.connect(self.port, self.ROOM) for _ in range(100)]
        for ws in abusers:                       # valid so far: parsers held
            ws.send(w.OP_TEXT, '{"m":"κόσμε'.encode(), fin=False)
        held = self.srv.wait_stats(lambda s: s["input_contexts"] >= 100)
        self.assertEqual(held["input_contexts"], 100)
        for ws in abusers:
            ws.send(w.OP_CONT, b"\xed\xa0\x80", fin=False)    # a surrogate
        for ws in abusers:
            ws.expect_close(1007)
        self.assert_nothing_delivered()
        after = self.settled(base)
        self.assertEqual(after["closed_protocol"] - base["closed_protocol"], 100)


class Oversize(RoomCase):
    """A message over max_message_bytes (64 KiB here) closes the abuser with 1009
    (closed_too_big) - in one frame, announced by a frame header (up to 2^63-1 bytes:
    nothing is allocated for it; the first payload byte is enough for wslay to
    check), or as 1000 small fragments - and nothing of
    it reaches the room. 50 clients holding unfinished messages just under the limit
    each hold one parser, which they give back once the messages are complete."""

    LIMIT = 65536

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-message", cls.LIMIT)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def body(self, n):
        """A JSON object of exactly n bytes."""
        return b'{"p":"' + b"x" * (n - 8) + b'"}'

    def send_all(self, ws, frames):
        try:
            for fr in frames:
                ws.send_raw(fr)
        except (BrokenPipeError, ConnectionResetError):
            pass                                  # closed before we were done

    def test_oversize_messages_in_a_room(self):
        base = self.srv.stats()
        ws = w.WS.connect(self.port, self.ROOM)
        ws.send(w.OP_TEXT, self.body(self.LIMIT + 1))
        ws.expect_close(1009)
        ws = w.WS.connect(self.port, self.ROOM)
        # (wslay checks the announced length when the first payload byte arrives)
        ws.send_raw(struct.pack("!BBQ", 0x81, 0x80 | 127, (1 << 63) - 1) + b"\0\0\0\0{")
        ws.expect_close(1009)
        ws = w.WS.connect(self.port, self.ROOM)
        body = self.body(100000)
        frames = [w.frame(w.OP_TEXT if i == 0 else w.OP_CONT, body[i * 100:(i + 1) * 100],
                          fin=i == 999) for i in range(1000)]
        self.send_all(ws, frames)
        ws.expect_close(1009)
        self.assert_nothing_delivered()
        after = self.settled(base)
        self.assertEqual(after["closed_too_big"] - base["closed_too_big"], 3)

    def test_many_unfinished_messages_under_the_limit(self):
        base = self.srv.stats()
        body = self.body(self.LIMIT)
        senders = [w.WS.connect(self.port, self.ROOM) for _ in range(50)]
        for ws in senders:
            ws.send(w.OP_TEXT, body[:-1], fin=False)
        held = self.srv.wait_stats(lambda s: s["input_contexts"] >= 50)
        self.assertEqual(held["input_contexts"], 50)
        for ws in senders:
            ws.send(w.OP_CONT, body[-1:])
        for member in (self.listener, self.witness):
            for _ in range(50):                   # exactly the limit: delivered
                self.assertEqual(member.recv_message(), (w.OP_TEXT, body))
        for ws in senders:
            ws.close()
        self.assert_nothing_delivered()
        after = self.settled(base)
        self.assertEqual(after["closed_too_big"], base["closed_too_big"])


class Burst(RoomCase):
    """A burst of 5 000 room messages in one write, with the memory layer's capacity
    at its default (100 per channel). The server reads them in one or two loop
    iterations, faster than it dispatches, so each member's channel fills up: what
    does not fit is dropped for that member and counted (cch_layer_stats.full) -
    never lost silently - and every member gets the rest in order. Afterwards the
    room works normally; other rooms never notice. (There is no per-client rate
    limit: see docs/security.md.)"""

    N = 5000

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--capacity", 100)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_burst_beyond_channel_capacity(self):
        base = self.srv.stats()
        abuser = w.WS.connect(self.port, self.ROOM)
        abuser.send_raw(b"".join(w.frame(w.OP_TEXT, '{"n":%d}' % i) for i in range(self.N)))
        members = (self.listener, self.witness, abuser)
        got = {m: [] for m in members}
        # The marker must come after the burst has left the channels (else it would
        # find them full too): every message read and every queued one dispatched.
        self.srv.wait_stats(lambda s: s["messages_in"] - base["messages_in"] >= self.N and
                            s["layer_delivered"] == s["layer_sent"], what="the burst dispatched")
        self.marks += 1
        self.witness.send_text(json.dumps({"mark": self.marks}))   # after the burst
        for m in members:
            while True:
                op, data = m.recv_message()
                body = json.loads(data)
                if "mark" in body:
                    break
                got[m].append(body["n"])
        after = self.srv.stats()
        delivered = sum(len(v) for v in got.values())
        print("burst of %d: %s delivered, %d dropped (counted)" %
              (self.N, [len(v) for v in got.values()], after["layer_full"] - base["layer_full"]))
        for seq in got.values():
            self.assertEqual(seq, sorted(set(seq)))               # in order, no repeats
            self.assertGreaterEqual(len(seq), 100)
        self.assertLess(delivered, 3 * self.N)                    # the capacity did bite
        self.assertEqual(after["layer_full"] - base["layer_full"], 3 * self.N - delivered)
        abuser.close()
        self.assert_nothing_delivered()                           # and the room works


class TinyFragments(f.ControlledTest):
    """A message of max_message_bytes (1 MiB, the default) sent as one-byte fragments
    (7 bytes on the wire each) may cost the server about its own size, not more: the
    adapter assembles it in one buffer. (Regression: wslay buffered each fragment in
    two allocations of its own, and such a message took ~96 MiB of the server's
    memory.) Exactly the limit passes; one byte more is refused with 1009 (counted
    in closed_too_big), before the fragment that crosses it is buffered."""

    LIMIT = 1024 * 1024

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-message", cls.LIMIT)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    ONE = b"\x00\x81\x00\x00\x00\x00a"           # continuation, not final, "a", mask 0

    def send_fragments(self, ws, n):
        """A text message of n one-byte fragments, the last one not sent yet."""
        ws.send(w.OP_TEXT, b"a", fin=False)
        left = n - 2
        while left:
            k = min(left, 100000)
            ws.send_raw(self.ONE * k)
            left -= k

    def test_one_byte_fragments(self):
        pid = self.srv.proc.pid
        base = self.srv.stats()
        rss0 = f.rss_kib(pid)
        ws = w.WS.connect(self.port, "/ws/echo/")
        self.send_fragments(ws, self.LIMIT)
        wire = 2 + 4 + 1 + (self.LIMIT - 2) * len(self.ONE)
        self.srv.wait_stats(lambda s: s["bytes_in"] - base["bytes_in"] >= wire,
                            timeout=60 * f.SLOWDOWN, what="the fragments read")
        grown = f.rss_kib(pid) - rss0
        print("1 MiB message in 1-byte fragments held: server RSS grew by %d KiB" % grown)
        if not f.under_valgrind(pid):
            self.assertLess(grown, 16 * 1024)
        ws.send(w.OP_CONT, b"a")                  # exactly the limit
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"a" * self.LIMIT))
        self.send_fragments(ws, self.LIMIT)
        ws.send(w.OP_CONT, b"a", fin=False)
        ws.send_raw(b"\x80\x81\x00\x00\x00\x00a")  # byte LIMIT + 1
        ws.expect_close(1009)
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"])
        self.assertEqual(after["closed_too_big"] - base["closed_too_big"], 1)
        self.assertEqual(after["input_contexts"], 0)


class PingFlood(f.ControlledTest):
    """A ping flood. A client that reads gets one pong per ping, with its payload, in
    order. A client that sends pings and reads nothing makes the server's pongs pile
    up: once they pass max_outbound_bytes (64 KiB here, + 4 KiB of slack for control
    frames) the server closes it with 1008 (closed_slow), so its memory stays bounded;
    then it is dropped after close_timeout. Unsolicited pongs are ignored."""

    LIMIT = 65536

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-outbound", cls.LIMIT, "--close-timeout", 500)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def test_ping_flood_answered(self):
        pid = self.srv.proc.pid
        rss0 = f.rss_kib(pid)
        ws = w.WS.connect(self.port, "/ws/echo/")
        n = 0
        for batch in range(20):
            payloads = [struct.pack("!Q", n + i) for i in range(1000)]
            ws.send_raw(b"".join(w.frame(w.OP_PING, p) for p in payloads))
            for p in payloads:
                op, data = ws.recv_message(allow_ping=True)
                self.assertEqual((op, data), (w.OP_PONG, p))
            n += 1000
        ws.send_text("after")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"after"))
        ws.close()
        grown = f.rss_kib(pid) - rss0
        print("20000 pings answered; server RSS grew by %d KiB" % grown)
        if not f.sanitized(pid):
            self.assertLess(grown, 8 * 1024)

    def test_ping_flood_not_read(self):
        base = self.srv.stats()
        ws = ws_over(raw_connect(self.port, rcvbuf=4096), "/ws/echo/")
        batch = b"".join(w.frame(w.OP_PING, b"p" * 125) for _ in range(500))   # 65.5 KB
        peak, sent = 0, 0
        try:
            while sent < 400:                     # at most 26 MB
                ws.sock.sendall(batch)
                sent += 1
                stats = self.srv.stats()
                peak = max(peak, stats["outbound_bytes"])
                if stats["closed_slow"] > base["closed_slow"]:
                    break
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"],
                                    what="the flooder dropped")
        print("unread ping flood: %d x 500 pings sent, peak outbound %d bytes" % (sent, peak))
        self.assertEqual(after["closed_slow"] - base["closed_slow"], 1)
        self.assertLessEqual(peak, self.LIMIT + 4096 + 2 * 1024)
        self.assertLess(after["outbound_bytes"], 1024)
        frames = parse_frames(ws.buf + read_to_end(ws.sock))
        ws.sock.close()
        self.assertTrue(all(op == w.OP_PONG for op, _ in frames[:-1]))
        closes = [p for op, p in frames if op == w.OP_CLOSE]
        if closes:
            self.assertEqual(struct.unpack("!H", closes[0][:2])[0], 1008)

    def test_pong_flood_ignored(self):
        ws = w.WS.connect(self.port, "/ws/echo/")
        pongs = b"".join(w.frame(w.OP_PONG, b"u" * 125) for _ in range(1000))
        for _ in range(20):
            ws.send_raw(pongs)
        ws.send_text("after pongs")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"after pongs"))
        ws.close()


if __name__ == "__main__":
    f.main()
