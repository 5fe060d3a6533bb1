#!/usr/bin/env python3
"""fuzz/make_corpus.py - writes the seed corpora in fuzz/corpus/<target>/.

Run it after changing a seed here; the files it writes are committed. Each seed is
small and means something (a valid request, a frame sequence, a pattern and a
path, a JSON body); the fuzzer mutates from there. Standard library only."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", "fuzz_" + target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_route: "PATTERN\nPATH" ------------------------------------------------------

ROUTES = {
    "chat": "/ws/chat/{room}/\n/ws/chat/lobby/",
    "int": "/u/id-{id:int}\n/u/id-42",
    "slug_path": "/ws/{a:slug}/{b:path}\n/ws/x-y_z/c/d/e",
    "two_paths": "/f/{p:path}/x/{q:path}\n/f/a/x/b/x/c",
    "escaped": "/ws/{room}/\n/ws/a%20b%2Fc/",
    "nul_escape": "/ws/{room}/\n/ws/a%00b/",
    "adjacent": "/{a}{b}\n/x",
    "relative": "ws/{a}/\n/ws/a/",
    "unknown_conv": "/ws/{id:float}/\n/ws/1/",
    "repeated": "/a/{x}/{x}/\n/a/1/2/",
    "literal": "/static/\n/static/",
    "no_match": "/ws/{id:int}/\n/ws/12a/",
    "empty_param": "/ws/{room}/\n/ws//",
    "unbalanced": "/ws/{room/\n/ws/a/",
    "query": "/ws/{room}/\n/ws/a/?x=1",
    "many": "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}\n/1/2",
    "path_backtrack": "/{a:path}/{b:path}/{c:path}/end\n/" + "x/" * 40 + "end",
}
for name, text in ROUTES.items():
    write("route", name, text)

# ---- fuzz_json: message bodies ---------------------------------------------------------

BODIES = {
    "empty": "{}",
    "chat": '{"type":"chat.message","message":"hello","user":"alice","n":42}',
    "nested": '{"a":[1,2,{"b":null}],"c":true,"d":false,"e":-0.5e10,"f":1E-3}',
    "escapes": '{"s":"\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/","t":"te\\u0078t"}',
    "duplicates": '{"k":"v","k":"w","k":3}',
    "nul": '{"nul":"a\\u0000b","a\\u0000":1}',
    "int_limits": '{"max":9223372036854775807,"min":-9223372036854775808,"z":-0}',
    "long_string": '{"long":"' + "\u00e9\u65e5\u672c" * 30 + '","x":"' + "a" * 70 + '"}',
    "spaces": ' \t\r\n{ "a" : 1 , "b" : [ ] }\n ',
    "array": "[1,2,3]",
    "utf8_raw": '{"\u00e9":"\u65e5\u672c\u8a9e","\U0001f600":"\U0001f600"}',
    "deep_64": '{"a":' + "[" * 63 + "]" * 63 + "}",
    "deep_65": '{"a":' + "[" * 64 + "]" * 64 + "}",
    "bad_utf8": b'{"a":"\xc3\x28"}',
    "lone_surrogate": '{"a":"\\ud800"}',
    "control": '{"a":"x\x01y"}',
    "trailing": '{"a":1} {}',
}
for name, text in BODIES.items():
    write("json", name, text)

# ---- fuzz_http_head: control byte + the start of a stream ------------------------------


def req(path, method="GET", version="1.1", headers=None, upgrade=True, origin=True):
    h = ["%s %s HTTP/%s" % (method, path, version), "Host: localhost:8000"]
    if upgrade:
        h += ["Upgrade: websocket", "Connection: Upgrade",
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin:
        h.append("Origin: http://www.example.com")
    h += headers or []
    return ("\r\n".join(h) + "\r\n\r\n").encode()


def frame(opcode, payload=b"", fin=True, mask=b"\0\0\0\0", rsv=0):
    """A client frame; the zero mask key leaves the payload readable to the fuzzer."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


