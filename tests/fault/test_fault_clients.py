"""tests/fault/test_fault_clients.py - clients that misbehave at the connection level.

Against tests/ws_echo_server on 127.0.0.1, each class with its own server and limits:
many clients that stop reading (1008), half-open clients that vanish without FIN or
RST (idle ping, 1001, then dropped), a connection flood beyond max_connections (503)
and beyond the descriptor limit, and slowloris handshakes (408). In every test a
control pair in another room keeps exchanging messages during the abuse (see
faultlib.Control), and afterwards the server is back to its baseline: no connection,
parser or queued byte left behind.

The single-client cases are in tests/ws/ (test_ws_limits: one slow reader, an
unanswered idle ping; test_ws_handshake: 503 with max_connections 3, one 408); these
tests scale them up and check the others and the cleanup.
"""

import json
import select
import socket
import struct
import time

import faultlib as f
import wsclient as w
from test_ws_limits import Drainer


def raw_connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(w.TIMEOUT)
    s.connect(("127.0.0.1", port))
    return s


def ws_over(sock, path):
    """Completes a handshake on a connected socket; returns a wsclient.WS."""
    sock.sendall(w.upgrade_request(path))
    status, headers, rest = w.read_http_head(sock)
    assert status == 101, (status, headers)
    return w.WS(sock, status, headers, rest)


