"""tests/ws/test_ws_close.py - every way a connection ends (Autobahn section 7).

The client closes (with each valid code, with a reason, with no payload): the server
answers with a close frame and then closes TCP. Invalid codes, a 1-byte payload and
a reason over 123 bytes close with 1002. Data after a close is ignored. The server
closes (consumer's cch_close with code and reason): the client answers and the server
drops TCP; a client that does not answer is dropped after close_timeout. A client
that vanishes without a close frame is cleaned up.
"""

import socket
import struct
import time
import unittest

import wsclient as w

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


class Close(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server("--close-timeout", 300)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def connect(self, path="/ws/echo/"):
        return w.WS.connect(self.port, path)

    def test_client_close_valid_codes_echoed(self):
        for code in VALID_CODES:
            ws = self.connect()
            ws.send(w.OP_CLOSE, struct.pack("!H", code) + b"bye")
            op, payload = ws.recv_message()
            self.assertEqual(op, w.OP_CLOSE)
            self.assertEqual(struct.unpack("!H", payload[:2])[0], code)
            ws.expect_eof()  # the server closes TCP first

    def test_client_close_without_payload(self):
        ws = self.connect()
        ws.send(w.OP_CLOSE, b"")
        op, payload = ws.recv_message()
        self.assertEqual(op, w.OP_CLOSE)
        self.assertIn(payload, (b"", b"\x03\xe8"))
        ws.expect_eof()

    def test_client_close_max_reason(self):
        ws = self.connect()
        ws.send(w.OP_CLOSE, b"\x03\xe8" + b"r" * 123)
        op, payload = ws.recv_message()
        self.assertEqual((op, payload[:2]), (w.OP_CLOSE, b"\x03\xe8"))
        ws.expect_eof()

    def test_close_reason_too_long(self):
        ws = self.connect()
        ws.send_raw(w.frame(w.OP_CLOSE, b"\x03\xe8" + b"r" * 124))
        ws.expect_close(1002)

    def test_invalid_codes_1002(self):
        for code in INVALID_CODES:
            ws = self.connect()
            ws.send(w.OP_CLOSE, struct.pack("!H", code))
            ws.expect_close(1002)

    def test_one_byte_close_payload(self):
        ws = self.connect()
        ws.send(w.OP_CLOSE, b"\x03")
        ws.expect_close(1002)

    def test_data_after_close_ignored(self):
        ws = self.connect()
        ws.send_raw(w.frame(w.OP_CLOSE, b"\x03\xe8") + w.frame(w.OP_TEXT, b"late") + w.frame(w.OP_PING, b""))
        op, payload = ws.recv_message()
        self.assertEqual((op, payload[:2]), (w.OP_CLOSE, b"\x03\xe8"))
        ws.expect_eof()  # and nothing else: no echo, no pong

    def test_close_inside_fragmented_message(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"part", fin=False)
        ws.send(w.OP_CLOSE, b"\x03\xe8")
        op, payload = ws.recv_message()
        self.assertEqual((op, payload[:2]), (w.OP_CLOSE, b"\x03\xe8"))
        ws.expect_eof()

    def test_server_initiated_close(self):
        ws = self.connect("/ws/cmd/")
        ws.send_text("close 4000 see you")
        op, payload = ws.recv_message()
        self.assertEqual(op, w.OP_CLOSE)
        self.assertEqual(payload, struct.pack("!H", 4000) + b"see you")
        ws.send(w.OP_CLOSE, payload[:2])
        ws.expect_eof()

    def test_server_close_messages_before_it_arrive(self):
        ws = self.connect("/ws/cmd/")
        ws.send_raw(w.frame(w.OP_TEXT, b"send 3 10") + w.frame(w.OP_TEXT, b"close 1000 done"))
        for _ in range(3):
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"x" * 10))
        self.assertEqual(ws.expect_close(), (1000, b"done"))

    def test_server_close_then_client_data_dropped(self):
        ws = self.connect("/ws/cmd/")
        ws.send_text("close 1000")
        op, payload = ws.recv_message()
        self.assertEqual(op, w.OP_CLOSE)
        ws.send_text("send 1 5")  # after the server's close: read and dropped
        ws.send(w.OP_CLOSE, b"\x03\xe8")
        ws.expect_eof()

    def test_server_close_timeout(self):
        ws = self.connect("/ws/cmd/")
        ws.send_text("close 4001 no answer expected")
        op, payload = ws.recv_message()
        self.assertEqual(payload[:2], struct.pack("!H", 4001))
        # The client never answers: the server drops TCP after close_timeout (300 ms).
        ws.expect_eof()
        self.assertGreaterEqual(self.srv.stats()["close_timeouts"], 1)

    def test_client_vanishes(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"half", fin=False)
        ws.sock.close()
        ws2 = self.connect()
        ws2.send_text("alive")
        self.assertEqual(ws2.recv_message(), (w.OP_TEXT, b"alive"))
        ws2.close()

    def test_client_resets(self):
        ws = self.connect()
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.sock.close()
        ws2 = self.connect()
        ws2.close()

    def test_client_resets_while_server_writes(self):
        # The server is writing a large echo when the client resets: the write fails
        # (EPIPE / ECONNRESET) and the server must carry on (no SIGPIPE death).
        for _ in range(5):
            ws = self.connect()
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ws.send(w.OP_BINARY, b"z" * (1024 * 1024))
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.sock.close()
        ws2 = self.connect()
        ws2.send_text("alive")
        self.assertEqual(ws2.recv_message(), (w.OP_TEXT, b"alive"))
        ws2.close()

    def test_client_half_close_without_frame(self):
        ws = self.connect()
        ws.sock.shutdown(socket.SHUT_WR)
        ws.expect_eof()

    def test_zz_no_connection_left(self):
        # Every connection above has ended on the server too (lingering ones within
        # close_timeout).
        deadline = time.monotonic() + w.TIMEOUT
        while True:
            stats = self.srv.stats()
            if stats["tcp_active"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(stats["tcp_active"], 1)  # the stats connection itself
        self.assertEqual(stats["app_active"], 1)
        self.assertEqual(stats["input_contexts"], 0)


if __name__ == "__main__":
    w.main()
