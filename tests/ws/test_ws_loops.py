"""tests/ws/test_ws_loops.py - several loops over one layer (cch_ws_run_loops, issue 5).

Runs tests/ws_loops_server.c (argv[1]) with 2 or 3 loops. Its room consumer says
on connect which loop holds the connection ({"loop": k, "channel": ...}), so the
tests see where every client lives. Loop 0 accepts and hands each connection to the
loop with the fewest connections, ties round-robin: clients that connect one after
the other alternate between the loops. Checked: the spread; that a group_send (and a
channel send) from a client on any loop reaches the members on every loop, in each
sender's order; that a loop left with fewer connections gets the next ones; that
max_connections counts all loops together (503 beyond); that running out of file
descriptors refuses clients without harm and passes; and the shutdown: SIGTERM
closes every client on every loop with 1001 and the server exits 0, a second signal
drops clients that do not answer.

A "barrier" below is a round trip through a room that has a client on each loop:
a loop flushes what a message produced only in a later loop turn than the one that
read it, and the server closes a connection whose EOF it read (and publishes its
count of connections) in that turn, so after the round trip every close the clients
completed before it has been counted.
"""
import json
import signal
import socket
import warnings

import wsclient
from wsclient import OP_CLOSE, OP_TEXT, WS, Server


def join(port, room, n):
    """n clients joining `room` one after the other; returns [(ws, loop, channel)]."""
    return [(ws, h["loop"], h["channel"]) for ws, h in wsclient.join_room(port, room, n)]


def recv_json(ws):
    op, data = ws.recv_message()
    assert op == OP_TEXT, (op, data)
    return json.loads(data)


def barrier(clients, tag):
    """A group round trip: the first client sends, every client receives it."""
    clients[0][0].send_text(json.dumps({"barrier": tag}))
    for ws, _, _ in clients:
        assert recv_json(ws) == {"barrier": tag}


class Spread(wsclient.unittest.TestCase):
    def setUp(self):
        self.server = Server("--loops", 2, "--log-level", 2)

    def tearDown(self):
        code, err = self.server.stop()
        self.assertEqual(code, 0, err[-3000:])

    def test_clients_alternate_between_loops(self):
        clients = join(self.server.port, "a", 10)
        self.assertEqual([loop for _, loop, _ in clients], [0, 1] * 5)
        for ws, _, _ in clients:
            ws.close()

    def test_group_send_reaches_every_loop(self):
        clients = join(self.server.port, "g", 10)
        self.assertEqual({loop for _, loop, _ in clients}, {0, 1})
        for round_ in range(3):
            for i, (ws, loop, _) in enumerate(clients):
                ws.send_text(json.dumps({"from": i, "loop": loop, "round": round_}))
        for ws, _, _ in clients:
            got = [recv_json(ws) for _ in range(30)]
            # every sender's three messages, in its order, from both loops
            for i in range(10):
                mine = [m["round"] for m in got if m["from"] == i]
                self.assertEqual(mine, [0, 1, 2])
            self.assertEqual({m["loop"] for m in got}, {0, 1})
        for ws, _, _ in clients:
            ws.close()

    def test_channel_send_crosses_loops(self):
        (a, la, ca), (b, lb, cb) = join(self.server.port, "d", 2)
        self.assertEqual((la, lb), (0, 1))
        a.send_text("to %s %s" % (cb, json.dumps({"to": "b"})))
        self.assertEqual(recv_json(b), {"to": "b"})
        b.send_text("to %s %s" % (ca, json.dumps({"to": "a"})))
        self.assertEqual(recv_json(a), {"to": "a"})
        a.close()
        b.close()

    def test_the_emptier_loop_gets_new_clients(self):
        clients = join(self.server.port, "l", 6)                  # loops 0 1 0 1 0 1
        on1 = [c for c in clients if c[1] == 1]
        for ws, _, _ in on1[:2]:
            ws.close()                                            # loop 1 keeps one
        rest = [c for c in clients if c not in on1[:2]]
        barrier(rest, "closed")
        more = join(self.server.port, "l", 2)
        self.assertEqual([loop for _, loop, _ in more], [1, 1])
        nxt = join(self.server.port, "l", 2)                      # 3 and 3: alternate
        self.assertEqual(sorted(loop for _, loop, _ in nxt), [0, 1])
        for ws, _, _ in rest + more + nxt:
            ws.close()