def read_to_end(sock, timeout=w.TIMEOUT):
    """Everything the server sends until it closes (EOF or reset)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def parse_frames(data):
    """Server frames in `data`: a list of (opcode, payload); a frame cut short at the
    end (the server dropped the connection in the middle of a write) is ignored."""
    out, off = [], 0
    while len(data) - off >= 2:
        b0, b1 = data[off], data[off + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if len(data) - off < 4:
                break
            n, hl = struct.unpack("!H", data[off + 2:off + 4])[0], 4
        elif n == 127:
            if len(data) - off < 10:
                break
            n, hl = struct.unpack("!Q", data[off + 2:off + 10])[0], 10
        if len(data) - off < hl + n:
            break
        out.append((b0 & 0x0F, data[off + hl:off + hl + n]))
        off += hl + n
    return out


class StalledReaders(f.ControlledTest):
    """20 members of a busy room stop reading. The server must close each with 1008
    once its outbound buffer (64 KiB here) is full, count it (closed_slow), drop it
    after close_timeout when it does not answer (close_timeouts), keep what it holds
    for them bounded by the limit, and deliver every message, in order, to the room's
    members that do read; the control pair in another room is unaffected."""

    N = 20
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

    def test_many_stalled_readers_in_a_room(self):
        base = self.srv.stats()
        stalled = [ws_over(raw_connect(self.port, rcvbuf=4096), "/ws/room/busy/")
                   for _ in range(self.N)]
        readers = [w.WS.connect(self.port, "/ws/room/busy/") for _ in range(2)]
        sender = readers[0]
        drainer = Drainer(readers)
        pad = "x" * 2000
        sent, peak = 0, 0
        while sent < 60000:
            batch = b"".join(w.frame(w.OP_TEXT, json.dumps({"n": sent + i, "pad": pad}))
                             for i in range(100))
            sender.sock.setblocking(True)
            sender.sock.sendall(batch)
            sender.sock.setblocking(False)
            sent += 100
            drainer.drain_until(sent)
            stats = self.srv.stats()
            peak = max(peak, stats["outbound_bytes"])
            if stats["closed_slow"] - base["closed_slow"] >= self.N:
                break
        self.assertEqual(stats["closed_slow"] - base["closed_slow"], self.N)
        print("%d messages to the room; peak outbound %d bytes" % (sent, peak))
        for got in drainer.got.values():
            self.assertEqual(got, list(range(sent)))       # every message, in order
        # Bounded: at most the limit (plus the frame that crossed it) per stalled client.
        self.assertLessEqual(peak, (self.N + 3) * (self.LIMIT + 4096))
        # None answers the 1008 close: each is dropped after close_timeout.
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"] + 2,
                                    what="stalled clients dropped")
        self.assertEqual(after["close_timeouts"] - base["close_timeouts"], self.N)
        self.assertLess(after["outbound_bytes"], 1024)      # the stats reply only
        self.assertEqual(after["app_active"], base["app_active"] + 2)
        # A stalled client reading at last: a prefix of the room's messages, in order,
        # then (if it made it into the socket before the drop) close 1008, then EOF.
        for ws in stalled:
            frames = parse_frames(ws.buf + read_to_end(ws.sock))
            ws.sock.close()
            texts = [json.loads(p)["n"] for op, p in frames if op == w.OP_TEXT]
            self.assertEqual(texts, list(range(len(texts))))
            closes = [p for op, p in frames if op == w.OP_CLOSE]
            if closes:
                self.assertEqual(struct.unpack("!H", closes[0][:2])[0], 1008)
        for r in readers:
            r.sock.setblocking(True)
            r.sock.settimeout(w.TIMEOUT)
            r.close()


class HalfOpen(f.ControlledTest):
    """Clients that vanish without FIN or RST: the socket stays open but the client
    neither reads nor writes (a pulled cable, a suspended laptop). The server must send
    an idle ping after idle_timeout, close with 1001 after another idle_timeout without
    an answer (idle_closed), drop the TCP connection after close_timeout
    (close_timeouts), run the consumer's disconnect, and free what each held: a
    parser for an unfinished frame or message (input_contexts), output the client did
    not read (outbound_bytes)."""

    IDLE = int(300 * f.SLOWDOWN)

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--idle-timeout", cls.IDLE, "--close-timeout", cls.IDLE,
                               "--max-outbound", 16 << 20)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def test_vanished_clients_reclaimed(self):
        base = self.srv.stats()
        idle = [w.WS.connect(self.port, "/ws/echo/") for _ in range(20)]
        mid_message = [w.WS.connect(self.port, "/ws/echo/") for _ in range(10)]
        for ws in mid_message:                       # the first fragment of a message
            ws.send(w.OP_TEXT, b"a" * 1000, fin=False)
        mid_frame = [w.WS.connect(self.port, "/ws/room/gone/") for _ in range(5)]
        for ws in mid_frame:                         # half a frame header
            ws.send_raw(w.frame(w.OP_TEXT, b"{}")[:3])
        unread = [ws_over(raw_connect(self.port, rcvbuf=4096), "/ws/cmd/") for _ in range(5)]
        for ws in unread:                            # 6 MB it will never read
            ws.send_text("send 6000 1000")
        vanished = idle + mid_message + mid_frame + unread
        held = self.srv.wait_stats(lambda s: s["input_contexts"] >= 15 and
                                   s["outbound_bytes"] > 5 * 1000000,
                                   what="parsers and output held for the vanished")
        self.assertEqual(held["input_contexts"], 15)
        t0 = time.monotonic()
        # ... now they are silent. The server must reclaim every one of them.
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"],
                                    timeout=4 * self.IDLE / 1000 + 10,
                                    what="vanished clients reclaimed")
        n = len(vanished)
        print("%d vanished clients reclaimed in %.2f s (idle timeout %d ms)" %
              (n, time.monotonic() - t0, self.IDLE))
        self.assertEqual(after["idle_closed"] - base["idle_closed"], n)
        self.assertGreaterEqual(after["pings_sent"] - base["pings_sent"], n)
        self.assertEqual(after["close_timeouts"] - base["close_timeouts"], n)
        self.assertEqual(after["input_contexts"], 0)
        self.assertLess(after["outbound_bytes"], 1024)
        self.assertEqual(after["app_active"], base["app_active"])
        self.assertEqual(after["ws_active"], base["ws_active"])
        # What a vanished client would have seen: a ping, close 1001, then the end.
        for ws in idle + mid_message + mid_frame:
            frames = parse_frames(ws.buf + read_to_end(ws.sock))
            ws.sock.close()
            self.assertEqual([op for op, _ in frames], [w.OP_PING, w.OP_CLOSE])
            self.assertEqual(struct.unpack("!H", frames[1][1][:2])[0], 1001)
        for ws in unread:                            # the server closed it too
            read_to_end(ws.sock)
            ws.sock.close()


class Flood(f.ControlledTest):
    """A connection flood beyond max_connections (40 here): every connection beyond
    the limit gets "503 Service Unavailable" with "Retry-After: 1" at once, whether
    it sent a request or nothing, and is closed; those rejected connections take no
    slot (rejected_busy counts them); the server keeps serving the connections it
    has, and accepts new ones as soon as slots are free."""

    MAX = 40
    FLOOD = 300

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-conns", cls.MAX, "--close-timeout", 1000)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def expect_503(self, sock):
        status, headers, body = w.read_http_head(sock)
        self.assertEqual(status, 503)
        self.assertEqual(headers.get("retry-after"), "1")
        self.assertEqual(headers.get("connection"), "close")
        read_to_end(sock)                         # then the server closes

    def test_flood_beyond_max_connections(self):
        base = self.srv.stats()                   # control pair + this connection
        holders, rejected = [], 0
        for _ in range(self.MAX - 2):             # every slot taken
            ws, busy = f.connect_when_free(self.port, "/ws/echo/")
            holders.append(ws)
            rejected += busy
        flood = []
        for i in range(self.FLOOD):               # all open at once
            s = raw_connect(self.port)
            if i % 2 == 0:
                s.sendall(w.upgrade_request("/ws/echo/"))
            flood.append(s)
        for s in flood:
            self.expect_503(s)
            rejected += 1
        # The holders are still served during and after the flood.
        for h in holders[:5]:
            h.send_text("still here")
            self.assertEqual(h.recv_message(), (w.OP_TEXT, b"still here"))
        for s in flood:
            s.close()
        # Full: one more is refused too. Then slots come back as holders leave.
        extra = raw_connect(self.port)
        self.expect_503(extra)
        extra.close()
        rejected += 1
        for h in holders[:10]:
            h.close()
        fresh = []
        for _ in range(10):
            ws, busy = f.connect_when_free(self.port, "/ws/echo/")
            fresh.append(ws)
            rejected += busy
        for ws in fresh:
            ws.send_text("new")
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"new"))
        for ws in fresh + holders[10:]:
            ws.close()
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"],
                                    what="every connection gone")
        self.assertEqual(after["rejected_busy"] - base["rejected_busy"], rejected)
        self.assertEqual(after["app_active"], base["app_active"])


class DescriptorLimit(f.ControlledTest):
    """A flood beyond the process's descriptor limit (64 here, with max_connections
    far above it): connections the server cannot accept (EMFILE) are closed by libuv
    at once, without an answer; the server neither crashes nor spins, keeps serving
    the connections it has, and accepts again once descriptors are free."""

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--max-conns", 10000, nofile=64)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def test_flood_beyond_descriptor_limit(self):
        base = self.srv.stats()
        socks = []
        for _ in range(150):
            s = raw_connect(self.port)
            s.sendall(w.upgrade_request("/ws/echo/"))
            socks.append(s)
        opened, dropped = [], 0
        for s in socks:
            try:
                status, headers, rest = w.read_http_head(s)
            except (EOFError, ConnectionResetError):
                dropped += 1
                s.close()
                continue
            self.assertEqual(status, 101)
            opened.append(w.WS(s, status, headers, rest))
        print("descriptor limit 64: %d accepted, %d dropped" % (len(opened), dropped))
        self.assertGreater(dropped, 0, "the descriptor limit was not reached")
        self.assertLess(len(opened), 64)
        for ws in opened:                          # the accepted ones work
            ws.send_text("ok")
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"ok"))
        for ws in opened:
            ws.close()
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"],
                                    what="every connection gone")
        self.assertEqual(after["app_active"], base["app_active"])
        self.assertEqual(after["handshakes"] - base["handshakes"], len(opened) + 1)
        # Descriptors are free again: new connections are accepted.
        again = [w.WS.connect(self.port, "/ws/echo/") for _ in range(20)]
        for ws in again:
            ws.close()


class Slowloris(f.ControlledTest):
    """Slowloris: 200 clients trickle their request heads one byte at a time, each far
    slower than the handshake timeout (1 s here) allows. The server must answer each
    with 408 once handshake_timeout has passed since it connected - however
    recently its last byte came - close it, and count it (handshake_timeouts); a
    normal client connecting in the middle of it gets its 101 and its echo at once.
    With the connection limit taken up by slowloris clients, newcomers get 503 until
    the timeout frees the slots."""

    TIMEOUT_MS = int(1000 * f.SLOWDOWN)

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--handshake-timeout", cls.TIMEOUT_MS, "--max-conns", 1000)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def trickle(self, socks, req, on_round=None):
        """Sends req to every socket one byte per round (20 ms apart) until each got
        its answer. Returns {sock: (status, bytes of req sent by then)}."""
        sent = {s: 0 for s in socks}
        answers = {}
        deadline = time.monotonic() + 30 * f.SLOWDOWN
        rounds = 0
        while len(answers) < len(socks):
            self.assertLess(time.monotonic(), deadline, "no 408 for %d" % (len(socks) - len(answers)))
            for s in socks:
                if s not in answers and sent[s] < len(req):
                    s.sendall(req[sent[s]:sent[s] + 1])
                    sent[s] += 1
            readable, _, _ = select.select([s for s in socks if s not in answers], [], [], 0.02)
            for s in readable:
                status, headers, _ = w.read_http_head(s)
                answers[s] = (status, sent[s])
                read_to_end(s)
            rounds += 1
            if on_round:
                on_round(rounds)
        return answers

    def test_slowloris_heads_get_408(self):
        base = self.srv.stats()
        # One byte per round of at least 20 ms: longer than the timeout by far.
        req = w.upgrade_request("/ws/echo/", extra=["X-Pad: " + "p" * int(200 * f.SLOWDOWN)])
        socks = [raw_connect(self.port) for _ in range(200)]
        checked = []

        def normal_client(rounds):
            if rounds == 10:                      # in the middle of the trickle
                ws = w.WS.connect(self.port, "/ws/echo/")
                ws.send_text("not blocked")
                checked.append(ws.recv_message())
                ws.close()

        answers = self.trickle(socks, req, normal_client)
        for s in socks:
            s.close()
        self.assertEqual(checked, [(w.OP_TEXT, b"not blocked")])
        for status, nsent in answers.values():
            self.assertEqual(status, 408)
            self.assertLess(nsent, len(req))      # answered before the head was complete
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"],
                                    what="slowloris connections closed")
        self.assertEqual(after["handshake_timeouts"] - base["handshake_timeouts"], 200)


class SlowlorisAtTheLimit(f.ControlledTest):
    """Slowloris clients that take every connection slot (max_connections 30): a
    newcomer gets 503 while they hold them, and is accepted once the handshake
    timeout has closed them - the timeout bounds how long they can deny service."""

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--handshake-timeout", 1000, "--max-conns", 30)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def test_slots_come_back_after_the_timeout(self):
        base = self.srv.stats()                    # control pair + this connection
        socks, busy = [], 0
        while len(socks) < 28:
            s = raw_connect(self.port)
            s.sendall(b"GET /ws/echo/ HTTP/1.1\r\n")
            socks.append(s)
            if len(socks) == 28:                   # the stats connection may still
                r, _, _ = select.select(socks, [], [], 0.2)   # hold a slot: 503
                for s in r:
                    self.assertEqual(w.read_http_head(s)[0], 503)
                    s.close()
                    socks.remove(s)
                    busy += 1
        status, _, _ = w.http(self.port, w.upgrade_request("/ws/echo/"))
        self.assertEqual(status, 503)
        busy += 1
        for s in socks:                            # one more byte each: no reprieve
            s.sendall(b"H")
        for s in socks:
            self.assertEqual(w.read_http_head(s)[0], 408)
            read_to_end(s)
            s.close()
        ws, more = f.connect_when_free(self.port, "/ws/echo/")
        busy += more
        ws.send_text("in")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"in"))
        ws.close()
        after = self.srv.wait_stats(lambda s: s["tcp_active"] == base["tcp_active"])
        self.assertEqual(after["handshake_timeouts"] - base["handshake_timeouts"], 28)
        self.assertEqual(after["rejected_busy"] - base["rejected_busy"], busy)


if __name__ == "__main__":
    f.main()
