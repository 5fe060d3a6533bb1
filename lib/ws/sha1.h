/* lib/ws/sha1.h - internal: SHA-1 (lib/ws/sha1.c), for the WebSocket accept key.
 *
 * Self-contained (libc only), so that bench/loadgen, which checks the servers'
 * accept keys, compiles the same file instead of carrying a copy. */
#ifndef CCH_WS_SHA1_H
#define CCH_WS_SHA1_H

#include <stddef.h>
#include <stdint.h>

/* The SHA-1 digest of len bytes into out[20]. */
void ws_sha1(const void *data, size_t len, uint8_t out[20]);

#endif