class Limits(wsclient.unittest.TestCase):
    def test_max_connections_counts_every_loop(self):
        server = Server("--loops", 2, "--max-conns", 4)
        try:
            clients = join(server.port, "m", 4)
            self.assertEqual(sorted(loop for _, loop, _ in clients), [0, 0, 1, 1])
            ws = WS.connect(server.port, "/ws/room/m/", expect=503)
            ws.sock.close()
            ws0 = clients.pop(0)[0]
            ws0.close()
            barrier(clients, "gone")
            clients += join(server.port, "m", 1)
            self.assertEqual(clients[-1][1], 0)
            for ws, _, _ in clients:
                ws.close()
        finally:
            code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])

    def test_three_loops(self):
        server = Server("--loops", 3)
        try:
            clients = join(server.port, "t", 9)
            self.assertEqual([loop for _, loop, _ in clients], [0, 1, 2] * 3)
            clients[4][0].send_text(json.dumps({"hi": 1}))
            for ws, _, _ in clients:
                self.assertEqual(recv_json(ws), {"hi": 1})
            for ws, _, _ in clients:
                ws.close()
        finally:
            code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])

    def test_port_in_use_fails(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        try:
            port = holder.getsockname()[1]
            proc = wsclient.subprocess.run(
                wsclient.server_wrap.command([wsclient.server_bin(), "--loops", 2, "--port",
                                             port, "--log-level", 0]),
                stdout=wsclient.subprocess.PIPE, stderr=wsclient.subprocess.PIPE,
                timeout=wsclient.TIMEOUT * 3)
        finally:
            holder.close()
        err = proc.stderr.decode(errors="replace")
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("Address already in use", err)
        self.assertIsNone(wsclient.server_wrap.report(err), err)


class Descriptors(wsclient.unittest.TestCase):
    def test_out_of_descriptors_then_recovers(self):
        # loop 0 accepts for both loops: at the descriptor limit it accepts and closes
        # what waits (as libuv does for one loop), and serves again once clients leave
        server = Server("--loops", 2, "--nofile", 48, "--log-level", 1)
        # (a refused client's socket is left to the garbage collector)
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            clients, refused = [], 0
            for _ in range(60):
                try:
                    clients += join(server.port, "fd", 1)
                except (EOFError, ConnectionResetError, BrokenPipeError):
                    refused += 1
            self.assertGreater(refused, 0)
            self.assertGreater(len(clients), 10)
            self.assertEqual({loop for _, loop, _ in clients}, {0, 1})
            for ws, _, _ in clients[-6:]:
                ws.close()
            clients = clients[:-6]
            barrier(clients, "freed")
            clients += join(server.port, "fd", 2)
            barrier(clients, "again")
            for ws, _, _ in clients:
                ws.close()
        finally:
            code, err = server.stop()
        self.assertEqual(code, 0, err[-3000:])
        self.assertIn("loop 0: accept failed: Too many open files", err)


class Shutdown(wsclient.unittest.TestCase):
    def test_sigterm_closes_every_loop_with_1001(self):
        server = Server("--loops", 2, "--log-level", 2)
        clients = join(server.port, "s", 6)
        for ws, _, _ in clients:
            ws.send_text(json.dumps({"x": 1}))
        for ws, _, _ in clients:
            for _ in range(6):
                recv_json(ws)
        server.proc.send_signal(signal.SIGTERM)
        for ws, _, _ in clients:
            code, reason = ws.expect_close(1001)
            self.assertEqual(code, 1001)
        code, err = server.wait()
        self.assertEqual(code, 0, err[-3000:])
        self.assertIn("loop 0: shutting down: 3 connection(s) open", err)
        self.assertIn("loop 1: shutting down: 3 connection(s) open", err)

    def test_second_signal_drops_silent_clients(self):
        server = Server("--loops", 2, "--close-timeout", 600000)
        clients = join(server.port, "q", 4)
        server.proc.send_signal(signal.SIGTERM)
        for ws, _, _ in clients:                       # close frames, not answered
            op, payload = ws.recv_message()
            self.assertEqual(op, OP_CLOSE)
            self.assertEqual(payload[:2], b"\x03\xe9")    # 1001
        server.proc.send_signal(signal.SIGTERM)
        for ws, _, _ in clients:
            ws.expect_eof()
        code, err = server.wait()
        self.assertEqual(code, 0, err[-3000:])

    def test_idle_server_stops(self):
        server = Server("--loops", 2)
        code, err = server.stop(signal.SIGINT)
        self.assertEqual(code, 0, err[-3000:])


if __name__ == "__main__":
    wsclient.main()
