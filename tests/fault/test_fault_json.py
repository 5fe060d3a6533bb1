"""tests/fault/test_fault_json.py - huge, deeply nested and hostile JSON.

Two consumers read client JSON: the example chat (build/examples/cchannels-chat),
which parses every message with cch_json_parse (jansson behind a nesting check), and
the echo server's room (tests/ws_echo_server), which makes every message a layer
message with cch_msg_new (the core's own JSON scanner). Neither may crash, recurse
without bound or pass on what it refused: the chat answers {"error": ...} and keeps
the connection; the room closes the sender with 1003; anything over the message
limit is closed with 1009 before any JSON code sees it. The nesting limit is
CCH_MSG_BODY_MAX_DEPTH (read from include/cchannels/msg.h): that many levels of arrays
and objects pass, one more is refused. The abuser shares a room with a listener
that must receive nothing refused, and a control pair keeps chatting in another room.
"""

import json
import os
import re
import unittest

import faultlib as f
import wsclient as w

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "..", "include", "cchannels", "msg.h")) as _h:
    MAX_DEPTH = int(re.search(r"#define CCH_MSG_BODY_MAX_DEPTH (\d+)", _h.read()).group(1))

MAX_MESSAGE = 1024 * 1024           # CCH_WS_DEFAULT_MAX_MESSAGE_BYTES (the chat's)
BAD_JSON = {"error": "invalid JSON: expected an object"}
NOT_A_MESSAGE = {"error": "expected {\"message\": \"...\"} or {\"command\": \"close\"}"}


def arrays(depth, inner="1"):
    """An object holding depth - 1 nested arrays: `depth` levels in all."""
    return '{"message":"deep","x":' + "[" * (depth - 1) + inner + "]" * (depth - 1) + "}"


def objects(depth):
    """`depth` nested objects."""
    return '{"a":' * depth + "1" + "}" * depth


def chat_next(ws):
    """The next chat message that is not a join/leave notice, decoded."""
    while True:
        op, data = ws.recv_message()
        assert op == w.OP_TEXT, (op, data[:100])
        m = json.loads(data)
        if "event" not in m:
            return m


