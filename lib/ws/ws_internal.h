/* lib/ws/ws_internal.h - the WebSocket adapter's internal types, shared by the files of lib/ws.
 *
 * One server (ws_server) per app and loop; one ws_conn per TCP connection. A
 * connection keeps only what its current state needs: an idle WebSocket connection
 * is a ws_conn (uv_tcp_t plus a few pointers); the request head (ws_http), the
 * frame parser (ws_input, a wslay context) and the output queue (ws_outq) exist only
 * while they hold something. */
#ifndef CCH_WS_INTERNAL_H
#define CCH_WS_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "cchannels/app.h"
#include "cchannels/ws.h"
#include "sha1.h"
#include "slab.h"

typedef struct cch_ws_server ws_server;
typedef struct ws_conn ws_conn;
typedef struct ws_http ws_http;
typedef struct ws_input ws_input;
typedef struct ws_outq ws_outq;
typedef struct ws_qblock ws_qblock;

/* ---- connection ---------------------------------------------------------------- */

enum ws_state {
    WS_HTTP = 0,     /* reading the request head */
    WS_DECIDING,     /* upgrade handed to the app, not decided yet (reading paused) */
    WS_OPEN,         /* WebSocket open */
    WS_CLOSING,      /* we sent a close frame; waiting for the client's */
    WS_LINGER,       /* finished: flush, shut down writing, drain until EOF */
    WS_DEAD          /* uv_close called; freed in its close callback */
};

/* Which deadline list a connection is on (timer.c). */
enum ws_tlist { WS_TL_NONE = 0, WS_TL_HANDSHAKE, WS_TL_IDLE, WS_TL_CLOSING, WS_TL_COUNT };

enum ws_conn_flags {
    WS_F_DIRTY = 1u << 0,        /* on the server's dirty list (output / pending input) */
    WS_F_PENDING_INPUT = 1u << 1,/* bytes after the request head wait to be parsed */
    WS_F_PINGED = 1u << 2,       /* an idle ping is outstanding */
    WS_F_CLOSE_SENT = 1u << 3,   /* a close frame is queued: nothing more may be sent */
    WS_F_CLOSE_RECV = 1u << 4,   /* the client's close frame arrived */
    WS_F_SHUT_WR = 1u << 5,      /* shutdown(SHUT_WR) done */
    WS_F_READING = 1u << 6,      /* uv_read_start active */
    WS_F_HEAD_ONLY = 1u << 7,    /* HEAD request: no body */
    WS_F_BUSY = 1u << 8,         /* accepted beyond max_connections: 503 and close */
    WS_F_UPGRADED = 1u << 9,     /* 101 sent (counted in ws_active) */
    WS_F_FREE_ME = 1u << 10,     /* closed while on the dirty list: freed from there */
    WS_F_PAUSED = 1u << 11,      /* reading stopped: the layer is congested (flow.c) */
};

/* Every idle WebSocket connection is one of these: it is kept to 312 bytes (a
 * 320-byte malloc chunk), so the app's connection lives in tcp.data (ws_conn_cc). */
struct ws_conn {
    uv_tcp_t tcp;                /* first member: the handle converts to the conn;
                                    tcp.data: the app's connection (cch_conn *), once
                                    cch_conn_open made it, else NULL */
    ws_server *srv;
    ws_conn *tprev, *tnext;      /* deadline list links */
    ws_outq *outq;               /* NULL while nothing is waiting to be written */
    ws_input *in;                /* NULL unless a frame or message is unfinished */
    ws_http *http;               /* NULL unless handshaking or serving a file */
    ws_conn *dnext;              /* next on the server's dirty list */
    uint32_t deadline : 30;      /* in ticks of the server's clock (timer.c) */
    uint32_t tlist : 2;          /* enum ws_tlist */
    uint16_t flags;              /* enum ws_conn_flags (a whole word: the hot one) */
    uint16_t code : 13;          /* the close code to report (ws_conn_set_code) */
    uint16_t state : 3;          /* enum ws_state */
};

_Static_assert(sizeof(struct ws_conn) <= 312, "an idle connection in a 320-byte chunk");

