#!/usr/bin/python3
"""chat_threads_test.py - the example chat on several loops (--threads, issue 5).

Starts the built example chat with --threads 2 (and 3) on a free loopback port and
talks to it with Debian's python3-websockets. The chat's rooms are shared by every
loop while its clients are spread over the loops (loop 0 hands each new connection
to the loop with the fewest, ties round-robin, so clients joining one after the
other alternate), and its group messages go through the one shared layer. Checked:
join and leave notices carry the right member list and owner whichever loop the
members are on; a chat message and a direct message from a client on one loop reach
the members on the others, in each sender's order; the creator closes the room for
members on every loop; clients joining all at once each see the later joins with
counts that go up by one (the notices follow the registry's order); SIGTERM closes
every client with 1001 and the server exits 0, both loops saying how many
connections they held; bad --threads and --capacity values are usage errors.

Usage: /usr/bin/python3 chat_threads_test.py SERVER_EXECUTABLE
Exit code 77 (skipped) when the websockets module is missing.
"""
import asyncio
import json
import os
import re
import signal
import sys
import unittest

import chat_server_test as cst   # its Server, join and helpers (skips without websockets)
from chat_server_test import STEP, assert_no_sanitizer_report, recv_json, run

import websockets


async def join_all(server, room, names):
    """Joins names one after the other; the earlier members see each join."""
    clients = []
    for i, name in enumerate(names):
        ws = await cst.join(server, room, name)
        for j, other in enumerate(clients):
            ev = await recv_json(other)
            assert ev["event"] == "join" and ev["user"] == name, ev
            assert ev["members"] == names[:i + 1], ev
            assert ev["count"] == i + 1 and ev["owner"] == names[0], ev
        clients.append(ws)
    return clients


def loop_counts(log):
    """{loop: connections open} from the shutdown lines of the log."""
    return {int(m.group(1)): int(m.group(2)) for m in
            re.finditer(r"loop (\d+): shutting down: (\d+) connection\(s\) open", log)}


