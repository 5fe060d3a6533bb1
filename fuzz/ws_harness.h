/* fuzz/ws_harness.h - the WebSocket adapter, in-process, for the fuzz targets.
 *
 * Two real servers (lib/ws) run on one libuv loop owned by the harness:
 *   FZ_PLAIN    an app without middleware: echo, rooms, reject, subprotocols, a
 *               consumer that decides later, commands that drive the built-in
 *               handlers, route parameters, the example chat; static files;
 *   FZ_GUARDED  an app behind the origin check and the auth middleware.
 * A client is one end of a socketpair whose other end the server adopts as if it
 * had accepted it (ws_server_adopt), so every byte goes through the real read path,
 * the prepare-phase flush and writev. No TCP ports are used.
 *
 * Everything a server sends back is collected per client and checked by
 * fz_check_client(): a well-formed HTTP answer (exact Content-Length, Connection:
 * close, nothing after it), or a 101 followed by well-formed server frames. Any
 * violation, and any connection or parser still counted after fz_end(), traps. */
#ifndef CCH_FUZZ_WS_HARNESS_H
#define CCH_FUZZ_WS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { FZ_PLAIN = 0, FZ_GUARDED = 1, FZ_SERVERS = 2 };

#define FZ_MAX_CLIENTS 4

typedef struct fz_client {
    int fd;                 /* our end of the socketpair; -1 once closed */
    unsigned char *out;     /* everything the server sent (up to FZ_OUT_MAX bytes) */
    size_t out_len;
    bool overflow;          /* more than FZ_OUT_MAX bytes arrived: not checked */
    bool eof;               /* the server shut down its side */
    bool peer_gone;         /* writing failed: the server closed the connection */
} fz_client;

#define FZ_OUT_MAX (4u << 20)

/* Sets up the loop and both servers once (idempotent). */
void fz_init(void);

/* Opens a client to server `which`. Traps when it cannot. */
fz_client *fz_connect(int which);

/* Sends data in pieces of `chunk` bytes (0: all at once), letting the loop run
 * until nothing moves after each piece. Stops early when the server stops reading
 * or closed the connection. */
void fz_send(fz_client *c, const void *data, size_t len, size_t chunk);

/* Runs the loop until nothing moves (bounded). */
void fz_settle(void);

/* Checks what the server sent to c so far (see above); traps on a violation.
 * Returns the HTTP status of the answer (0: none yet). */
int fz_check_client(const fz_client *c);

/* Closes every client (a half-close first, so the server sees a clean EOF), lets the
 * servers finish, drops what is left as the timers would, and traps unless every
 * counter is back to zero. */
void fz_end(void);

/* A valid handshake for `path` (with Host, Origin and cookie accepted by
 * FZ_GUARDED) into buf; returns its length. */
size_t fz_handshake(char *buf, size_t cap, const char *path);

/* Traps with a message on stderr. */
#define FZ_ASSERT(cond, what)                                                         \
    do {                                                                              \
        if (!(cond))                                                                  \
            fz_fail(__FILE__, __LINE__, what);                                        \
    } while (0)
_Noreturn void fz_fail(const char *file, int line, const char *what);

#endif
