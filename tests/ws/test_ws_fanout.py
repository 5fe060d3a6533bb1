"""tests/ws/test_ws_fanout.py - 1 000 clients in one room, and what an idle one costs.

Every one of 1 000 clients receives every message of three senders, in each sender's
order; each message's frame is built once and shared by all members (the server's
frames_built / frames_shared counters). With the counting allocator, 1 000 idle
connections cost well under 1 KiB of the library's memory each.
"""

import json
import resource
import selectors
import struct
import time
import unittest

import wsclient as w

N_CLIENTS = 1000
N_SENDERS = 3
N_MESSAGES = 10


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_frames(c):
    out = []
    b = c.buf
    while len(b) >= 2:
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                break
            n, off = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                break
            n, off = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < off + n:
            break
        assert b[0] == 0x81, "expected a text frame, got 0x%02x" % b[0]
        out.append(b[off:off + n])
        b = b[off + n:]
    c.buf = b
    return out


class Fanout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise_fd_limit()
        cls.srv = w.Server("--count-alloc")
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_1000_clients_one_room(self):
        clients = [w.WS.connect(self.port, "/ws/room/big/", timeout=30) for _ in range(N_CLIENTS)]
        before = self.srv.stats()
        self.assertEqual(before["ws_active"], N_CLIENTS + 1)
        senders = clients[:N_SENDERS]
        for i in range(N_MESSAGES):
            for s_idx, s in enumerate(senders):
                s.send_text(json.dumps({"sender": s_idx, "seq": i}))
        sel = selectors.DefaultSelector()
        got = {}
        for c in clients:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
            got[c] = []
        want = N_SENDERS * N_MESSAGES
        pending = set(clients)
        deadline = time.monotonic() + 60
        while pending:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "timeout: %d clients incomplete" % len(pending))
            for key, _ in sel.select(min(left, 1.0)):
                c = key.data
                try:
                    chunk = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                self.assertTrue(chunk, "a client was closed")
                c.buf += chunk
                got[c].extend(json.loads(m) for m in parse_frames(c))
                if len(got[c]) >= want:
                    pending.discard(c)
        for c in clients:
            self.assertEqual(len(got[c]), want)
            for s_idx in range(N_SENDERS):
                seqs = [m["seq"] for m in got[c] if m["sender"] == s_idx]
                self.assertEqual(seqs, list(range(N_MESSAGES)))
        after = self.srv.stats()
        self.assertEqual(after["frames_built"] - before["frames_built"], want)
        self.assertEqual(after["frames_shared"] - before["frames_shared"], want * (N_CLIENTS - 1))
        self.assertEqual(after["messages_out"] - before["messages_out"], want * N_CLIENTS + 1)
        # far fewer writes than deliveries: each connection writes a batch at once
        self.assertLess(after["writes"] - before["writes"], want * N_CLIENTS)
        sel.close()
        for c in clients:
            c.sock.setblocking(True)
            c.sock.settimeout(w.TIMEOUT)
            c.close(wait=False)

    def test_idle_connection_memory(self):
        warm = [w.WS.connect(self.port, "/ws/echo/") for _ in range(10)]
        for c in warm:
            c.close()
        base = self.wait_active(1)["live_bytes"]
        clients = [w.WS.connect(self.port, "/ws/echo/", timeout=30) for _ in range(N_CLIENTS)]
        for c in clients:           # every connection has done some work and is idle
            c.send_text("ping")
        for c in clients:
            self.assertEqual(c.recv_message(), (w.OP_TEXT, b"ping"))
        stats = self.srv.stats()
        per_conn = (stats["live_bytes"] - base) / N_CLIENTS
        print("library memory per idle connection: %.0f bytes" % per_conn)
        self.assertEqual(stats["input_contexts"], 0)   # no parser kept while idle
        self.assertLess(stats["outbound_bytes"], 200)  # only the stats reply itself
        self.assertLess(per_conn, 1024)
        for c in clients:
            c.close(wait=False)
        self.wait_active(1)

    def wait_active(self, n):
        deadline = time.monotonic() + 30
        while True:
            stats = self.srv.stats()
            if stats["tcp_active"] == n or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)


if __name__ == "__main__":
    w.main()