/* Notes the close code to report: the one received (1005: none given), else the one
 * we sent, else none (0). Close codes are below 5000; anything else is noted as 1002. */
static inline void ws_conn_set_code(ws_conn *c, int code)
{
    c->code = (uint16_t)(code > 0 && code < 5000 ? code : 1002) & 0x1fffu;
}

/* The app's connection of c, or NULL. */
static inline cch_conn *ws_conn_cc(const ws_conn *c)
{
    return (cch_conn *)c->tcp.data;
}

/* ---- server -------------------------------------------------------------------- */

#define WS_READ_BUF_SIZE (64 * 1024)
#define WS_IOV_MAX 1024

typedef struct ws_tlist_head {
    ws_conn *head, *tail;
} ws_tlist_head;

struct cch_ws_server {
    uv_tcp_t listener;
    uv_prepare_t prepare;        /* flushes dirty connections once per iteration */
    uv_async_t async;            /* the layer's wakeup -> cch_app_dispatch */
    uv_timer_t timer;            /* the earliest deadline of the lists */
    uv_tcp_t spare;              /* accepts and closes a client we have no memory for */
    bool spare_busy, accept_pending;
    uv_loop_t *loop;
    cch_app *app;
    cch_ws_options opts;         /* defaults applied; strings point into the copies */
    char *host;
    char *static_dir;            /* realpath() of opts.static_dir, or NULL */
    size_t static_dir_len;
    int port;
    cch_ws_stats stats;

    ws_tlist_head lists[WS_TL_COUNT];
    uint64_t timer_due;          /* when the timer is armed for (UINT64_MAX: not armed) */
    uint64_t tick_epoch;         /* uv_now of tick 0 of the connections' deadlines */
    size_t n_conns;              /* connections counted against max_connections */

    ws_conn *dirty_head, *dirty_tail; /* connections to flush / to feed, FIFO */

    /* input: one read buffer per server, handed to every read */
    char *read_buf;
    ws_conn *cur;                /* connection being parsed by wslay right now */
    const uint8_t *cur_data;
    size_t cur_len, cur_off;
    ws_input *spare_ctx;         /* one clean wslay parser kept for reuse */

    /* handshakes (http.c): request states, the spare one first */
    ws_http *http_spare;         /* allocated at the first handshake, or NULL */
    bool http_spare_busy;
    cch__slab_pool http_slabs;   /* the others: unmapped once none is in use */

    /* output: pools of queue parts, and the scratch iovec for one writev */
    cch__slab_pool block_slabs;  /* ws_qblock */
    cch__slab_pool outq_slabs;   /* ws_outq */
    cch__slab_pool sbuf_slabs;   /* small buffers of frames (output.c) */
    uint64_t pool_trim_at;       /* when the housekeeping tick runs next (0: not armed) */
    uint64_t idle_poll_at;       /* when ws_server_idle_poll runs (0: not armed) */
    int dispatch_due;            /* the layer woke us (atomic): dispatch in prepare */
    struct ws_arena *arena;      /* output.c: where shared frames are being laid out */
    uv_buf_t iov[WS_IOV_MAX];

    /* flow control (flow.c): connections paused while the layer is congested */
    cch_layer *layer;            /* the app's, borrowed */
    ws_conn **paused;
    size_t n_paused, cap_paused;
    uint64_t resume_at;          /* when the pause ends at the latest (0: none) */
    bool flow_off;               /* a pause ran out: none until the layer is seen calm */

    /* life cycle */
    bool stopping;
    bool closing_handles;
    int handles_open;            /* handles of the server still to be closed */
    cch_ws_stopped_fn stopped;
    void *stopped_ud;
    void (*gone_hook)(void *ud); /* cch_ws_run's: closes its signal handles */
    void *gone_ud;

    /* cch_ws_run_loops (loops.c): the loop that runs this server, or NULL. Such a
     * server has no listener (loop 0 hands it accepted sockets), leaves the app's
     * wakeup to its loop, and publishes n_conns for the acceptor. */
    struct ws_loop *owner;
    int loop_index;
};

