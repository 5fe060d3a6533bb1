"""tests/redis/redisutil.py - helpers for the Redis layer's Python tests.

RedisServer: a redis-server of our own on a free 127.0.0.1 port, persistence off,
stopped (and waited for) at the end. Peer: tests/redis/redis_peer driven line by line.
Process: any child whose stderr is kept in a temporary file for failure messages.
Every wait is bounded (STEP seconds).

The tests use Debian's packages through /usr/bin/python3; `need_packages()` exits 77
(skipped) when redis-server or the Python modules are genuinely missing.
"""
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import server_wrap  # noqa: E402  (tests/server_wrap.py: valgrind in the valgrind pass)

STEP = 10.0 * server_wrap.SLOWDOWN
REDIS_SERVER = "/usr/bin/redis-server"


def need_packages(*modules):
    """Exit 77 when redis-server or one of the Python modules is not installed."""
    if not os.access(REDIS_SERVER, os.X_OK):
        print("SKIP: redis-server is not installed (apt-get install redis-server)")
        sys.exit(77)
    for m in modules:
        try:
            __import__(m)
        except ImportError as e:
            print("SKIP: Python module %s is missing (%s): apt-get install "
                  "python3-channels-redis python3-django-channels python3-daphne" % (m, e))
            sys.exit(77)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, port=None):
        self.port = port
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="cch-redis-")
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def start(self):
        for _ in range(5):
            port = self.port or free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            end = time.monotonic() + STEP
            while time.monotonic() < end and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            self.port = port
                            return
                except OSError:
                    time.sleep(0.02)
            self.stop()
        raise RuntimeError("redis-server did not start")

    def command(self, *args):
        """One command over a raw socket (RESP), the reply's first line."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=STEP) as s:
            s.sendall(out)
            return s.recv(65536)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STEP)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Process:
    """A child process whose stderr goes to a temporary file."""

    def __init__(self, argv, env=None, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 ours=False):
        """`ours`: one of our binaries, run under $CCH_SERVER_WRAPPER (valgrind)."""
        self.err = tempfile.TemporaryFile(mode="w+")
        self.final = None
        self.ours = ours
        if ours:
            argv = server_wrap.command(argv)
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=self.err,
                                     env=env, text=True, bufsize=1)

    def stderr(self):
        if self.final is not None:
            return self.final
        self.err.seek(0)
        return self.err.read()[-4000:]

    def _closed(self):
        """Once the process is gone: keep its stderr text, close our files."""
        if self.final is None:
            self.final = self.stderr()
            self.err.close()
            for f in (self.proc.stdin, self.proc.stdout):
                if f:
                    try:
                        f.close()
                    except OSError:
                        pass

    def stop(self, sig=None):
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STEP)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STEP)
        self._closed()
        found = server_wrap.report(self.final) if self.ours else None
        if found:
            raise AssertionError("the server's wrapper reported errors:\n" + found)
        return self.proc.returncode


class Peer(Process):
    """tests/redis/redis_peer: commands in, answers and "msg" lines out."""

    def __init__(self, exe, *urls, args=()):
        super().__init__([exe, *args, *urls], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         ours=True)
        self.lines = queue.Queue()
        self.msgs = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.process = self.expect("ready")

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            (self.msgs if line.startswith("msg ") else self.lines).put(line)
        self.lines.put(None)

    def expect(self, word, timeout=STEP):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("peer: no %r answer in %ss; stderr:\n%s"
                                 % (word, timeout, self.stderr()))
        if line is None:
            raise AssertionError("peer exited; stderr:\n" + self.stderr())
        head, _, rest = line.partition(" ")
        if head != word:
            raise AssertionError("peer: expected %r, got %r" % (word, line))
        return rest

    def do(self, line, answer=None, timeout=STEP):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect(answer or line.split(" ", 1)[0], timeout)

    def ok(self, line):
        rc = self.do(line)
        if rc.strip() != "0":
            raise AssertionError("peer: %r returned %s" % (line, rc))

    def new_channel(self):
        return self.do("new", "channel")

    def msg(self, timeout=STEP):
        """(channel, type, body dict) of the next message, or AssertionError."""
        import json
        try:
            line = self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("peer: no message in %ss; stderr:\n%s" % (timeout, self.stderr()))
        _, channel, mtype, body = line.split(" ", 3)
        return channel, mtype, json.loads(body)

    def no_msg(self, timeout=0.3):
        try:
            line = self.msgs.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("peer: unexpected message " + line)

    def stats(self):
        import json
        return json.loads(self.do("stats"))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=STEP)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        return self.stop()
