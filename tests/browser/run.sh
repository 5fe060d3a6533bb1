#!/bin/sh
# run.sh - runs the real-browser test of the example chat (chat.test.mjs).
# Installs playwright-core here with npm when node_modules is missing; exits 77
# (skipped) when chromium, node or playwright-core are not available.
# Usage: run.sh SERVER_EXECUTABLE [SCREENSHOT.png]
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/bin/chromium ]; then
    echo "SKIP: /usr/bin/chromium not installed (apt-get install -y chromium)"
    exit 77
fi
if ! command -v node >/dev/null 2>&1; then
    echo "SKIP: node not installed"
    exit 77
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
    if ! command -v npm >/dev/null 2>&1 ||
       ! (cd "$here" && npm install --no-audit --no-fund --loglevel=error); then
        echo "SKIP: could not install playwright-core (npm install in $here)"
        exit 77
    fi
fi
exec node "$here/chat.test.mjs" "$@"
