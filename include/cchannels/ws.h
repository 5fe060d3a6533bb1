/* cchannels/ws.h - the WebSocket server: an app on a real socket (optional part).
 *
 * A libuv server that turns an app (cchannels/app.h) into a WebSocket server:
 * it listens on a TCP host and port (IPv4 or IPv6), parses each HTTP/1.1 request
 * head, completes the WebSocket handshake (RFC 6455) for the app's routes, serves
 * plain GET and HEAD requests from a static directory, and drives the app: client
 * messages go to the consumers, layer messages are dispatched when the layer wakes
 * the loop, and everything a connection sends during one loop iteration goes out in
 * one write.
 *
 *     cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
 *     cch_app_route(app, "/ws/chat/{room}/", &chat, NULL);
 *     int rc = cch_ws_run(app, &(cch_ws_options){ .host = "127.0.0.1", .port = 8000 });
 *     cch_app_free(app);
 *
 * Three ways to run it:
 *   - cch_ws_run() owns a loop, runs until SIGINT or SIGTERM, shuts down gracefully
 *     (every client gets close 1001) and returns 0;
 *   - cch_ws_run_loops() does the same with several loops, one thread each (one per
 *     core), one app per loop over one shared layer;
 *   - cch_ws_server_start() adds a server to the host's own uv_loop_t; the host runs
 *     the loop and ends the server with cch_ws_server_stop().
 *
 * Limits. Every limit has a named default and an option; hitting one gives an HTTP
 * status or a close code and is counted in cch_ws_stats:
 *   request head larger than max_header_bytes        -> HTTP 431
 *   more than max_connections open TCP connections    -> HTTP 503
 *   a message larger than max_message_bytes           -> close 1009
 *   more than max_outbound_bytes waiting for a client -> close 1008 (a client that
 *                                                        stopped reading)
 *   no complete request head within handshake_timeout -> HTTP 408, then closed
 *   no byte from an open client within idle_timeout   -> a ping; still nothing after
 *                                                        another idle_timeout -> 1001
 *   no answer to our close frame within close_timeout -> the TCP connection is dropped
 *
 * Handshake answers: 101 on success; 400 for a malformed request or a missing or
 * malformed Sec-WebSocket-Key; 426 (with "Sec-WebSocket-Version: 13") for another
 * protocol version; 404 when no route matches; 403 (or the status they chose) when
 * middleware or the consumer rejects; 405 for methods other than GET and HEAD; 500
 * when the connection could not be made.
 *
 * Protocol errors in what a client sends (parsed by wslay) close the connection with
 * 1002 (reserved bits, unknown opcodes, unmasked frames, bad fragmentation, invalid
 * close codes, control frames longer than 125 bytes) or 1007 (invalid UTF-8 in a text
 * message or a close reason, also when split across fragments).
 *
 * Flow control: before each read of an open connection the server asks the layer
 * whether it is congested (cch_layer_congested: a receiver, say another loop of
 * cch_ws_run_loops, has fallen behind) and if so stops reading that connection until
 * the layer calms down, at most 100 ms (counted in reads_paused and pause_timeouts;
 * after a pause that ran out, no more pauses until the layer is seen calm). So
 * clients that send faster than the members of their groups are served wait in TCP
 * instead of having their messages skipped for full channels.
 *
 * Threads: a server and its app belong to the thread that runs the loop. Only the
 * layer's wakeup (uv_async_send) crosses threads (and, with cch_ws_run_loops, the
 * hand-off of accepted sockets). */
#ifndef CCHANNELS_WS_H
#define CCHANNELS_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* libuv's loop type (uv_loop_t), declared here so this header does not need <uv.h>. */
struct uv_loop_s;

typedef struct cch_ws_server cch_ws_server;

/* Defaults of cch_ws_options; a zero (or NULL) field takes its default. */
#define CCH_WS_DEFAULT_HOST "127.0.0.1"
#define CCH_WS_DEFAULT_PORT 8000
#define CCH_WS_DEFAULT_BACKLOG 511
#define CCH_WS_DEFAULT_MAX_HEADER_BYTES 8192u              /* 8 KiB */
#define CCH_WS_DEFAULT_MAX_MESSAGE_BYTES (1024u * 1024u)    /* 1 MiB */
#define CCH_WS_DEFAULT_MAX_CONNECTIONS 10000u
#define CCH_WS_DEFAULT_MAX_OUTBOUND_BYTES (1024u * 1024u)   /* 1 MiB per connection */
#define CCH_WS_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define CCH_WS_DEFAULT_IDLE_TIMEOUT_MS 60000u
#define CCH_WS_DEFAULT_CLOSE_TIMEOUT_MS 5000u
#define CCH_WS_DEFAULT_DISPATCH_BATCH 262144u

/* `port` value asking the system for any free port (read it with
 * cch_ws_server_port()). */
