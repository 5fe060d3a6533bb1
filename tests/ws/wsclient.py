"""tests/ws/wsclient.py - a raw-socket WebSocket client and a test-server launcher.

Shared by the conformance tests in tests/ws/. Standard library only. The client
builds every frame byte by byte, so tests can send what a well-behaved library
never would (reserved bits, unmasked frames, bad lengths, split UTF-8), and it
reads the server's frames strictly (server frames must be unmasked, RSV 0).

Every wait is bounded: sockets have timeouts, and a test that waits too long fails.
"""

import base64
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import server_wrap  # noqa: E402  (tests/server_wrap.py: the valgrind pass)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 10.0 * server_wrap.SLOWDOWN

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

SERVER_BIN = None


def server_bin():
    global SERVER_BIN
    if SERVER_BIN is None:
        SERVER_BIN = os.environ.get("WS_ECHO_SERVER") or sys.argv[1]
    return SERVER_BIN


class Server:
    """Runs tests/ws_echo_server with options; stop() checks it exits 0."""

    def __init__(self, *args):
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(server_wrap.command([server_bin(), *self.args]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self._readline(TIMEOUT)
        if not line.startswith(b"PORT "):
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError("server did not start: %r %r" % (line, err[-2000:]))
        self.port = int(line.split()[1])

    def _readline(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            ch = os.read(fd, 1)
            if not ch:
                break
            buf += ch
        return buf

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns (exit code, stderr text)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout=30):
        """Waits for the server to exit; returns (exit code, stderr text)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            return -999, err.decode(errors="replace")
        text = err.decode(errors="replace")
        for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
            if marker in text:
                return -998, text  # a sanitizer report fails the test
        if server_wrap.report(text):
            return -997, text  # so does valgrind's
        return self.proc.returncode, text

    def stats(self):
        ws = WS.connect(self.port, "/ws/stats/")
        op, data = ws.recv_message()
        ws.close()
        return json.loads(data)


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def read_http_head(sock):
    """Reads an HTTP response head; returns (status, headers dict lowercased, rest)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("EOF in HTTP head: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def http(port, raw, timeout=TIMEOUT):
    """Sends raw request bytes; returns (status, headers, body) read until EOF."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(raw)
        status, headers, rest = read_http_head(s)
        body = rest
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body
    finally:
        s.close()


def upgrade_request(path, key="dGhlIHNhbXBsZSBub25jZQ==", extra=None, version="13",
                    host="127.0.0.1"):
    lines = ["GET %s HTTP/1.1" % path]
    if host is not None:
        lines.append("Host: %s" % host)
    lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    for h in extra or []:
        lines.append(h)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, key=None, length_bytes=None):
    """Builds one client frame. length_bytes forces the length encoding (0, 2, 8)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif length_bytes == 2:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = key if key is not None else os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, key)
    return hdr + key + masked


def _mask_fast(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WS:
    """One client connection over a raw socket."""

    def __init__(self, sock, status, headers, rest):
        self.sock = sock
        self.status = status
        self.headers = headers
        self.buf = rest

    @classmethod
    def connect(cls, port, path, extra=None, key=None, expect=101, timeout=TIMEOUT, first=b""):
        key = key or base64.b64encode(os.urandom(16)).decode()
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(upgrade_request(path, key=key, extra=extra) + first)
        status, headers, rest = read_http_head(s)
        if expect is not None and status != expect:
            s.close()
            raise AssertionError("expected HTTP %s, got %s %r" % (expect, status, headers))
        if status == 101:
            if headers.get("sec-websocket-accept") != accept_key(key):
                raise AssertionError("bad Sec-WebSocket-Accept %r" % headers)
        return cls(s, status, headers, rest)

    # -- sending
    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send(OP_BINARY, data)

    def close(self, code=1000, reason=b"", wait=True):
        """Sends a close frame and (by default) waits for the reply and EOF."""
        payload = b"" if code is None else struct.pack("!H", code) + reason
        try:
            self.send(OP_CLOSE, payload)
            if wait:
                return self.expect_close()
        except (OSError, EOFError):
            pass
        finally:
            if not wait:
                self.sock.close()
        return None

    # -- receiving
    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("EOF")
            self.buf += chunk

    def _take(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """Returns (fin, opcode, payload); checks the server's framing rules."""
        b0, b1 = self._take(2)
        fin, rsv, opcode = b0 >> 7, (b0 >> 4) & 7, b0 & 15
        if rsv != 0:
            raise AssertionError("server frame with RSV bits %d" % rsv)
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
            assert n >= 126, "non-minimal length"
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
            assert n >= 65536, "non-minimal length"
        return fin, opcode, self._take(n)

    def recv_message(self, allow_ping=False):
        """Returns (opcode, payload) of the next data, close or (if allowed) ping."""
        op0, data = None, b""
        while True:
            fin, op, payload = self.recv_frame()
            if op >= 8:
                if op == OP_PING and not allow_ping:
                    self.send(OP_PONG, payload)
                    continue
                return op, payload
            if op0 is None:
                if op == OP_CONT:
                    raise AssertionError("server sent a continuation first")
                op0 = op
            data += payload
            if fin:
                return op0, data

    def expect_close(self, code=None):
        """Reads until a close frame; replies, waits for EOF; returns (code, reason)."""
        while True:
            op, payload = self.recv_message()
            if op == OP_CLOSE:
                break
        got = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        reason = payload[2:]
        if code is not None and got != code:
            raise AssertionError("expected close %s, got %s %r" % (code, got, reason))
        try:
            self.send(OP_CLOSE, payload[:2])
        except OSError:
            pass
        self.expect_eof()
        return got, reason

    def expect_eof(self):
        """The server closes the TCP connection (possibly after a reset)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
        except ConnectionResetError:
            pass
        self.sock.close()

    def closed_by_server(self):
        """True when the server ended the connection (close frame or EOF)."""
        try:
            while True:
                op, payload = self.recv_message()
                if op == OP_CLOSE:
                    return True
        except (EOFError, ConnectionResetError):
            return True
        except socket.timeout:
            return False


def join_room(port, room, n):
    """n clients joining /ws/room/ROOM/ of the room servers (tests/ws_echo_server,
    tests/ws_loops_server) one after the other; returns [(ws, hello)], hello being the
    parsed greeting each got first."""
    out = []
    for _ in range(n):
        ws = WS.connect(port, "/ws/room/%s/" % room)
        op, data = ws.recv_message()
        assert op == OP_TEXT, op
        out.append((ws, json.loads(data)))
    return out


def main():
    """Runs the calling test module; the server binary is argv[1]."""
    server_bin()
    unittest.main(argv=[sys.argv[0]] + sys.argv[2:], verbosity=2)
