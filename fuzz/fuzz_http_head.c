/* fuzz/fuzz_http_head.c - libFuzzer target: the first bytes of a TCP stream.
 *
 * Input: one control byte, then the bytes a client sends on a new connection.
 * Control byte: bit 0 picks the server (FZ_PLAIN: routes, consumers, static files;
 * FZ_GUARDED: origin check and auth middleware), bits 1-3 the size of the pieces
 * the stream is written in (all at once, or 1, 2, 3, 7, 16, 64, 256 bytes, the loop
 * running after each), bit 4 whether the client half-closes before the answer is
 * checked. The bytes go through the real read path: llhttp and the request head
 * (lib/ws/http.c), the handshake checks, cch_conn_open (middleware, routing, the
 * consumer's decision), static files, and any bytes after the head into the frame
 * parser. Whatever comes back must be a well-formed answer (ws_harness.c), and
 * nothing may be left once the client is gone. */
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ws_harness.h"

static const size_t chunks[8] = {0, 1, 2, 3, 7, 16, 64, 256};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    fz_init();
    uint8_t ctl = data[0];
    fz_client *c = fz_connect(ctl & 1 ? FZ_GUARDED : FZ_PLAIN);
    fz_send(c, data + 1, size - 1, chunks[(ctl >> 1) & 7]);
    if (ctl & 0x10) {
        shutdown(c->fd, SHUT_WR);
        fz_settle();
    }
    fz_check_client(c);
    fz_end();
    return 0;
}