#define CCH_WS_ANY_PORT (-1)
/* A timeout value that disables the timeout. */
#define CCH_WS_NO_TIMEOUT UINT32_MAX
/* `loops` value asking cch_ws_run_loops for one loop per online CPU. */
#define CCH_WS_LOOPS_PER_CPU (-1)
/* Most loops cch_ws_run_loops runs. */
#define CCH_WS_MAX_LOOPS 64

/* Called once the server listens (before any connection), e.g. to print the port. */
typedef void (*cch_ws_ready_fn)(cch_ws_server *s, void *ud);

/* Server options; zero-initialise and set what you need. The strings are copied by
 * cch_ws_server_start() / cch_ws_run(). */
typedef struct cch_ws_options {
    const char *host;            /* address to listen on: "127.0.0.1", "::1", "0.0.0.0",
                                    "::" (IPv6 and, where the system allows, IPv4);
                                    default CCH_WS_DEFAULT_HOST */
    int port;                    /* 1..65535; 0: CCH_WS_DEFAULT_PORT; CCH_WS_ANY_PORT */
    const char *static_dir;      /* files served to plain GET/HEAD requests; NULL: none
                                    (such requests get 404) */
    int backlog;                 /* listen(2) backlog; default 511 */
    size_t max_header_bytes;     /* request head limit (431 beyond) */
    size_t max_message_bytes;    /* client message limit (1009 beyond); at most 1 GiB */
    size_t max_connections;      /* open TCP connections (503 beyond) */
    size_t max_outbound_bytes;   /* bytes waiting for one client (1008 beyond; a
                                    message queued alone always fits) */
    uint32_t handshake_timeout_ms; /* complete request head (and decision) within */
    uint32_t idle_timeout_ms;    /* ping after this much silence; CCH_WS_NO_TIMEOUT: never */
    uint32_t close_timeout_ms;   /* wait this long for the close handshake / lingering */
    size_t dispatch_batch;       /* most layer messages dispatched per loop iteration
                                    (in chunks, each written out before the next);
                                    the default delivers everything pending, so that
                                    no member's channel falls behind the others */
    cch_log_fn log;              /* log sink (NULL: silent); one line per connection
                                    event at CCH_LOG_INFO, details at CCH_LOG_DEBUG */
    void *log_ud;
    int log_level;               /* lines up to this level are logged; 0: errors only */
    cch_ws_ready_fn ready;       /* optional: called once listening */
    void *ready_ud;
    int loops;                   /* event loops (threads) of cch_ws_run_loops: 0 or 1:
                                    one; CCH_WS_LOOPS_PER_CPU; at most CCH_WS_MAX_LOOPS.
                                    cch_ws_run and cch_ws_server_start run one loop:
                                    any other value is CCH_EINVAL there */
} cch_ws_options;

/* Counters, cumulative unless marked "now". */
typedef struct cch_ws_stats {
    uint64_t tcp_accepted;        /* TCP connections accepted */
    uint64_t tcp_active;          /* TCP connections open now (every state) */
    uint64_t ws_active;           /* WebSocket connections open now (101 sent) */
    uint64_t handshakes;          /* 101 answers */
    uint64_t http_errors;         /* 4xx/5xx answers (including those below) */
    uint64_t rejected_busy;       /* 503: max_connections reached */
    uint64_t rejected_header_size;/* 431: max_header_bytes exceeded */
    uint64_t handshake_timeouts;  /* 408: no complete request head in time */
    uint64_t static_served;       /* 200 answers from static_dir */
    uint64_t messages_in;         /* client messages delivered to consumers */
    uint64_t messages_out;        /* text/binary messages queued for clients */
    uint64_t bytes_in;            /* bytes read from sockets */
    uint64_t bytes_out;           /* bytes written to sockets */
    uint64_t writes;              /* write calls (each a writev of everything queued) */
    uint64_t frames_built;        /* shared frames built for a message body */
    uint64_t frames_shared;       /* sends that reused an already built shared frame */
    uint64_t closed_slow;         /* 1008: outbound buffer full (client not reading) */
    uint64_t closed_too_big;      /* 1009: message larger than max_message_bytes */
    uint64_t closed_protocol;     /* 1002 / 1007 */
    uint64_t pings_sent;          /* idle pings */
    uint64_t idle_closed;         /* closed because the client stayed silent */
    uint64_t close_timeouts;      /* dropped: no close handshake or EOF in time */
    uint64_t input_contexts;      /* wslay parsers live now (unfinished frames) */
    uint64_t outbound_bytes;      /* bytes queued for clients now */
    uint64_t reads_paused;        /* reads stopped while the layer was congested */
    uint64_t pause_timeouts;      /* pauses ended by their bound (100 ms), not by the layer */
} cch_ws_stats;

