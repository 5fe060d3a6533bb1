#!/bin/sh
# tests/valgrind_wrap.sh - the exe_wrapper of the 'valgrind' test setup (tests/meson.build).
# Runs a test under $CCH_SERVER_WRAPPER (the valgrind command line), except a Python
# test: Python itself is not worth checking, so it runs as it is and starts each of
# our servers under $CCH_SERVER_WRAPPER instead (tests/server_wrap.py).
case "$(basename "$1")" in
    python*) exec "$@" ;;
esac
# shellcheck disable=SC2086  # the wrapper is a command line: split it
exec $CCH_SERVER_WRAPPER "$@"
