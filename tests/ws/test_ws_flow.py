"""tests/ws/test_ws_flow.py - flow control between loops (lib/ws/flow.c, issue 5).

Runs tests/ws_loops_server.c (argv[1]) with 2 loops over a memory layer of the
default capacity (100 messages per channel). Loop 1's members are made slow
(--slow-loop 1 --slow-us 50: each room message costs them 50 us more), so without flow control the
senders, whose own echoes come back from whichever loop holds them, would outrun
loop 1 and its members' channels would fill up: the layer would skip them (counted
as `full`, the clients would miss messages). Checked: every client gets every
message, the layer skipped nothing and was congested (so the loops did pause);
with a receiver that is never polled (--stuck: the layer is congested until its
channel is full) the clients are still served and lose nothing, the pauses being
bounded; a client paused by a congested
layer is served and closes normally, times out and is dropped while paused, and is
closed with 1001 by a graceful stop.

The flood keeps a window of messages in flight per sender (like bench/loadgen): a
sender sends its next message when one of its own comes back.
"""
import json
import re
import select
import signal
import struct
import time

import wsclient
from wsclient import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Server


def join(port, room, n):
    """n clients joining `room`; returns [(ws, loop)] (the loops alternate)."""
    return [(ws, h["loop"]) for ws, h in wsclient.join_room(port, room, n)]


