#!/usr/bin/env bash
# fuzz/build.sh [DIR] - configures (once) and builds the libFuzzer targets in DIR
# (default build-fuzz): clang, -Dfuzz=true (coverage hooks in the library),
# AddressSanitizer + UndefinedBehaviorSanitizer, warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-fuzz}
if [ ! -f "$dir/build.ninja" ]; then
    CC=clang meson setup "$dir" -Dfuzz=true -Dwerror=true \
        -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debugoptimized -Ddefault_library=static \
        -Dtests=disabled -Dbench=false
fi
meson compile -C "$dir"