/* Starts a server for `app` on the host's `loop`: binds and listens (the address
 * comes from opts->host and opts->port), and sets the app's wakeup callback to wake
 * `loop`. `opts` may be NULL (all defaults) and is copied. The app and the loop are
 * borrowed: both must outlive the server; one server per app. As for any libuv
 * server, the host must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): a client that
 * resets the connection while we write would otherwise end the process.
 *
 * Returns 0 and sets *out (the server belongs to the loop; end it with
 * cch_ws_server_stop), or CCH_EINVAL (NULL out/app/loop, a bad option such as an
 * unparsable host or a port out of range, a static_dir that is not a directory),
 * CCH_EIO (bind or listen failed: the reason is logged), CCH_ENOMEM. On failure
 * *out is NULL and nothing is left on the loop (in the one case where libuv refuses
 * an already listening socket, the server's handles are left closing: running the
 * loop frees them). */
int cch_ws_server_start(cch_ws_server **out, cch_app *app, struct uv_loop_s *loop,
                        const cch_ws_options *opts);

/* The port the server listens on (useful with CCH_WS_ANY_PORT), or CCH_EINVAL. */
int cch_ws_server_port(const cch_ws_server *s);

/* Copies the server's counters into *out. */
void cch_ws_server_stats(const cch_ws_server *s, cch_ws_stats *out);

/* Called once a stopped server is gone (all its handles closed, memory freed). */
typedef void (*cch_ws_stopped_fn)(void *ud);

/* Stops the server gracefully: stops listening, sends close 1001 to every open
 * WebSocket client, drops connections still in their handshake, waits for the close
 * handshakes (at most close_timeout), then closes its handles, clears the app's
 * wakeup, frees the server and calls done(ud) (done may be NULL). The host must keep
 * running the loop until then; every connection has called cch_conn_disconnected by
 * the time done runs, so the app may then be freed. Calling it again while stopping
 * drops the remaining connections at once.
 * Returns 0 or CCH_EINVAL (s NULL). `s` must not be used after `done` runs. */
int cch_ws_server_stop(cch_ws_server *s, cch_ws_stopped_fn done, void *ud);

/* Runs `app` as a WebSocket server on a loop of its own until SIGINT or SIGTERM,
 * then stops it gracefully (see cch_ws_server_stop; a second signal drops the
 * remaining connections). SIGPIPE is ignored while it runs. The app is borrowed and
 * not freed (free it after this returns). `opts` may be NULL.
 * Returns 0 after a signal-driven shutdown, or the error of cch_ws_server_start
 * (CCH_EINVAL, CCH_EIO, CCH_ENOMEM). */
int cch_ws_run(cch_app *app, const cch_ws_options *opts);

/* Builds the app of one loop for cch_ws_run_loops: adds its routes and middleware,
 * sets its log... `loop_index` is 0 .. loops-1 (pass it on as class data if the
 * consumers need to know their loop). Returns 0, or a negative code that makes
 * cch_ws_run_loops give up and return it. */
typedef int (*cch_ws_setup_fn)(cch_app *app, int loop_index, void *ud);

/* Runs a WebSocket server on opts->loops event loops, each on a thread of its own
 * (loop 0 on the calling thread), until SIGINT or SIGTERM, over ONE shared layer:
 *
 *   - for every loop it makes an app on `layer` (cch_app_new(cch_layer_ref(layer)))
 *     and calls setup(app, index, ud) for it, on the calling thread, in order, before
 *     any loop runs; every app should get the same routes and middleware;
 *   - it listens on one socket (opts->host, opts->port); loop 0 accepts every
 *     connection and hands it to the loop holding the fewest connections (ties go
 *     round-robin), where the connection then lives and dies;
 *   - a group_send from any loop reaches the members on every loop (they are all in
 *     the one layer), and so do channel sends;
 *   - the first signal stops every loop gracefully (close 1001 to every client, as
 *     cch_ws_server_stop), a second one drops the remaining connections; when every
 *     loop is done the apps are freed and it returns 0.
 *
 * The options apply to every loop, except max_connections, which counts the
 * connections of all loops together, and `ready`, which is called once, on the
 * calling thread, with loop 0's server once every loop's server exists (its port is
 * the shared one; do not keep the server: it belongs to loop 0's thread). Log sinks
 * (opts->log, cch_app_set_log, the layer's) are called from every loop's thread.
 * Anything the apps share (class data, middleware user data, globals) is used from
 * several threads at once and must be thread-safe; so must the layer (every layer of
 * cchannels is).
 *
 * With 0 or 1 loop it is cch_ws_run on one app made the same way. `layer` is
 * borrowed: the caller keeps its reference (drop it after this returns); the apps
 * hold their own and are freed here. SIGPIPE is ignored while it runs.
 *
 * Returns 0 after a signal-driven shutdown; CCH_EINVAL (NULL layer or setup, loops
 * out of range, a bad option), CCH_EIO (bind or listen failed, or a thread could not
 * be started: then every loop is stopped before a client is accepted), CCH_ENOMEM,
 * or setup's negative code. In every case nothing is left running and the apps are
 * freed. */
int cch_ws_run_loops(const cch_ws_options *opts, cch_layer *layer, cch_ws_setup_fn setup,
                     void *ud);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
