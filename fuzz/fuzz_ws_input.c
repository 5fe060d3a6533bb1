/* fuzz/fuzz_ws_input.c - libFuzzer target: what a client sends after a valid
 * handshake.
 *
 * Input: one control byte, then raw bytes that follow the handshake on the stream
 * (client frames must be masked: the corpus has valid ones to start from).
 * Control byte: bits 0-2 pick the endpoint (echo, a room with a second member,
 * commands that drive groups and the built-in handlers, subprotocols, a consumer
 * that accepts later from a layer message, route parameters, the example chat with
 * a second member, echo behind the middleware); bit 3 sends the handshake and the
 * bytes in one write (the bytes then wait in the request buffer: the pending-input
 * path); bits 4-6 the piece size (all at once, 1, 2, 3, 7, 16, 64, 256 bytes).
 * Everything goes through lib/ws/input.c and wslay, the consumers, the output queue
 * and shared frames; every byte any client gets back must be a well-formed server
 * frame (ws_harness.c), and nothing may be left once the clients are gone. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws_harness.h"

static const size_t chunks[8] = {0, 1, 2, 3, 7, 16, 64, 256};

static const struct {
    int server;
    const char *path;
    const char *peer; /* a second client on the same group, or NULL */
} endpoints[8] = {
    {FZ_PLAIN, "/ws/echo/", NULL},
    {FZ_PLAIN, "/ws/room/r1/", "/ws/room/r1/"},
    {FZ_PLAIN, "/ws/cmd/", "/ws/room/g/"},
    {FZ_PLAIN, "/ws/proto/", NULL},
    {FZ_PLAIN, "/ws/later/", NULL},
    {FZ_PLAIN, "/ws/p/12/a-b/c/d%20e?q=1", NULL},
    {FZ_PLAIN, "/ws/chat/lobby/?name=alice", "/ws/chat/lobby/?name=bob"},
    {FZ_GUARDED, "/ws/echo/", NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    fz_init();
    uint8_t ctl = data[0];
    int e = ctl & 7;
    bool together = ctl & 8;
    size_t chunk = chunks[(ctl >> 4) & 7];
    char hs[1024];

    fz_client *peer = NULL;
    if (endpoints[e].peer) {
        peer = fz_connect(endpoints[e].server);
        size_t n = fz_handshake(hs, sizeof hs, endpoints[e].peer);
        fz_send(peer, hs, n, 0);
        FZ_ASSERT(fz_check_client(peer) == 101, "the peer's handshake failed");
    }
    fz_client *c = fz_connect(endpoints[e].server);
    size_t n = fz_handshake(hs, sizeof hs, endpoints[e].path);
    if (together) {
        size_t total = n + size - 1;
        char *buf = malloc(total ? total : 1);
        FZ_ASSERT(buf, "malloc");
        memcpy(buf, hs, n);
        memcpy(buf + n, data + 1, size - 1);
        fz_send(c, buf, total, chunk);
        free(buf);
    } else {
        fz_send(c, hs, n, 0);
        FZ_ASSERT(fz_check_client(c) == 101, "the handshake failed");
        fz_send(c, data + 1, size - 1, chunk);
    }
    fz_check_client(c);
    if (peer)
        fz_check_client(peer);
    fz_end();
    return 0;
}