/* ---- server.c ------------------------------------------------------------------ */
void ws_log(ws_server *s, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* "ip:port" of the peer into buf (for logs). */
void ws_conn_peer(ws_conn *c, char *buf, size_t cap);
/* Queues c for the prepare phase (flush and pending input). Never fails. */
void ws_mark_dirty_slow(ws_conn *c);
static inline void ws_mark_dirty(ws_conn *c)
{
    if (!(c->flags & WS_F_DIRTY)) /* already listed: the common case, one test */
        ws_mark_dirty_slow(c);
}
/* libuv read callbacks: every read lands in the server's one read buffer. */
void ws_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void ws_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
/* The app's wakeup for s (any thread): notes that layer messages wait, so that the
 * prepare phase dispatches them after this iteration's reads, and signals s->async
 * (which wakes a blocked loop and dispatches too). */
void ws_server_wakeup(ws_server *s);
/* Polls the layer with nothing pending (timer.c, WS_IDLE_POLL_MS after the last
 * delivery), so that a layer can give back what its busy turns needed (the in-memory
 * layer's ring slabs) once the app has gone quiet. */
#define WS_IDLE_POLL_MS 250
void ws_server_idle_poll(ws_server *s);
/* Finishes a stopping server once its last connection is gone. */
void ws_server_maybe_done(ws_server *s);
/* Takes a connected stream socket as a new client, as if the listener had accepted
 * it (the fuzz targets drive the server through socketpairs this way). Returns 0,
 * CCH_ENOMEM or CCH_EIO; on failure fd is still the caller's. */
int ws_server_adopt(ws_server *s, uv_os_sock_t fd);
/* The same, for a socket handed over by the acceptor of cch_ws_run_loops; `busy`: the
 * loops hold max_connections already (answered 503). */
int ws_server_take(ws_server *s, uv_os_sock_t fd, bool busy);
/* Starts a server of cch_ws_run_loops's loop `owner` (index `index`): like
 * cch_ws_server_start without a listener; `opts` has no ready callback. */
int ws_server_start_owned(ws_server **out, cch_app *app, uv_loop_t *loop,
                          const cch_ws_options *opts, struct ws_loop *owner, int index);
/* Makes, binds and listens the socket for s's host and port (logged on failure); sets
 * s->port. Returns 0 and the descriptor in *fd, CCH_EINVAL or CCH_EIO. */
int ws_server_listen_fd(ws_server *s, int *fd);

/* ---- loops.c: cch_ws_run_loops ------------------------------------------------- */
/* Called by an owned server: it started (its async may be signalled from now on),
 * it is about to close its async (never again), and its count of connections. */
void ws_loop_attach(struct ws_loop *l, ws_server *s);
void ws_loop_detach(struct ws_loop *l);
void ws_loop_publish(struct ws_loop *l, size_t n_conns);

/* ---- conn.c: connection life cycle ------------------------------------------- */
ws_conn *ws_conn_new(ws_server *s);
/* Frees a new connection whose accept failed. */
void ws_conn_discard_new(ws_conn *c);
/* Starts reading a new connection. */
void ws_conn_start(ws_conn *c);
/* The peer closed or the read failed. */
void ws_conn_on_eof(ws_conn *c);
/* Closes the TCP handle now; cch_conn_disconnected runs from its close callback. */
void ws_conn_kill(ws_conn *c);
/* Everything is said: flush, shut down writing, drain until EOF (or close_timeout). */
void ws_conn_linger(ws_conn *c);
/* Starts the close handshake with code/reason (server-initiated). Returns 0 or
 * CCH_ECLOSED. */
int ws_conn_close(ws_conn *c, int code, const char *reason);
/* Fails the connection: sends close `code` and lingers (no wait for the client's). */
void ws_conn_fail(ws_conn *c, int code, const char *reason);
/* The read callback's work for c's state. */
void ws_conn_on_data(ws_conn *c, const char *data, size_t len);
/* After the handshake: 101 queued, state open. */
void ws_conn_opened(ws_conn *c);
/* The output queue has drained: send the next file chunk, or shut down writing. */
void ws_conn_drained(ws_conn *c);
/* The prepare phase: feed bytes that followed the request head. */
void ws_conn_pending_input(ws_conn *c);
/* The transport given to cch_conn_open. */
extern const cch_transport ws_transport;

/* ---- http.c: the request head and the handshake ------------------------------ */
/* Feeds bytes of the request head (state WS_HTTP). */
void ws_http_feed(ws_conn *c, const char *data, size_t len);
void ws_http_free(ws_conn *c);
/* The server's request states: set up (server start), freed (teardown). */
void ws_http_init_pool(ws_server *s);
void ws_http_free_pool(ws_server *s);
/* Queues a complete HTTP error answer (Connection: close) and lingers. */
void ws_http_error(ws_conn *c, int status, const char *extra_headers);
/* The transport's accept (queues 101) and reject. */
int ws_http_accept(ws_conn *c, const char *subprotocol);
int ws_http_reject(ws_conn *c, int status);
/* Frees the request when nothing needs it any more. */
void ws_http_release(ws_conn *c);
/* The file being sent: set it, get it (false when none), end it. */
void ws_http_set_file(ws_conn *c, int fd, uint64_t size);
bool ws_http_file_next(ws_conn *c, int *fd, uint64_t **left);
void ws_http_file_done(ws_conn *c);
/* The reason phrase of an HTTP status ("Not Found"). */
const char *ws_http_reason(int status);
/* Sec-WebSocket-Accept for `key` (len bytes) into out[29]. Returns 0 or CCH_EINVAL (a
 * key over 92 bytes). */
int ws_accept_key(const char *key, size_t len, char out[29]);
/* Whether `key` is a valid Sec-WebSocket-Key: base64 of exactly 16 bytes. */
bool ws_key_valid(const char *key, size_t len);
/* Whether a comma-separated header value holds `token` (case-insensitive). */
bool ws_header_has_token(const char *value, size_t len, const char *token);

/* ---- static.c: files from static_dir ------------------------------------------ */
/* Answers a plain GET/HEAD for the raw request path (not decoded). */
void ws_static_serve(ws_conn *c, const char *raw_path);
/* Queues the next chunk of a file being sent, when the queue has drained. */
void ws_static_continue(ws_conn *c);
/* The Content-Type for a file name. Static string. */
const char *ws_content_type(const char *path);
/* Decodes and checks a request path: writes the relative file path (no leading
 * '/', "" for the root) into out. Returns 0, CCH_EINVAL (bad escape, NUL, '..',
 * backslash) or CCH_ETOOBIG. */
int ws_static_sanitize(const char *raw, char *out, size_t cap);

/* ---- input.c: client frames (wslay) ------------------------------------------- */
/* Parses bytes from an open/closing connection. */
void ws_input_feed(ws_conn *c, const uint8_t *data, size_t len);
/* Drops the parser (a connection that ends). */
void ws_input_free(ws_conn *c);
/* Frees the spare parser (server teardown). */
void ws_input_free_spare(ws_server *s);

/* ---- output.c: the output queue, framing, writev ----------------------------- */
/* The frame header for a payload of len bytes with opcode into hdr[10]; returns its
 * length (2, 4 or 10). */
size_t ws_frame_header(uint8_t *hdr, int opcode, uint64_t len);
/* Queues a data frame (copied). Returns 0, CCH_ECLOSED, CCH_ELIMIT, CCH_ENOMEM. */
int ws_out_send(ws_conn *c, const void *data, size_t len, bool binary);
/* Queues message m's body as a shared text frame. Same returns. */
int ws_out_send_body(ws_conn *c, const cch_msg *m);
/* Queues raw bytes (control frames, HTTP) copied, outside the outbound limit.
 * Returns 0 or CCH_ENOMEM. */
int ws_out_raw(ws_conn *c, const void *data, size_t len);
/* Queues a heap buffer from ws_out_buf_new, taking it over. */
int ws_out_buf_push(ws_conn *c, void *buf, size_t len);
/* A heap buffer for ws_out_buf_push with room for len bytes (its data pointer in
 * *data), or NULL. */
void *ws_out_buf_new(size_t len, uint8_t **data);
/* Queues a control frame (opcode 8, 9, 10) with a payload of at most 125 bytes. */
int ws_out_control(ws_conn *c, int opcode, const void *payload, size_t len);
/* Drops what is queued and not yet being written (keeps the write in flight). */
void ws_out_discard(ws_conn *c);
/* Writes what is queued (one writev), called from the prepare phase. */
void ws_out_flush(ws_conn *c);
/* Bytes waiting (queued and in flight). */
size_t ws_out_pending(const ws_conn *c);
/* Whether a write is in flight. */
bool ws_out_writing(const ws_conn *c);
/* Frees the queue of a dead connection (after libuv cancelled its write). */
void ws_out_free(ws_conn *c);
/* Frees the pools (server teardown). */
void ws_out_free_pools(ws_server *s);
/* Sets up the pools (server start). */
void ws_out_init_pools(ws_server *s);
/* Gives back the pooled queue parts that were not needed since the last call (all
 * that are not in use when `all`, and then the current frame arena too); timer.c
 * calls it about once a second while there are any, and with `all` once the layer
 * has gone quiet. Returns true when the pools still hold parts not in use. */
bool ws_out_trim_pools(ws_server *s, bool all);

/* ---- flow.c: pausing reads while the layer is congested ---------------------- */
#define WS_FLOW_PAUSE_MAX_MS 100
/* The layer is congested, c about to be read (libuv's allocation callback): whether
 * to hold c (an open connection) instead: then the callback gives no buffer and the
 * read callback's UV_ENOBUFS calls ws_flow_pause. */
bool ws_flow_hold(ws_conn *c);
/* Stops reading c until the layer calms down, WS_FLOW_PAUSE_MAX_MS at most. */
void ws_flow_pause(ws_conn *c);
/* The prepare phase, with connections paused or a pause run out: resumes them when
 * the layer is calm. */
void ws_flow_check(ws_server *s);
/* Restarts reading every paused connection (`timed_out`: the pause ran out, the
 * layer still congested: no more pauses until it is seen calm). */
void ws_flow_resume(ws_server *s, bool timed_out);
/* A paused connection dies: off the list. */
void ws_flow_forget(ws_conn *c);
/* Frees the list (server teardown). */
void ws_flow_free(ws_server *s);

/* ---- timer.c: deadlines --------------------------------------------------------- */
/* A deadline is ticks of WS_TICK_MS after the server's tick_epoch, in 30 bits
 * (WS_TICK_NEVER: none); the epoch moves on every WS_REBASE_TICKS ticks (24.8 days),
 * so the longest timeout (UINT32_MAX - 1 ms) still fits. */
#define WS_TICK_MS 8u
#define WS_TICK_NEVER ((1u << 30) - 1)
#define WS_REBASE_TICKS (1u << 28)
/* Starts the clock of the deadlines (server start). */
void ws_timer_init(ws_server *s);
/* c's deadline in uv_now time (UINT64_MAX: none). */
uint64_t ws_timer_deadline(const ws_conn *c);
/* Moves the deadlines' epoch on when `now` is 99 days past it (the timer does it). */
void ws_timer_rebase(ws_server *s, uint64_t now);
/* Moves c to the end of list `which` with deadline now + ms (CCH_WS_NO_TIMEOUT:
 * never). WS_TL_NONE removes it from its list. */
void ws_timer_set(ws_conn *c, int which, uint32_t ms);
/* Re-arms the server's timer for the earliest deadline. */
void ws_timer_rearm(ws_server *s);
/* Asks for ws_server_idle_poll WS_IDLE_POLL_MS from now (the layer just delivered). */
void ws_timer_want_idle_poll(ws_server *s);
/* Asks for a trim of the output pools in about a second (no-op when one is due). */
void ws_timer_want_trim(ws_server *s);
/* The timer callback's work for one expired connection. */
void ws_timer_expired(ws_conn *c);

#endif