HEADS = {
    "echo": (0, req("/ws/echo/")),
    "echo_bytes1": (1 << 1, req("/ws/echo/")),
    "echo_with_frames": (0, req("/ws/echo/") + frame(1, "hello") + frame(8, b"\x03\xe8")),
    "later": (0, req("/ws/later/")),
    "later_no": (0, req("/ws/later/?no=1")),
    "reject": (0, req("/ws/reject/")),
    "proto": (0, req("/ws/proto/", headers=["Sec-WebSocket-Protocol: superchat, chat"])),
    "params": (0, req("/ws/p/12/a-b/c%2Fd/e?q=%41&x", headers=["Cookie: c=v; d=e", "X-Any: 1"])),
    "params_suffix": (0, req("/ws/s/id-77")),
    "chat": (0, req("/ws/chat/lobby/?name=alice")),
    "no_route": (0, req("/nowhere/")),
    "absolute_url": (0, req("http://localhost:8000/ws/echo/?a=b#frag")),
    "static_index": (0, req("/", upgrade=False)),
    "static_head": (0, req("/app.js", method="HEAD", upgrade=False)),
    "static_dir_redirect": (0, req("/sub", upgrade=False)),
    "static_big": (0, req("/big.bin", upgrade=False)),
    "static_symlink_out": (0, req("/leak.txt", upgrade=False)),
    "static_dotdot": (0, req("/%2e%2e/secret.txt", upgrade=False)),
    "static_link_dir": (0, req("/up/secret.txt", upgrade=False)),
    "post": (0, req("/", method="POST", upgrade=False)),
    "http10": (0, req("/ws/echo/", version="1.0")),
    "version_8": (0, req("/ws/echo/").replace(b"Version: 13", b"Version: 8")),
    "bad_key": (0, req("/ws/echo/").replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short")),
    "two_keys": (0, req("/ws/echo/", headers=["Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="])),
    "garbage": (0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
    "partial_halfclose": (0x10, b"GET /ws/echo/ HTTP/1.1\r\nHost: x\r\n"),
    "obs_fold": (0, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
    "guarded_cookie": (1, req("/ws/user/5/", headers=["Cookie: sessionid=user-5"])),
    "guarded_bearer": (1, req("/ws/user/5/", headers=["Authorization: Bearer user-7"])),
    "guarded_query_deny": (1, req("/ws/user/5/?token=deny")),
    "guarded_query_fail": (1, req("/ws/user/5/?token=fail")),
    "guarded_no_origin": (1, req("/ws/echo/", origin=False)),
    "guarded_bad_origin": (1, req("/ws/echo/", origin=False, headers=["Origin: http://evil.com"])),
    "guarded_origin_port": (1, req("/ws/echo/", origin=False, headers=["Origin: http://[::1]:9000"])),
}
for name, (ctl, data) in HEADS.items():
    write("http_head", name, bytes([ctl]) + data)

# ---- fuzz_ws_input: control byte + frames after the handshake ----------------------------

ECHO, ROOM, CMD, PROTO, LATER, PARAMS, CHAT, GUARDED = range(8)
TOGETHER = 8


def chunk(i):
    return i << 4


INPUTS = {
    "echo_text": (ECHO, frame(1, "hello") + frame(8, b"\x03\xe8bye")),
    "echo_binary": (ECHO, frame(2, b"\x00\xff\x10") + frame(8)),
    "echo_real_mask": (ECHO, frame(1, "masked", mask=b"\x37\xfa\x21\x3d") +
                       frame(8, b"\x03\xe8", mask=b"\x01\x02\x03\x04")),
    "echo_fragments": (ECHO, frame(1, "hel", fin=False) + frame(9, "p") + frame(0, "lo")),
    "echo_ping": (ECHO, frame(9, "ping") + frame(10, "pong") + frame(1, "x")),
    "echo_together": (ECHO | TOGETHER, frame(1, "early")),
    "echo_split1": (ECHO | chunk(1), frame(1, "a\u00e9\U0001f600") + frame(8, b"\x0f\xa0")),
    "echo_bad_utf8": (ECHO, frame(1, b"\xc3\x28")),
    "echo_bad_utf8_split": (ECHO, frame(1, b"\xe6\x97", fin=False) + frame(0, b"\xa5")),
    "echo_unmasked": (ECHO, frame(1, "x", mask=None)),
    "echo_rsv": (ECHO, frame(1, "x", rsv=4)),
    "echo_close_1byte": (ECHO, frame(8, b"\x03")),
    "echo_close_bad_code": (ECHO, frame(8, b"\x03\xed")),
    "echo_too_big": (ECHO, frame(2, b"z" * 5000)),
    "echo_long_ping": (ECHO, frame(9, b"p" * 126)),
    "echo_cont_first": (ECHO, frame(0, "x")),
    "echo_ping_flood": (ECHO, frame(9, b"p" * 125) * 200),
    "room": (ROOM, frame(1, '{"a":1}') + frame(1, "not json") + frame(2, b"leave")),
    "cmd_send": (CMD, frame(1, "send 3 200") + frame(1, "bin 2 70000")),
    "cmd_flood": (CMD, frame(1, "send 64 70000")),
    "cmd_close": (CMD, frame(1, "close 4000 bye")),
    "cmd_close_bad": (CMD, frame(1, "close 1005 x")),
    "cmd_groups": (CMD, frame(1, "join room_g") + frame(1, 'gsend room_g {"text":"hi"}') +
                   frame(1, 'others room_g {"a":[1]}') + frame(1, "leave room_g")),
    "cmd_builtin_close": (CMD, frame(1, 'self websocket.close {"code":4001,"reason":"r"}')),
    "cmd_builtin_close_bad": (CMD, frame(1, 'self websocket_close {"code":"x","reason":5}')),
    "cmd_builtin_send": (CMD, frame(1, 'self websocket.send {"text":"\\u00e9"}')),
    "cmd_builtin_send_bad": (CMD, frame(1, 'self websocket.send {"bytes":"x"}')),
    "cmd_unknown_type": (CMD, frame(1, "self no.such.type {}") + frame(1, "self cmd.echo {}")),
    "cmd_reject_accept": (CMD, frame(1, "reject") + frame(1, "accept")),
    "proto": (PROTO, frame(1, "which?")),
    "later": (LATER, frame(1, "after the decision")),
    "later_together": (LATER | TOGETHER, frame(1, "before the decision")),
    "params": (PARAMS, frame(2, b"\x01\x02")),
    "chat_message": (CHAT, frame(1, '{"message":"hi"}')),
    "chat_dm": (CHAT, frame(1, '{"message":"psst","users":["bob","nobody"]}')),
    "chat_close": (CHAT, frame(1, '{"command":"close"}')),
    "chat_bad": (CHAT, frame(1, '{"message":5}') + frame(1, "[]") + frame(2, b"{}")),
    "guarded": (GUARDED, frame(1, "hi")),
}
for name, (ctl, data) in INPUTS.items():
    write("ws_input", name, bytes([ctl]) + data)

# ---- fuzz_redis_msgpack: channels_redis messages (msgpack maps) ------------------------


def mp(v):
    """A small msgpack encoder (what channels_redis's msgpack.packb produces)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("!b", v)
        if v >= 0:
            return b"\xcf" + struct.pack("!Q", v)
        return b"\xd3" + struct.pack("!q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack("!d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    if isinstance(v, tuple):  # raw: a map given as (key, value) pairs, duplicates allowed
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v)
    raise TypeError(v)


REDIS = {
    "chat": {"type": "chat.message", "text": "hi", "user": "alice"},
    "channel": {"type": "x", "__asgi_channel__": "specific.abc!def"},
    "channel_list": {"type": "x", "n": 1, "__asgi_channel__": ["specific.a!1", "specific.b!2"]},
    "values": {"type": "v", "i": [0, -1, -32, -33, 127, 128, 2**63 - 1, -2**63],
               "f": [0.5, -1e300, 1e-300], "n": None, "b": [True, False],
               "o": {"k": {"l": ["x" * 40]}}, "e": "\u00e9\U0001f600"},
    "uint64_max": {"type": "v", "u": 2**64 - 1},
    "bin": {"type": "v", "data": b"\x00\x01"},
    "no_type": {"text": "x"},
    "type_not_str": {"type": 5},
    "bad_type": {"type": "has space"},
    "dup_type": (("type", "a"), ("type", "b"), ("x", 1)),
    "dup_key": (("type", "a"), ("x", 1), ("x", 2)),
    "non_str_key": ((1, 2), ("type", "a")),
    "nul_key": {"type": "a", "k\u0000": 1},
    "nul_value": {"type": "a", "k": "a\u0000b"},
    "not_map": ["type", "x"],
}
for name, value in REDIS.items():
    write("redis_msgpack", name, mp(value))
write("redis_msgpack", "float32", b"\x82" + mp("type") + mp("f") + mp("x") + b"\xca" + struct.pack("!f", 1.5))
write("redis_msgpack", "nan", b"\x82" + mp("type") + mp("f") + mp("x") + b"\xcb" + struct.pack("!d", float("nan")))
write("redis_msgpack", "ext", b"\x82" + mp("type") + mp("f") + mp("x") + b"\xd4\x01\x02")
write("redis_msgpack", "trailing", mp({"type": "a"}) + b"\x00")
write("redis_msgpack", "truncated", mp({"type": "a", "t": "long text here"})[:-3])
