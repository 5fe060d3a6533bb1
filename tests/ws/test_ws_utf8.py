"""tests/ws/test_ws_utf8.py - UTF-8 in text messages and close reasons (Autobahn 6, 7.5).

Valid text of every sequence length is echoed, also when a sequence is split across
fragments or across TCP segments; invalid UTF-8 closes with 1007 - overlong forms,
surrogates, code points beyond U+10FFFF, stray continuation bytes, a sequence cut
short at the end of the message - also when the bad byte arrives in a later
fragment, and in a close frame's reason. Binary messages are not checked.
"""

import unittest

import wsclient as w

VALID = [
    "plain ascii",
    "\u00e9\u00e8",                 # 2 bytes
    "\u20ac\u2603",                 # 3 bytes
    "\U0001F600\U0010FFFF",         # 4 bytes, the largest code point
    "\ud7ff\ue000\ufffd\uffff",     # around the surrogates, U+FFFF is allowed
    "κόσμε",
]

INVALID = [
    b"\xc0\xaf",                    # overlong '/'
    b"\xe0\x80\xaf",                # overlong 3 bytes
    b"\xf0\x80\x80\xaf",            # overlong 4 bytes
    b"\xed\xa0\x80",                # U+D800 surrogate
    b"\xed\xbf\xbf",                # U+DFFF surrogate
    b"\xf4\x90\x80\x80",            # U+110000
    b"\xf8\x88\x80\x80\x80",        # 5-byte form
    b"\xff",
    b"\xfe",
    b"\x80",                        # stray continuation
    b"a\xbfb",
    b"\xce\xbax\xb9",               # continuation after ASCII
    b"\xce",                        # cut short at the end of the message
    b"\xf0\x9f\x98",                # 4-byte sequence cut short
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
]


class Utf8(unittest.TestCase):
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

    def test_valid_text_echoed(self):
        ws = self.connect()
        for text in VALID:
            ws.send_text(text)
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, text.encode("utf-8", "surrogatepass")))
        ws.close()

    def test_valid_sequences_split_across_fragments(self):
        ws = self.connect()
        data = "a\u00e9\u20ac\U0001F600z".encode()
        # every split point, including inside each multi-byte sequence
        for cut in range(1, len(data)):
            ws.send(w.OP_TEXT, data[:cut], fin=False)
            ws.send(w.OP_CONT, data[cut:])
            self.assertEqual(ws.recv_message(), (w.OP_TEXT, data), cut)
        # one byte per fragment
        ws.send(w.OP_TEXT, data[:1], fin=False)
        for i in range(1, len(data) - 1):
            ws.send(w.OP_CONT, data[i:i + 1], fin=False)
        ws.send(w.OP_CONT, data[-1:])
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, data))
        ws.close()

    def test_valid_text_across_segments(self):
        ws = self.connect()
        f = w.frame(w.OP_TEXT, "\U0001F600" * 50)
        for i in range(0, len(f), 3):
            ws.send_raw(f[i:i + 3])
        self.assertEqual(ws.recv_message(), (w.OP_TEXT, ("\U0001F600" * 50).encode()))
        ws.close()

    def test_invalid_text_1007(self):
        for bad in INVALID:
            ws = self.connect()
            ws.send(w.OP_TEXT, bad)
            ws.expect_close(1007)

    def test_invalid_split_across_fragments(self):
        for bad in INVALID:
            for cut in range(1, len(bad)):
                ws = self.connect()
                ws.send(w.OP_TEXT, bad[:cut], fin=False)
                ws.send(w.OP_CONT, bad[cut:])
                ws.expect_close(1007)

    def test_invalid_in_later_fragment_fails_fast(self):
        # The bad byte is in the second fragment; the message is never finished.
        ws = self.connect()
        ws.send(w.OP_TEXT, "κόσμε".encode(), fin=False)
        ws.send(w.OP_CONT, b"\xed\xa0\x80", fin=False)
        ws.expect_close(1007)

    def test_cut_short_sequence_before_final_fragment(self):
        ws = self.connect()
        ws.send(w.OP_TEXT, b"ok\xe2\x82", fin=False)
        ws.send(w.OP_CONT, b"")          # final fragment: the euro sign never completes
        ws.expect_close(1007)

    def test_binary_not_checked(self):
        ws = self.connect()
        ws.send(w.OP_BINARY, b"\xff\xfe\xed\xa0\x80")
        self.assertEqual(ws.recv_message(), (w.OP_BINARY, b"\xff\xfe\xed\xa0\x80"))
        ws.close()

    def test_close_reason_valid(self):
        ws = self.connect()
        ws.send(w.OP_CLOSE, b"\x03\xe8" + "κόσμε".encode())
        code, reason = ws.expect_close()
        self.assertEqual(code, 1000)

    def test_close_reason_invalid_1007(self):
        for bad in INVALID[:8]:
            ws = self.connect()
            ws.send(w.OP_CLOSE, b"\x03\xe8" + bad)
            ws.expect_close(1007)

    def test_counted(self):
        stats = self.srv.stats()
        self.assertGreater(stats["closed_protocol"], 0)


if __name__ == "__main__":
    w.main()
