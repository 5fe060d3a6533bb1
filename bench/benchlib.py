"""bench/benchlib.py - what the benchmark scripts share: a log line on stderr, a free
loopback port, stopping a child, and the example chat server (examples/chat) started
on a port.

Imported by bench/run_ws_bench.py, bench/run_loops_bench.py and bench/compare.py (each
puts bench/ on sys.path: run as a script, it is its own directory).
"""
import signal
import socket
import subprocess
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, grace=10):
    """SIGTERM, then SIGKILL after `grace` seconds; waits for it either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ChatServer:
    """A fresh example chat server on a free loopback port: `prefix` + [exe, "--host",
    "127.0.0.1", "--port", PORT] + `args` (prefix: e.g. taskset). Another port is
    tried (5 in all) when it does not listen within 10 s; stop() returns its stderr."""

    def __init__(self, exe, args=(), prefix=()):
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                list(prefix) + [exe, "--host", "127.0.0.1", "--port", str(self.port)]
                + list(args),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            end = time.monotonic() + 10
            while time.monotonic() < end and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            self.stop()
        raise RuntimeError("the chat server did not start")

    def stop(self):
        stop_process(self.proc)
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        return err