class ThreadsTest(unittest.TestCase):
    THREADS = 2

    def setUp(self):
        self.server = cst.Server("--threads", str(self.THREADS))

    def tearDown(self):
        rc = self.server.stop()
        log = self.server.stderr()
        self.server.close()
        self.assertEqual(rc, 0, log)
        assert_no_sanitizer_report(log)

    def test_room_spans_loops(self):
        names = ["u%d" % i for i in range(6)]

        async def scenario():
            clients = await join_all(self.server, "span", names)
            # every client sends; everyone gets all six, each sender's in order
            for rnd in range(2):
                for name, ws in zip(names, clients):
                    await ws.send(json.dumps({"message": "%s-%d" % (name, rnd)}))
            for ws in clients:
                got = [await recv_json(ws) for _ in range(12)]
                for name in names:
                    self.assertEqual([m["message"] for m in got if m["user"] == name],
                                     [name + "-0", name + "-1"])
            # a direct message from u1 to u4 (alternating loops: other loops) and back
            # (the marker leaves once the sender has its copy: it follows everywhere)
            await clients[1].send(json.dumps({"message": "psst", "users": ["u4"]}))
            want = {"message": "psst", "user": "u1", "users": ["u4"]}
            self.assertEqual(await recv_json(clients[1]), want)
            await clients[0].send(json.dumps({"message": "marker"}))
            for i, ws in enumerate(clients):
                if i == 4:
                    self.assertEqual(await recv_json(ws), want)
                self.assertEqual((await recv_json(ws))["message"], "marker")
            # u2 leaves: everyone else learns it, with the members left
            await clients[2].close()
            for i, ws in enumerate(clients):
                if i != 2:
                    ev = await recv_json(ws)
                    self.assertEqual((ev["event"], ev["user"], ev["count"]), ("leave", "u2", 5))
                    self.assertEqual(ev["members"], ["u0", "u1", "u3", "u4", "u5"])
            # the creator leaves: the oldest member left becomes the owner
            await clients[0].close()
            for i, ws in enumerate(clients):
                if i not in (0, 2):
                    ev = await recv_json(ws)
                    self.assertEqual((ev["event"], ev["user"], ev["owner"]), ("leave", "u0", "u1"))
            # the new owner closes the room for members on every loop
            await clients[1].send(json.dumps({"command": "close"}))
            for i in (1, 3, 4, 5):
                ws = clients[i]
                self.assertEqual((await recv_json(ws))["event"], "close")
                await asyncio.wait_for(ws.wait_closed(), STEP)
                self.assertEqual((ws.close_code, ws.close_reason), (4000, "room closed"))
        run(scenario())

    def test_simultaneous_joins_see_counts_in_order(self):
        n = 30

        async def one(i):
            ws = await asyncio.wait_for(
                websockets.connect(self.server.url("/ws/chat/rush/?name=r%d" % i),
                                   open_timeout=STEP, close_timeout=STEP), STEP)
            hello = await recv_json(ws)
            self.assertEqual(hello["event"], "hello")
            counts, mine = [], None
            while not counts or counts[-1] < n:
                ev = await recv_json(ws)
                self.assertEqual(ev["event"], "join")
                if ev["user"] == "r%d" % i:
                    mine = ev["count"]
                if mine is not None:
                    counts.append(ev["count"])
            return ws, counts

        async def scenario():
            results = await asyncio.gather(*(one(i) for i in range(n)))
            owners = set()
            for ws, counts in results:
                # from its own join on, every join, in the order the registry took them
                self.assertEqual(counts, list(range(counts[0], n + 1)))
            self.assertEqual(sorted(c[0] for _, c in results), list(range(1, n + 1)))
            # one more message: the final state agrees everywhere
            await results[0][0].send(json.dumps({"message": "all here?"}))
            for ws, _ in results:
                self.assertEqual((await recv_json(ws))["message"], "all here?")
            last = await cst.join(self.server, "rush", "late")
            for ws, _ in results:
                ev = await recv_json(ws)
                self.assertEqual((ev["user"], ev["count"]), ("late", n + 1))
                owners.add(ev["owner"])
            self.assertEqual(len(owners), 1)
            for ws, _ in results:
                await ws.close()
            await last.close()
        run(scenario())

    def test_sigterm_closes_every_loop(self):
        names = ["s%d" % i for i in range(2 * self.THREADS)]

        async def scenario():
            clients = await join_all(self.server, "bye", names)
            self.server.proc.send_signal(signal.SIGTERM)
            for ws in clients:
                await asyncio.wait_for(ws.wait_closed(), STEP)
                self.assertEqual(ws.close_code, 1001)
        run(scenario())
        self.assertEqual(self.server.proc.wait(STEP), 0)
        log = self.server.stderr()
        self.assertEqual(loop_counts(log), {k: 2 for k in range(self.THREADS)}, log)
        for name in names:
            self.assertIn("chat disconnect room=bye user=%s code=1001" % name, log)


class ThreeThreadsTest(ThreadsTest):
    THREADS = 3


class FlagsTest(unittest.TestCase):
    def test_bad_threads(self):
        for value in ("0", "65", "x", "-1", ""):
            r = cst.FlagsTest.run_server(self, "--port", str(cst.free_port()),
                                         "--threads", value)
            self.assertEqual(r.returncode, 2, value)
            self.assertIn("--threads", r.stderr)
            assert_no_sanitizer_report(r.stderr)

    def test_bad_capacity(self):
        for value in ("0", "x", "-5", "10000001"):
            r = cst.FlagsTest.run_server(self, "--port", str(cst.free_port()),
                                         "--capacity", value)
            self.assertEqual(r.returncode, 2, value)
            self.assertIn("--capacity", r.stderr)
            assert_no_sanitizer_report(r.stderr)

    def test_help_mentions_threads(self):
        r = cst.FlagsTest.run_server(self, "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--threads N", r.stdout)
        self.assertIn("--capacity N", r.stdout)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: chat_threads_test.py SERVER_EXECUTABLE", file=sys.stderr)
        sys.exit(2)
    cst.SERVER = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
