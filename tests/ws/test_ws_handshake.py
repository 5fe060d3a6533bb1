"""tests/ws/test_ws_handshake.py - the opening handshake and every way it fails.

101 with the right accept key, subprotocol negotiation, a decision taken later,
frames sent right behind the request; 400 (malformed request, missing or bad key,
missing Connection/Host/version), 426 (other version, with Sec-WebSocket-Version: 13),
404 (no route), 403 (consumer and middleware), 405 (other methods), 431 (head too
large, too many headers), 503 (too many connections), 408 (head not complete in time).
"""

import base64
import os
import socket
import time
import unittest

import wsclient as w


class Handshake(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def status(self, raw):
        return w.http(self.port, raw)

    def test_101_accept_key_and_echo(self):
        key = base64.b64encode(os.urandom(16)).decode()
        ws = w.WS.connect(self.port, "/ws/echo/", key=key)
        self.assertEqual(ws.status, 101)
        self.assertEqual(ws.headers["upgrade"].lower(), "websocket")
        self.assertEqual(ws.headers["connection"].lower(), "upgrade")
        self.assertEqual(ws.headers["sec-websocket-accept"], w.accept_key(key))
        self.assertNotIn("sec-websocket-protocol", ws.headers)
        ws.send_text("hi")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"hi"))
        self.assertEqual(ws.close(), (1000, b""))

    def test_rfc_example_key(self):
        ws = w.WS.connect(self.port, "/ws/echo/", key="dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(ws.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        ws.close()

    def test_query_string_and_header_case(self):
        raw = (b"GET /ws/echo/?a=1&b=2 HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\n"
               b"connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"sec-websocket-version: 13\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
        s.sendall(raw)
        status, headers, rest = w.read_http_head(s)
        self.assertEqual(status, 101)
        s.close()

    def test_subprotocol_chosen(self):
        ws = w.WS.connect(self.port, "/ws/proto/", extra=["Sec-WebSocket-Protocol: other, superchat, chat"])
        self.assertEqual(ws.headers.get("sec-websocket-protocol"), "chat")
        ws.send_text("which")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"chat"))
        ws.close()

    def test_subprotocol_second_header_line(self):
        ws = w.WS.connect(self.port, "/ws/proto/",
                          extra=["Sec-WebSocket-Protocol: other", "Sec-WebSocket-Protocol: superchat"])
        self.assertEqual(ws.headers.get("sec-websocket-protocol"), "superchat")
        ws.close()

    def test_subprotocol_none_acceptable(self):
        ws = w.WS.connect(self.port, "/ws/proto/", extra=["Sec-WebSocket-Protocol: v1, v2"])
        self.assertNotIn("sec-websocket-protocol", ws.headers)
        ws.send_text("which")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b""))
        ws.close()

    def test_decided_later(self):
        ws = w.WS.connect(self.port, "/ws/later/")
        self.assertEqual(ws.status, 101)
        ws.close()

    def test_frames_right_behind_the_request(self):
        # A client that does not wait for the 101: its frames are kept and parsed.
        first = w.frame(w.OP_TEXT, b"early") + w.frame(w.OP_BINARY, b"\x00\x01")
        ws = w.WS.connect(self.port, "/ws/echo/", first=first)
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"early"))
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b"\x00\x01"))
        ws.close()

    def test_frames_behind_a_deferred_request(self):
        first = w.frame(w.OP_TEXT, b"x") + w.frame(w.OP_CLOSE, b"\x03\xe8")
        ws = w.WS.connect(self.port, "/ws/later/", first=first)
        op, payload = ws.recv_message()
        self.assertEqual(op, w.OP_CLOSE)
        self.assertEqual(payload[:2], b"\x03\xe8")
        ws.expect_eof()

    def test_head_in_single_bytes(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
        for b in w.upgrade_request("/ws/echo/"):
            s.send(bytes([b]))
        status, headers, rest = w.read_http_head(s)
        self.assertEqual(status, 101)
        s.close()

    def test_concurrent_heads_large_and_many_headers(self):
        # Request states: the server's spare, then pool objects for heads that are
        # unfinished at the same time; a head beyond the inline room (3 KiB) and with
        # more headers than fit inline (40), both grown onto the heap, with frames right
        # behind the head; then all of them given back and taken again.
        for _round in range(2):
            socks = []
            for i in range(40):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
                extra = ["X-H%d: v%d" % (j, j) for j in range(40)] if i % 3 == 0 else []
                if i % 4 == 1:
                    extra.append("X-Big: " + "b" * 3000)
                raw = w.upgrade_request("/ws/echo/", extra=extra)
                if i % 2 == 0:
                    raw += w.frame(w.OP_TEXT, b"early %d" % i)
                s.sendall(raw[:len(raw) // 3])
                socks.append((s, raw))
            time.sleep(0.05)
            for s, raw in socks:
                s.sendall(raw[len(raw) // 3:])
            for i, (s, raw) in enumerate(socks):
                status, headers, rest = w.read_http_head(s)
                self.assertEqual(status, 101)
                ws = w.WS(s, status, headers, rest)
                if i % 2 == 0:
                    self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"early %d" % i))
                ws.send_text("late %d" % i)
                self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"late %d" % i))
                ws.close()

    # -- failures
    def test_400_missing_key(self):
        status, headers, body = self.status(w.upgrade_request("/ws/echo/", key=None))
        self.assertEqual(status, 400)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(body, b"400 Bad Request\n")

    def test_400_bad_keys(self):
        for key in ["short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!==",
                    base64.b64encode(os.urandom(15)).decode(), base64.b64encode(os.urandom(17)).decode()]:
            status, _, _ = self.status(w.upgrade_request("/ws/echo/", key=key))
            self.assertEqual(status, 400, key)

    def test_400_two_keys(self):
        raw = w.upgrade_request("/ws/echo/", extra=["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        self.assertEqual(self.status(raw)[0], 400)

    def test_400_missing_connection_upgrade(self):
        raw = (b"GET /ws/echo/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.assertEqual(self.status(raw)[0], 400)

    def test_400_missing_host(self):
        self.assertEqual(self.status(w.upgrade_request("/ws/echo/", host=None))[0], 400)

    def test_400_http10(self):
        raw = w.upgrade_request("/ws/echo/").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        self.assertEqual(self.status(raw)[0], 400)

    def test_400_missing_version(self):
        self.assertEqual(self.status(w.upgrade_request("/ws/echo/", version=None))[0], 400)

    def test_426_other_versions(self):
        for v in ["8", "12", "14", "13, 8", "abc"]:
            status, headers, _ = self.status(w.upgrade_request("/ws/echo/", version=v))
            self.assertEqual(status, 426, v)
            self.assertEqual(headers.get("sec-websocket-version"), "13")

    def test_400_malformed_request(self):
        for raw in [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                    b"GET / HTTP/9.9\r\n\r\n", b"\x00\x01\x02\r\n\r\n"]:
            status, _, _ = self.status(raw)
            self.assertIn(status, (400, 405), raw)

    def test_405_post_upgrade_and_plain(self):
        raw = w.upgrade_request("/ws/echo/").replace(b"GET", b"POST", 1)
        self.assertEqual(self.status(raw)[0], 400)
        status, headers, _ = self.status(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("allow"), "GET, HEAD")

    def test_404_no_route(self):
        status, _, body = self.status(w.upgrade_request("/ws/nothing/"))
        self.assertEqual(status, 404)
        self.assertEqual(body, b"404 Not Found\n")

    def test_403_consumer_rejects(self):
        self.assertEqual(self.status(w.upgrade_request("/ws/reject/"))[0], 403)

    def test_403_middleware_rejects(self):
        raw = w.upgrade_request("/ws/echo/", extra=["X-Test-Reject: yes"])
        self.assertEqual(self.status(raw)[0], 403)

    def test_431_head_too_large(self):
        raw = w.upgrade_request("/ws/echo/", extra=["X-Big: " + "a" * 9000])
        status, _, _ = self.status(raw)
        self.assertEqual(status, 431)

    def test_431_too_many_headers(self):
        raw = w.upgrade_request("/ws/echo/", extra=["X-H%d: v" % i for i in range(120)])
        self.assertEqual(self.status(raw)[0], 431)

    def test_server_still_fine_afterwards(self):
        ws = w.WS.connect(self.port, "/ws/echo/")
        ws.send_text("still here")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"still here"))
        ws.close()


class Limits(unittest.TestCase):
    """503 beyond max_connections, 408 for a slow head, a smaller header limit."""

    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server("--max-conns", 3, "--handshake-timeout", 300, "--max-header", 1024)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_503_beyond_max_connections(self):
        conns = [w.WS.connect(self.port, "/ws/echo/") for _ in range(3)]
        status, headers, body = w.http(self.port, w.upgrade_request("/ws/echo/"))
        self.assertEqual(status, 503)
        self.assertEqual(headers.get("retry-after"), "1")
        conns[0].close()
        # A slot is free again once the server has seen the close.
        for _ in range(50):
            try:
                ws = w.WS.connect(self.port, "/ws/echo/")
                break
            except AssertionError:
                time.sleep(0.02)
        else:
            self.fail("no slot after a close")
        ws.close()
        for c in conns[1:]:
            c.close()
        stats = self.srv.stats()
        self.assertGreaterEqual(stats["rejected_busy"], 1)

    def test_408_slow_head(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
        s.sendall(b"GET /ws/echo/ HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        status, headers, rest = w.read_http_head(s)
        self.assertEqual(status, 408)
        while s.recv(4096):
            pass
        s.close()

    def test_408_silent_client(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
        status, _, _ = w.read_http_head(s)
        self.assertEqual(status, 408)
        s.close()

    def test_431_configured_limit(self):
        raw = w.upgrade_request("/ws/echo/", extra=["X-Big: " + "a" * 1100])
        self.assertEqual(w.http(self.port, raw)[0], 431)
        raw = w.upgrade_request("/ws/echo/", extra=["X-Small: " + "a" * 500])
        s = socket.create_connection(("127.0.0.1", self.port), timeout=w.TIMEOUT)
        s.sendall(raw)
        self.assertEqual(w.read_http_head(s)[0], 101)
        s.close()


if __name__ == "__main__":
    w.main()
