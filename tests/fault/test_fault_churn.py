"""tests/fault/test_fault_churn.py - 100 000 short connect/close cycles.

Four client processes open and end connections against tests/ws_echo_server
(--count-alloc) as fast as it serves them, in eight ways in turn: a handshake, one
echoed message and a clean close (three of every eight); a room of its own (a group
created and dropped); a reset (RST) right after the handshake; a TCP connection
that sends nothing; an unfinished message and then FIN; an upgrade to an unknown
path (404). Meanwhile a control pair keeps exchanging messages in a room.

Afterwards the server must be back where it was after a warm-up of 1 000 cycles:
  - no connection, parser or queued byte left (its counters);
  - the library's live heap (the counting allocator: exact) within +64 KiB of the
    warm-up value (the pools of queue parts and the spare parser's message buffer,
    up to 4 KiB, may end a little larger or smaller);
  - its resident memory (/proc/PID/status VmRSS) within +2 MiB of the warm-up value
    (not checked under ASan or valgrind, whose allocators keep freed memory).
The number of cycles is CHURN_CYCLES (default 100 000, about 10 s on a 2-CPU
machine (15 s with ASan); 10 000 under the valgrind pass); every worker has a 240 s deadline, so the test is
bounded in time. The measured rate and memory are printed.
"""

import multiprocessing
import os
import socket
import struct
import sys
import time
import unittest

import faultlib as f
import wsclient as w

# Under the valgrind pass (faultlib.WRAPPED) 10 000 cycles are enough to look for
# leaks and errors (about 7 s there).
CYCLES = int(os.environ.get("CHURN_CYCLES", "10000" if f.WRAPPED else "100000"))
WORKERS = 4
WARMUP = 300 if f.WRAPPED else 1000
DEADLINE_S = 240
RSS_TOLERANCE_KIB = 2 * 1024
HEAP_TOLERANCE = 64 * 1024
KINDS = 8


def _frame(opcode, payload, fin=True):
    return w.frame(opcode, payload, fin=fin, key=b"\x00\x00\x00\x00")


ECHO_REQ = w.upgrade_request("/ws/echo/")
NOPE_REQ = w.upgrade_request("/ws/nope/")
HELLO = _frame(w.OP_TEXT, b"c")
HELLO_ECHO = b"\x81\x01c"
CLOSE = _frame(w.OP_CLOSE, b"\x03\xe8")
PARTIAL = _frame(w.OP_TEXT, b'{"half', fin=False)
RST = struct.pack("ii", 1, 0)


def _recv_until(s, marker, buf=b""):
    while marker not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise EOFError("EOF before %r (got %r)" % (marker, buf[:200]))
        buf += chunk
    return buf


def _to_eof(s):
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass


def one_cycle(port, kind, tag, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=w.TIMEOUT,
                                 source_address=(source, 0))
    try:
        if kind == 5:                                   # TCP only, nothing sent
            return
        if kind == 7:                                   # no route: 404
            s.sendall(NOPE_REQ)
            head = _recv_until(s, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404"), head[:100]
            _to_eof(s)
            return
        if kind == 3:                                   # a room (group) of its own
            s.sendall(w.upgrade_request("/ws/room/%s/" % tag))
        else:
            s.sendall(ECHO_REQ)
        buf = _recv_until(s, b"\r\n\r\n")
        assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
        buf = buf.split(b"\r\n\r\n", 1)[1]
        if kind == 4:                                   # reset after the handshake
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            return
        if kind == 6:                                   # unfinished message, FIN
            s.sendall(PARTIAL)
            return
        if kind == 3:
            body = b'{"t":"%s"}' % tag.encode()
            s.sendall(_frame(w.OP_TEXT, body))
            _recv_until(s, body, buf)
        else:
            s.sendall(HELLO)
            _recv_until(s, HELLO_ECHO, buf)
        s.sendall(CLOSE)
        _to_eof(s)                                      # close reply, then EOF
    finally:
        s.close()


def worker(port, wid, start, count, deadline, out):
    """Runs cycles start .. start+count-1; puts (done, error) on out."""
    done = 0
    # Each worker has a source address of its own (all of 127/8 is loopback): the
    # connections a client closes first wait in TIME_WAIT, and 100 000 of them
    # would otherwise come close to exhausting one address's ephemeral ports.
    source = "127.0.0.%d" % (10 + wid)
    try:
        for i in range(start, start + count):
            if time.monotonic() > deadline:
                break
            one_cycle(port, i % KINDS, "w%d-%d" % (wid, i), source)
            done += 1
        out.put((done, None))
    except BaseException as e:
        out.put((done, "cycle %d (kind %d): %r" % (start + done, (start + done) % KINDS, e)))


def run_cycles(port, total):
    """Runs `total` cycles over WORKERS processes. Returns (done, seconds)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per = total // WORKERS
    t0 = time.monotonic()
    deadline = t0 + DEADLINE_S
    procs = [ctx.Process(target=worker,
                         args=(port, k, k * per, per + (total % WORKERS if k == 0 else 0),
                               deadline, out))
             for k in range(WORKERS)]
    for p in procs:
        p.start()
    done, errors = 0, []
    for _ in procs:
        n, err = out.get(timeout=DEADLINE_S + 60)
        done += n
        if err:
            errors.append(err)
    for p in procs:
        p.join(30)
    elapsed = time.monotonic() - t0
    if errors:
        raise AssertionError("client errors: %s" % errors)
    return done, elapsed


class Churn(f.ControlledTest):
    """100 000 connect/close cycles: the server ends every connection, frees what it
    held, stays responsive to the control pair, and its memory returns to its
    warm-up level."""

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer("--count-alloc")
        cls.port = cls.srv.port
        cls.pid = cls.srv.proc.pid

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def settle(self, base_active):
        """Waits until only the control pair (and the stats connection) is left."""
        return self.srv.wait_stats(
            lambda s: s["tcp_active"] == base_active and s["input_contexts"] == 0,
            timeout=30 * f.SLOWDOWN, what="every churned connection gone")

    def test_connect_close_cycles(self):
        active = self.srv.stats()["tcp_active"]          # control pair + stats
        done, _ = run_cycles(self.port, WARMUP)
        self.assertEqual(done, WARMUP)
        warm = self.settle(active)
        warm_rss = f.rss_kib(self.pid)

        done, elapsed = run_cycles(self.port, CYCLES)
        after = self.settle(active)
        after_rss = f.rss_kib(self.pid)
        print("%d cycles in %.1f s: %.0f cycles/s; live heap %d -> %d bytes; "
              "VmRSS %d -> %d KiB" % (done, elapsed, done / elapsed, warm["live_bytes"],
                                      after["live_bytes"], warm_rss, after_rss))
        self.assertEqual(done, CYCLES, "only %d cycles in %d s" % (done, DEADLINE_S))
        opened = after["tcp_accepted"] - warm["tcp_accepted"]
        self.assertGreaterEqual(opened, CYCLES)
        self.assertEqual(after["app_active"], warm["app_active"])
        self.assertEqual(after["ws_active"], warm["ws_active"])
        self.assertLess(after["outbound_bytes"], 1024)
        self.assertLessEqual(after["live_bytes"] - warm["live_bytes"], HEAP_TOLERANCE)
        if f.sanitized(self.pid):
            print("RSS not compared: the server runs under a sanitizer or valgrind")
        else:
            self.assertLessEqual(after_rss - warm_rss, RSS_TOLERANCE_KIB)


if __name__ == "__main__":
    f.main()