class ChatJson(f.ControlledTest):
    """The chat: a refused document gets an error reply, the connection stays open,
    and nothing reaches the room; a document within the limits is handled."""

    @classmethod
    def setUpClass(cls):
        cls.srv = f.ChatServer()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, log = cls.srv.stop()
        assert code == 0, log[-3000:]

    def make_control(self):
        return f.chat_room(self.port)

    def setUp(self):
        super().setUp()
        self.mallory = self.join("mallory")
        self.listener = self.join("lis")
        self.marks = 0

    def tearDown(self):
        for ws in (self.mallory, self.listener):
            ws.close()
        super().tearDown()

    def join(self, name):
        ws = w.WS.connect(self.port, "/ws/chat/abuse/?name=%s" % name)
        hello = json.loads(ws.recv_message()[1])
        self.assertEqual(hello["event"], "hello")
        return ws

    def refused(self, text, error=BAD_JSON):
        """mallory sends text: it gets `error`, the room gets nothing."""
        self.mallory.send_text(text)
        self.assertEqual(chat_next(self.mallory), error)
        self.assert_nothing_delivered()

    def delivered(self, text, message):
        """mallory sends text: the room (mallory included) gets `message` from it."""
        self.mallory.send_text(text)
        want = {"message": message, "user": "mallory"}
        self.assertEqual(chat_next(self.listener), want)
        self.assertEqual(chat_next(self.mallory), want)

    def assert_nothing_delivered(self):
        self.marks += 1
        self.listener.send_text(json.dumps({"message": "mark %d" % self.marks}))
        want = {"message": "mark %d" % self.marks, "user": "lis"}
        self.assertEqual(chat_next(self.listener), want)
        self.assertEqual(chat_next(self.mallory), want)

    def test_depth_limit(self):
        self.delivered(arrays(MAX_DEPTH), "deep")
        self.refused(arrays(MAX_DEPTH + 1))
        self.refused(objects(MAX_DEPTH), NOT_A_MESSAGE)     # parsed: no "message"
        self.refused(objects(MAX_DEPTH + 1))                # not parsed
        # brackets inside strings are text, not nesting
        self.delivered(json.dumps({"message": "[" * 4000}), "[" * 4000)
        self.delivered(arrays(MAX_DEPTH, inner='"]]]]{{{{"'), "deep")

    def test_deep_nesting_up_to_the_message_limit(self):
        self.refused("[" * (MAX_MESSAGE - 1))
        self.refused('{"a":' * (MAX_MESSAGE // 5 - 1))
        self.refused('{"message":"x","y":' + "[{" * (MAX_MESSAGE // 2 - 20))
        self.refused(arrays(MAX_DEPTH + 1) * 1000)
        self.delivered(json.dumps({"message": "still fine"}), "still fine")

    def test_huge_documents(self):
        self.delivered(json.dumps({"message": "x" * 4096}), "x" * 4096)
        self.refused(json.dumps({"message": "x" * 4097}), {"error": "message too long"})
        self.delivered(json.dumps({"message": "big", "pad": "y" * (MAX_MESSAGE - 100)}), "big")
        keys = {"k%d" % i: i for i in range(60000)}
        keys["message"] = "many keys"
        self.delivered(json.dumps(keys), "many keys")
        self.delivered(json.dumps({"message": "big array", "a": [0] * 300000}), "big array")
        # One byte over the message limit: closed by the adapter (1009).
        big = w.WS.connect(self.port, "/ws/chat/abuse/?name=big")
        big.send(w.OP_TEXT, json.dumps({"message": "z", "pad": "p" * MAX_MESSAGE})[:MAX_MESSAGE + 1])
        big.expect_close(1009)
        self.assert_nothing_delivered()

    def test_hostile_values(self):
        for text in ['{"message":"a","x":1e999999}',                 # float overflow
                     '{"message":"a","x":123456789012345678901234567890}',   # int overflow
                     '{"message":"\\ud800"}',                        # lone surrogate
                     '{"message":"a"} trailing', '[1]', '"s"', 'null', '', '{',
                     '{"message":"a",}', '{"message":"\\x41"}', "{'message':'a'}"]:
            self.refused(text)
        self.delivered('{"message":"a\\u0000b"}', "a\u0000b")       # NUL kept, escaped
        self.delivered('{"message":"a","message":"b"}', "b")           # duplicate keys
        self.delivered('{"message":"\\udbff\\udfff"}', "\U0010FFFF")  # a valid pair
        self.refused('{"message":"x","users":[]}',
                     {"error": "\"users\" must be a list of 1 to 16 user names"})
        self.refused('{"message":"x","users":["a b"]}',
                     {"error": "\"users\" must be a list of 1 to 16 user names"})
        self.refused('{"command":["close"]}', {"error": "unknown command"})

    def test_invalid_utf8_never_reaches_the_parser(self):
        bad = w.WS.connect(self.port, "/ws/chat/abuse/?name=bad")
        bad.send(w.OP_TEXT, b'{"message":"\xff"}')
        bad.expect_close(1007)
        self.assert_nothing_delivered()


class RoomJson(f.ControlledTest):
    """The echo server's room: the core's scanner accepts CCH_MSG_BODY_MAX_DEPTH levels
    and refuses one more (cch_msg_new fails: the room consumer closes with 1003), also
    for megabytes of brackets, without deep recursion; members get accepted bodies
    verbatim, and nothing of a refused one."""

    ROOM = "/ws/room/abuse/"

    @classmethod
    def setUpClass(cls):
        cls.srv = f.EchoServer()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        code, err = cls.srv.stop()
        assert code == 0, err[-3000:]

    def make_control(self):
        return f.echo_room(self.port)

    def setUp(self):
        super().setUp()
        self.listener = w.WS.connect(self.port, self.ROOM)

    def tearDown(self):
        self.listener.close()
        super().tearDown()

    def closed_1003(self, text):
        ws = w.WS.connect(self.port, self.ROOM)
        ws.send_text(text)
        code, reason = ws.expect_close(1003)
        self.assertEqual(reason, b"not a JSON object")

    def passes(self, text):
        ws = w.WS.connect(self.port, self.ROOM)
        ws.send_text(text)
        self.assertEqual(self.listener.recv_message(), (w.OP_TEXT, text.encode()))
        ws.close()

    def test_depth_limit_and_huge_nesting(self):
        self.passes(arrays(MAX_DEPTH))
        self.passes(objects(MAX_DEPTH))
        self.closed_1003(arrays(MAX_DEPTH + 1))
        self.closed_1003(objects(MAX_DEPTH + 1))
        self.closed_1003('{"x":' + "[" * (MAX_MESSAGE - 10))
        self.closed_1003('{"a":' * (MAX_MESSAGE // 5 - 1))
        self.closed_1003(arrays(MAX_DEPTH + 1) * 1000)
        self.closed_1003('{"a":1} {"b":2}')
        self.passes(json.dumps({"s": "[" * 100000}))
        self.passes(json.dumps({"a": [[0] * 10] * 20000}))
        # nothing refused reached the listener: its next message is this one
        self.passes('{"mark":1}')


if __name__ == "__main__":
    f.main()
