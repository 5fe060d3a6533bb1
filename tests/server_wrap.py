"""tests/server_wrap.py - starts our server binaries under $CCH_SERVER_WRAPPER.

The valgrind pass (meson test --setup valgrind, see tests/meson.build) sets
CCH_SERVER_WRAPPER to a valgrind command line. Python tests then run every server
they start under it (running Python itself under valgrind would be pointless).
valgrind exits with its --error-exitcode when it found an error or a leak, and prints
its findings as "==PID== ..." lines on the server's stderr: report() finds them, so a
test that only reads the server's output fails too. Without the variable both do
nothing. Standard library only."""

import os
import re
import shlex

WRAPPER = shlex.split(os.environ.get("CCH_SERVER_WRAPPER", ""))

# How much slower a wrapped server is; tests multiply their waits by it.
SLOWDOWN = 4.0 if WRAPPER else 1.0

_REPORT = re.compile(r"^==\d+== .*$", re.M)


def command(argv):
    """The command line that starts argv (a server and its arguments)."""
    return WRAPPER + [str(a) for a in argv]


def report(stderr_text):
    """The wrapper's error report in a server's stderr, or None."""
    lines = _REPORT.findall(stderr_text or "")
    return "\n".join(lines) if lines else None
