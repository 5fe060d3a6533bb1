"""tests/fault/faultlib.py - shared parts of the fault and abuse tests (tests/fault/).

Built on the conformance suite's raw-socket client (tests/ws/wsclient.py):
  - EchoServer: tests/ws_echo_server with options, optionally under a lower
    descriptor limit; ChatServer: the example chat (build/examples/cchannels-chat) on
    a free port, its log in a file;
  - Control: two clients in one room that keep exchanging messages in a background
    thread while a test abuses the server, so that every test can check that OTHER
    clients are unaffected (no error, progress during the abuse, bounded round trips);
  - rss_kib / sanitized: the server's resident memory, and whether the server runs
    under a sanitizer (whose allocator keeps freed memory: RSS says nothing then);
  - wait_for: polls a condition (the server's counters) with a deadline.

Every wait is bounded (and scaled by SLOWDOWN when the servers run under
$CCH_SERVER_WRAPPER, the valgrind pass: see tests/server_wrap.py). main() takes the echo server (argv[1]) and, for the chat
tests, the chat server (argv[2]).
"""

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import wsclient as w

try:
    import server_wrap  # tests/server_wrap.py: servers under $CCH_SERVER_WRAPPER (valgrind)
except ImportError:  # pragma: no cover
    class server_wrap:  # noqa: N801
        WRAPPER = []
        SLOWDOWN = 1.0

        @staticmethod
        def command(argv):
            return [str(a) for a in argv]

        @staticmethod
        def report(text):
            return None

