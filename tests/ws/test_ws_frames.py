"""tests/ws/test_ws_frames.py - framing, in the spirit of Autobahn's sections 1 to 5.

Echo of text and binary messages of every length boundary from 0 to 1 MiB; frames
that arrive a byte at a time or many per segment; fragmentation with control frames
in between; ping/pong; and every framing error closing with 1002: reserved bits,
reserved opcodes, unmasked frames, control frames too long or fragmented, a
continuation with nothing to continue, a new message inside a fragmented one, and
lengths not in their shortest form.
"""

import asyncio
import os
import socket
import struct
import unittest

try:
    import websockets
except ImportError:  # Debian's python3-websockets is optional for this suite
    websockets = None

import wsclient as w

SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 100000, 1024 * 1024]


class Framing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def connect(self):
        return w.WS.connect(self.port, "/ws/echo/")

    def expect_1002(self, ws, data):
        ws.send_raw(data)
        ws.expect_close(1002)

    # -- echo
    def test_echo_text_sizes(self):
        ws = self.connect()
        for n in SIZES:
            payload = (b"abcdefghij" * (n // 10 + 1))[:n]
            ws.send(w.OP_TEXT, payload)
            op, got = ws.recv_message()
            self.assertEqual(op, w.OP_TEXT)
            self.assertEqual(len(got), n)
            self.assertEqual(got, payload, n)
        ws.close()

    def test_echo_binary_sizes(self):
        ws = self.connect()
        for n in SIZES:
            payload = os.urandom(n)
            ws.send(w.OP_BINARY, payload)
            self.assertEqual(ws.recv_message(), (w.OP_BINARY, payload), n)
        ws.close()

    def test_echo_multibyte_text(self):
        ws = self.connect()
        text = "κόσμε ∮ E⋅da = Q 😀 " * 100
        ws.send_text(text)
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, text.encode()))
        ws.close()

    def test_many_messages_in_one_segment(self):
        ws = self.connect()
        ws.send_raw(b"".join(w.frame(w.OP_TEXT, b"m%d" % i) for i in range(500)))
        for i in range(500):
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"m%d" % i))
        ws.close()

    def test_frames_byte_by_byte(self):
        ws = self.connect()
        data = w.frame(w.OP_TEXT, b"x" * 300) + w.frame(w.OP_PING, b"p") + w.frame(w.OP_BINARY, b"")
        for b in data:
            ws.send_raw(bytes([b]))
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"x" * 300))
        self.assertEqual(ws.recv_message(allow_ping=True), (w.OP_PONG, b"p"))
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b""))
        ws.close()

    def test_split_header_then_whole_frames(self):
        ws = self.connect()
        f1, f2 = w.frame(w.OP_TEXT, b"a" * 200), w.frame(w.OP_TEXT, b"b" * 70000)
        ws.send_raw(f1 + f2[:3])
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"a" * 200))
        ws.send_raw(f2[3:])
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"b" * 70000))
        ws.close()

    # -- fragmentation
    def test_fragmented_text(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"Hel", fin=False)
        ws.send(w.OP_CONT, b"lo, ", fin=False)
        ws.send(w.OP_CONT, b"world")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"Hello, world"))
        ws.close()

    def test_fragmented_binary_with_empty_fragments(self):
        ws = self.connect()
        ws.send(w.OP_BINARY, b"", fin=False)
        ws.send(w.OP_CONT, b"\x01\x02", fin=False)
        ws.send(w.OP_CONT, b"", fin=False)
        ws.send(w.OP_CONT, b"")
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b"\x01\x02"))
        ws.close()

    def test_ping_between_fragments(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"frag", fin=False)
        ws.send(w.OP_PING, b"in between")
        self.assertEqual(ws.recv_message(allow_ping=True), (w.OP_PONG, b"in between"))
        ws.send(w.OP_CONT, b"ment")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"fragment"))
        ws.close()

    def test_many_fragments_large(self):
        ws = self.connect()
        parts = [os.urandom(1000) for _ in range(300)]
        ws.send(w.OP_BINARY, parts[0], fin=False)
        for p in parts[1:-1]:
            ws.send(w.OP_CONT, p, fin=False)
        ws.send(w.OP_CONT, parts[-1])
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b"".join(parts)))
        ws.close()

    def test_continuation_without_start(self):
        self.expect_1002(self.connect(), w.frame(w.OP_CONT, b"x"))

    def test_continuation_fin_without_start(self):
        self.expect_1002(self.connect(), w.frame(w.OP_CONT, b"", fin=True))

    def test_new_message_inside_fragmented(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"a", fin=False)
        self.expect_1002(ws, w.frame(w.OP_TEXT, b"b"))

    def test_new_binary_inside_fragmented(self):
        ws = self.connect()
        ws.send(w.OP_BINARY, b"a", fin=False)
        self.expect_1002(ws, w.frame(w.OP_BINARY, b"b", fin=False))

    # -- ping / pong
    def test_ping_pong_payloads(self):
        ws = self.connect()
        for payload in [b"", b"x", os.urandom(125)]:
            ws.send(w.OP_PING, payload)
            self.assertEqual(ws.recv_message(allow_ping=True), (w.OP_PONG, payload))
        ws.close()

    def test_unsolicited_pong_ignored(self):
        ws = self.connect()
        ws.send(w.OP_PONG, b"unasked")
        ws.send_text("after")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"after"))
        ws.close()

    def test_pong_order_with_data(self):
        ws = self.connect()
        ws.send_raw(w.frame(w.OP_TEXT, b"1") + w.frame(w.OP_PING, b"p") + w.frame(w.OP_TEXT, b"2"))
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"1"))
        self.assertEqual(ws.recv_message(allow_ping=True), (w.OP_PONG, b"p"))
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"2"))
        ws.close()

    def test_ping_126_bytes(self):
        self.expect_1002(self.connect(), w.frame(w.OP_PING, b"x" * 126))

    def test_fragmented_ping(self):
        self.expect_1002(self.connect(), w.frame(w.OP_PING, b"x", fin=False))

    def test_fragmented_close(self):
        self.expect_1002(self.connect(), w.frame(w.OP_CLOSE, b"\x03\xe8", fin=False))

    # -- reserved bits and opcodes
    def test_reserved_bits(self):
        for rsv in range(1, 8):
            for op in (w.OP_TEXT, w.OP_BINARY, w.OP_PING):
                self.expect_1002(self.connect(), w.frame(op, b"x", rsv=rsv))

    def test_reserved_bits_after_valid_message(self):
        ws = self.connect()
        ws.send_raw(w.frame(w.OP_TEXT, b"ok") + w.frame(w.OP_TEXT, b"bad", rsv=4))
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"ok"))
        ws.expect_close(1002)

    def test_reserved_opcodes(self):
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            self.expect_1002(self.connect(), w.frame(op, b"x"))

    def test_reserved_opcode_inside_fragmented(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"a", fin=False)
        self.expect_1002(ws, w.frame(5, b""))

    # -- masking and lengths
    def test_unmasked_frame(self):
        self.expect_1002(self.connect(), w.frame(w.OP_TEXT, b"hello", mask=False))

    def test_unmasked_empty_frame(self):
        self.expect_1002(self.connect(), w.frame(w.OP_TEXT, b"", mask=False))

    def test_non_minimal_16bit_length(self):
        self.expect_1002(self.connect(), w.frame(w.OP_TEXT, b"x" * 10, length_bytes=2))

    def test_non_minimal_64bit_length(self):
        self.expect_1002(self.connect(), w.frame(w.OP_TEXT, b"x" * 1000, length_bytes=8))

    def test_64bit_length_with_top_bit(self):
        ws = self.connect()
        ws.send_raw(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + b"\0\0\0\0")
        ws.expect_close(1002)

    def test_zero_mask_key(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"zero key", key=b"\0\0\0\0")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"zero key"))
        ws.close()

    def test_server_survives_errors(self):
        ws = self.connect()
        ws.send_text("fine")
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, b"fine"))
        ws.close()
        stats = self.srv.stats()
        self.assertGreater(stats["closed_protocol"], 0)
        self.assertEqual(stats["input_contexts"], 0)