def frames(buf):
    """The complete server frames at the start of buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        out.append((buf[0] & 15, buf[off:off + n]))
        buf = buf[off + n:]
    return out, buf


def layer_counters(err):
    m = re.search(r"LAYER sent (\d+) full (\d+) congested (\d+)", err)
    assert m, err[-3000:]
    return {"sent": int(m[1]), "full": int(m[2]), "congested": int(m[3])}


def flood(clients, senders, per_sender, window=16, timeout=120.0):
    """Senders (indices into clients) each send per_sender messages to the room,
    window in flight; every client reads everything. Returns the messages each
    client got per sender: [{sender: [n, ...]}]."""
    got = [dict((s, []) for s in senders) for _ in clients]
    sent = dict((s, 0) for s in senders)
    inflight = dict((s, 0) for s in senders)
    bufs = [ws.buf for ws, _ in clients]
    socks = dict((ws.sock.fileno(), i) for i, (ws, _) in enumerate(clients))
    for ws, _ in clients:
        ws.sock.setblocking(False)
    want = len(senders) * per_sender
    deadline = time.monotonic() + timeout * wsclient.server_wrap.SLOWDOWN
    try:
        while any(sum(len(v) for v in g.values()) < want for g in got):
            assert time.monotonic() < deadline, "flood timed out: %r" % [
                sum(len(v) for v in g.values()) for g in got]
            for s in senders:
                ws = clients[s][0]
                while inflight[s] < window and sent[s] < per_sender:
                    ws.sock.setblocking(True)
                    ws.send_text(json.dumps({"s": s, "n": sent[s]}))
                    ws.sock.setblocking(False)
                    sent[s] += 1
                    inflight[s] += 1
            ready, _, _ = select.select(list(socks), [], [], 1.0)
            for fd in ready:
                i = socks[fd]
                try:
                    chunk = clients[i][0].sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                assert chunk, "client %d: EOF during the flood" % i
                msgs, bufs[i] = frames(bufs[i] + chunk)
                for op, payload in msgs:
                    if op == OP_PING:                # a quiet client, under a slow build
                        clients[i][0].sock.setblocking(True)
                        clients[i][0].send(OP_PONG, payload)
                        clients[i][0].sock.setblocking(False)
                        continue
                    assert op == OP_TEXT, (i, op, payload)
                    m = json.loads(payload)
                    got[i][m["s"]].append(m["n"])
                    if m["s"] == i:
                        inflight[i] -= 1
    finally:
        for i, (ws, _) in enumerate(clients):
            ws.sock.setblocking(True)
            ws.buf = bufs[i]
    return got


class Flood(wsclient.unittest.TestCase):
    def test_slow_loop_loses_nothing(self):
        # Lossless by construction: the pause starts when a channel passes half its
        # capacity (50), and what the senders can still have in flight then (4 x 8)
        # fits in the other half. Loop 1 is slow enough to fall behind every time.
        server = Server("--loops", 2, "--capacity", 100, "--slow-loop", 1, "--slow-us", 50)
        clients = join(server.port, "flood", 20)
        self.assertEqual({loop for _, loop in clients}, {0, 1})
        senders = [0, 1, 2, 3]                      # two on each loop
        got = flood(clients, senders, 300, window=8)
        for g in got:                               # all of them, in each sender's order
            for s in senders:
                self.assertEqual(g[s], list(range(300)))
        for ws, _ in clients:
            ws.close()
        code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])
        c = layer_counters(err)
        self.assertEqual(c["full"], 0)
        self.assertGreater(c["congested"], 0)       # the loops did pause

    def test_receiver_never_polled(self):
        # The stuck channel is over the mark from the start: congested until the
        # room's messages fill it. Each loop pauses once, at most 100 ms, then reads
        # freely; once the channel is full the layer is calm again and the loops
        # hold their senders back as usual: the clients lose nothing.
        server = Server("--loops", 2, "--capacity", 100, "--stuck", "stuck")
        clients = join(server.port, "stuck", 6)
        start = time.monotonic()
        got = flood(clients, [0, 1], 200)
        elapsed = time.monotonic() - start
        for g in got:
            for s in (0, 1):
                self.assertEqual(g[s], list(range(200)))
        for ws, _ in clients:
            ws.close()
        code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])
        c = layer_counters(err)
        self.assertEqual(c["full"], 400 - 49)       # the stuck member, from 51 to 100
        self.assertLess(elapsed, 30 * wsclient.server_wrap.SLOWDOWN)


class Paused(wsclient.unittest.TestCase):
    """Clients of a congested layer (--stuck, and too few messages to fill the stuck
    channel): the first read of each after the handshake finds the layer congested
    and pauses it (100 ms at most)."""

    def test_paused_client_is_served_and_closes(self):
        server = Server("--loops", 2, "--capacity", 100, "--stuck", "p")
        clients = join(server.port, "p", 2)
        for i, (ws, _) in enumerate(clients):
            ws.send_text(json.dumps({"i": i}))
        for ws, _ in clients:
            got = sorted(json.loads(ws.recv_message()[1])["i"] for _ in range(2))
            self.assertEqual(got, [0, 1])
        for ws, _ in clients:                        # a close sent while paused
            code, _ = ws.close()
            self.assertEqual(code, 1000)
        code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])

    def test_paused_client_times_out(self):
        # idle 20 ms: ping, then close 1001, then (close timeout 20 ms, no answer)
        # dropped, all while its reading may still be paused.
        server = Server("--loops", 2, "--capacity", 100, "--stuck", "t",
                        "--idle-timeout", 20, "--close-timeout", 20)
        for _ in range(3):
            clients = join(server.port, "t", 2)
            for ws, _ in clients:
                ws.send_text("{}")                   # read: the client is paused
            for ws, _ in clients:
                seen = []
                try:
                    while True:
                        fin, op, payload = ws.recv_frame()   # no pong, no close reply
                        seen.append(op)
                except (EOFError, ConnectionResetError):
                    pass
                self.assertIn(OP_CLOSE, seen)
                ws.sock.close()
        code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])

    def test_stop_closes_paused_clients(self):
        server = Server("--loops", 2, "--capacity", 100, "--stuck", "s")
        clients = join(server.port, "s", 4)
        for ws, _ in clients:
            ws.send_text("{}")
        server.proc.send_signal(signal.SIGTERM)
        for ws, _ in clients:
            code, _ = ws.expect_close(1001)
            self.assertEqual(code, 1001)
        code, err = server.wait()
        self.assertEqual(code, 0, err[-3000:])


if __name__ == "__main__":
    wsclient.main()