WRAPPED = bool(server_wrap.WRAPPER)
SLOWDOWN = server_wrap.SLOWDOWN
CHAT_BIN = None


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class EchoServer(w.Server):
    """tests/ws_echo_server with options (see its --help-less flag list). `nofile`
    starts it with that descriptor limit (soft and hard)."""

    def __init__(self, *args, nofile=None):
        if nofile is None:
            super().__init__(*args)
            return
        self.args = [str(a) for a in args]

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(server_wrap.command([w.server_bin(), *self.args]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=limit)
        line = self._readline(w.TIMEOUT)
        if not line.startswith(b"PORT "):
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError("server did not start: %r %r" % (line, err[-2000:]))
        self.port = int(line.split()[1])

    def wait_stats(self, cond, timeout=w.TIMEOUT, what="condition"):
        """Polls the server's counters until cond(stats) holds; returns the stats."""
        return wait_for(self.stats, cond, timeout, what)


def wait_for(get, cond, timeout=w.TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if cond(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timeout waiting for %s: last value %r" % (what, value))
        time.sleep(0.05)


def connect_when_free(port, path, timeout=w.TIMEOUT):
    """Connects, retrying while the server answers 503 (a connection that just closed
    holds its slot until the server has seen it go). Returns (ws, number of 503s)."""
    deadline = time.monotonic() + timeout
    busy = 0
    while True:
        ws = w.WS.connect(port, path, expect=None)
        if ws.status == 101:
            return ws, busy
        assert ws.status == 503, ws.status
        ws.sock.close()
        busy += 1
        if time.monotonic() > deadline:
            raise AssertionError("no free connection slot")
        time.sleep(0.02)


def rss_kib(pid):
    """VmRSS of process `pid`, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _maps(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read()


def sanitized(pid):
    """Whether the process runs with ASan (its allocator quarantines freed memory)
    or under valgrind: RSS comparisons are meaningless then."""
    maps = _maps(pid)
    return "libasan" in maps or "vgpreload" in maps or "libtsan" in maps


def under_valgrind(pid):
    return "vgpreload" in _maps(pid)


class ChatServer:
    """The example chat server on a free loopback port (--port 0); its log (info
    level) goes to a file, where the port is read from the "listening on" line."""

    def __init__(self, *extra):
        self.log = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            server_wrap.command([CHAT_BIN, "--host", "127.0.0.1", "--port", "0",
                                 "--log-level", "info", *extra]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + w.TIMEOUT
        while True:
            m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)/", self.read_log())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("the chat did not start: %r" % self.read_log()[-2000:])
            time.sleep(0.02)

    def read_log(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=30):
        """SIGTERM; returns (exit code, log text). -998: a sanitizer report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -999, self.read_log().decode(errors="replace")
        text = self.read_log().decode(errors="replace")
        self.log.close()
        for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
            if marker in text:
                return -998, text
        if server_wrap.report(text):
            return -997, text   # valgrind's report
        return self.proc.returncode, text


# ---- the control clients -------------------------------------------------------------

def echo_room(port, room="control"):
    """A Control for the echo server's /ws/room/{room}/ route (a JSON object goes to
    every member, the sender included)."""
    path = "/ws/room/%s/" % room
    return Control(lambda: w.WS.connect(port, path), lambda: w.WS.connect(port, path),
                   lambda n, who: json.dumps({"control": n, "from": who}),
                   lambda data, n, who: json.loads(data) == {"control": n, "from": who})


def chat_room(port, room="control"):
    """A Control for the chat: two users in one room; a {"message"} goes to both."""
    def join(name):
        return lambda: w.WS.connect(port, "/ws/chat/%s/?name=%s" % (room, name))

    def expected(data, n, who):
        m = json.loads(data)
        return m.get("message") == "control %d" % n and m.get("user") == who

    return Control(join("ctl_a"), join("ctl_b"),
                   lambda n, who: json.dumps({"message": "control %d" % n}),
                   expected, names=("ctl_a", "ctl_b"))


class Control:
    """Two clients A and B in one room. round(): A sends message n, then B sends
    message n+1; each message must reach both, in order (other traffic, such as the
    chat's join notices, is skipped). start() runs rounds in a background thread
    until stop(), which returns the number of rounds and raises the first failure."""

    def __init__(self, connect_a, connect_b, make, matches, names=("a", "b"),
                 interval=0.02):
        self.a = connect_a()
        self.b = connect_b()
        self.make, self.matches, self.names = make, matches, names
        self.interval = interval
        self.n = 0
        self.rounds = 0
        self.worst = 0.0
        self.error = None
        self._stop = threading.Event()
        self._thread = None
        self.round()

    def _expect(self, ws, n, who):
        for _ in range(1000):
            op, data = ws.recv_message()      # answers the server's pings
            if op != w.OP_TEXT:
                raise AssertionError("control client got opcode %d %r" % (op, data[:100]))
            if self.matches(data, n, who):
                return
        raise AssertionError("control message %d never arrived" % n)

    def round(self):
        t0 = time.monotonic()
        for sender, who in ((self.a, self.names[0]), (self.b, self.names[1])):
            self.n += 1
            sender.send_text(self.make(self.n, who))
            self._expect(self.a, self.n, who)
            self._expect(self.b, self.n, who)
        self.rounds += 1
        self.worst = max(self.worst, time.monotonic() - t0)

    def _run(self):
        try:
            while not self._stop.is_set():
                self.round()
                self._stop.wait(self.interval)
        except BaseException as e:  # reported by stop()
            self.error = e

    def start(self):
        self.rounds_at_start = self.rounds
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops the thread; returns the rounds made since start(); raises on failure."""
        self._stop.set()
        self._thread.join(2 * w.TIMEOUT)
        if self._thread.is_alive():
            raise AssertionError("the control thread is stuck")
        if self.error:
            raise AssertionError("a control client was affected: %r" % (self.error,))
        return self.rounds - self.rounds_at_start

    def close(self):
        for c in (self.a, self.b):
            c.close()


class ControlledTest(unittest.TestCase):
    """A test case whose control pair runs during each test: setUp starts it and
    tearDown checks it made progress, failed nowhere, and still works afterwards."""

    min_rounds = 1

    def make_control(self):
        raise NotImplementedError

    def setUp(self):
        self.control = self.make_control().start()

    def tearDown(self):
        rounds = self.control.stop()
        self.control.round()        # and afterwards
        worst = self.control.worst
        self.control.close()
        print("[control: %d rounds during the test, slowest %.0f ms]" % (rounds, worst * 1000))
        self.assertGreaterEqual(rounds, self.min_rounds, "the control pair made no progress")
        # Not a benchmark: only "never blocked for long" (a round is 4 deliveries).
        self.assertLess(worst, w.TIMEOUT / 2, "a control round took %.1f s" % worst)


def main():
    """Runs the calling test module: argv[1] the echo server, argv[2] the chat."""
    global CHAT_BIN
    raise_fd_limit()
    w.SERVER_BIN = sys.argv[1]
    rest = sys.argv[2:]
    if rest and os.path.isfile(rest[0]):
        CHAT_BIN = rest.pop(0)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