@unittest.skipIf(websockets is None, "python3-websockets is not installed")
class Interop(unittest.TestCase):
    """An independent client (python3-websockets) checks our frames and close."""

    @classmethod
    def setUpClass(cls):
        cls.srv = w.Server()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def test_echo_ping_close(self):
        async def run():
            uri = "ws://127.0.0.1:%d/ws/echo/" % self.port
            async with websockets.connect(uri, max_size=2 * 1024 * 1024) as ws:
                for n in (0, 125, 126, 65536, 1024 * 1024):
                    await ws.send("t" * n)
                    self.assertEqual(await ws.recv(), "t" * n)
                    data = os.urandom(n)
                    await ws.send(data)
                    self.assertEqual(await ws.recv(), data)
                pong = await ws.ping(b"abc")
                await asyncio.wait_for(pong, 10)
                await ws.close(4001, "done")
                self.assertEqual(ws.close_code, 4001)

        asyncio.run(asyncio.wait_for(run(), 60))

    def test_subprotocol(self):
        async def run():
            uri = "ws://127.0.0.1:%d/ws/proto/" % self.port
            async with websockets.connect(uri, subprotocols=["superchat", "chat"]) as ws:
                self.assertEqual(ws.subprotocol, "chat")

        asyncio.run(asyncio.wait_for(run(), 30))

    def test_server_close_code(self):
        async def run():
            uri = "ws://127.0.0.1:%d/ws/cmd/" % self.port
            async with websockets.connect(uri) as ws:
                await ws.send("close 4002 bye")
                with self.assertRaises(websockets.ConnectionClosed) as cm:
                    await ws.recv()
                self.assertEqual(cm.exception.rcvd.code, 4002)
                self.assertEqual(cm.exception.rcvd.reason, "bye")

        asyncio.run(asyncio.wait_for(run(), 30))


if __name__ == "__main__":
    w.main()
