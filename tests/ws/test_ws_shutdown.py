"""tests/ws/test_ws_shutdown.py - graceful shutdown on SIGTERM and SIGINT.

Every open client gets close 1001 and the process exits 0; a client that never
answers is dropped after close_timeout and the exit is still 0; a second signal
drops what is left at once; connections still in their handshake are dropped.
"""

import signal
import socket
import struct
import time
import unittest

import wsclient as w


class Shutdown(unittest.TestCase):
    def run_case(self, sig, answer=True):
        srv = w.Server("--close-timeout", 300)
        clients = [w.WS.connect(srv.port, "/ws/echo/") for _ in range(5)]
        room = [w.WS.connect(srv.port, "/ws/room/r/") for _ in range(3)]
        half = socket.create_connection(("127.0.0.1", srv.port), timeout=w.TIMEOUT)
        half.sendall(b"GET /ws/echo/ HTTP/1.1\r\n")  # never finished
        for c in clients:                       # make sure the server saw every client
            c.send_text("x")
            self.assertEqual(c.recv_message(), (w.OP_TEXT, b"x"))
        srv.proc.send_signal(sig)
        for c in clients + room:
            op, payload = c.recv_message()
            self.assertEqual(op, w.OP_CLOSE)
            self.assertEqual(struct.unpack("!H", payload[:2])[0], 1001)
            if answer:
                c.send(w.OP_CLOSE, payload[:2])
            c.expect_eof()
        self.assertEqual(half.recv(100), b"")
        half.close()
        code, err = srv.wait()
        self.assertEqual(code, 0, err[-3000:])

    def test_sigterm(self):
        self.run_case(signal.SIGTERM)

    def test_sigint(self):
        self.run_case(signal.SIGINT)

    def test_clients_that_do_not_answer(self):
        self.run_case(signal.SIGTERM, answer=False)

    def test_second_signal_drops_at_once(self):
        srv = w.Server("--close-timeout", 60000)
        c = w.WS.connect(srv.port, "/ws/echo/")
        c.send_text("x")
        self.assertEqual(c.recv_message(), (w.OP_TEXT, b"x"))
        srv.proc.send_signal(signal.SIGTERM)
        op, payload = c.recv_message()
        self.assertEqual(op, w.OP_CLOSE)
        srv.proc.send_signal(signal.SIGTERM)   # do not wait 60 s
        c.expect_eof()
        code, err = srv.wait(timeout=10)
        self.assertEqual(code, 0, err[-3000:])

    def test_idle_server(self):
        srv = w.Server()
        code, err = srv.stop(signal.SIGINT)
        self.assertEqual(code, 0, err[-3000:])

    def test_bind_failure_exit_code(self):
        srv = w.Server()
        other = __import__("subprocess").run(
            w.server_wrap.command([w.server_bin(), "--port", str(srv.port)]),
            capture_output=True, timeout=w.TIMEOUT)
        self.assertEqual(other.returncode, 1)
        self.assertIn(b"input/output error", other.stderr)
        self.assertIsNone(w.server_wrap.report(other.stderr.decode(errors="replace")))
        code, err = srv.stop()
        self.assertEqual(code, 0, err[-3000:])


if __name__ == "__main__":
    w.main()
