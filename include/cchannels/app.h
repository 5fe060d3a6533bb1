/* cchannels/app.h - the app: routes, middleware, dispatch, and the host interface.
 *
 * An app holds the URL routes (pattern -> consumer class), the middleware chain and
 * the channel layer, and owns the connections opened on it. It owns no socket and
 * no loop: a host (cchannels/ws.h, the testing communicator in cchannels/testing.h,
 * or your own server) opens connections with a request and transport callbacks,
 * feeds them what the client sends, tells them when the client is gone, and calls
 * cch_app_dispatch() when the app's wakeup callback says layer messages are pending.
 *
 * Threads: an app and its connections belong to one thread (the host's loop). Only
 * the layer may be shared between apps on several threads. */
#ifndef CCHANNELS_APP_H
#define CCHANNELS_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer.h"
#include "error.h"
#include "layer.h"
#include "scope.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_app cch_app;

/* Creates an app on `layer`, taking over the caller's reference to it (call
 * cch_layer_ref first to share one layer between apps). Returns NULL on CCH_ENOMEM
 * or when layer is NULL; the layer reference is dropped in both cases. */
cch_app *cch_app_new(cch_layer *layer);

/* Frees the app. Every connection must have ended (cch_conn_disconnected) first:
 * otherwise returns CCH_ESTATE and frees nothing. Returns 0 on success. */
int cch_app_free(cch_app *app);

/* The app's layer (borrowed). */
cch_layer *cch_app_layer(cch_app *app);

/* Sets the log sink (NULL: silent). */
void cch_app_set_log(cch_app *app, cch_log_fn fn, void *ud);

/* Sets the wakeup callback: called (from any thread) when layer messages for this
 * app's connections are pending; the host then calls cch_app_dispatch on the app's
 * thread. Set it before opening connections; NULL clears it. Once this returns, the
 * previous callback is neither running nor called again, so the host may free what
 * its `ud` pointed to. The callback runs under an internal lock: it must only
 * schedule work and never call cch_app_set_wakeup. */
void cch_app_set_wakeup(cch_app *app, cch_wakeup_fn fn, void *ud);

/* Adds a route: connections whose path matches `pattern` get consumer `cls`
 * (borrowed: it must outlive the app; usually static) with `class_ud` available from
 * cch_class_data(). Routes are tried in the order added; the first match wins; no
 * match rejects the handshake with HTTP 404.
 *
 * Pattern syntax: an absolute path with literal parts and parameters "{name}" or
 * "{name:converter}"; converters: str (default: one segment, no '/'), int (digits),
 * slug ([A-Za-z0-9_-]+), path (the rest, '/' included). A parameter must span a whole
 * segment or the end of one ("/ws/{room}/", "/u/id-{id:int}"). Examples:
 * "/ws/chat/{room}/", "/ws/user/{id:int}/". The query string is not matched.
 *
 * Returns 0, CCH_EINVAL (NULL argument), CCH_EPATTERN (malformed: not starting with
 * '/', unbalanced or empty braces, unknown converter, invalid or repeated parameter
 * name, two adjacent parameters, more than 16 parameters or 1024 bytes; the reason is
 * logged), CCH_ENOMEM. */
int cch_app_route(cch_app *app, const char *pattern, const cch_consumer_class *cls,
                  void *class_ud);

/* Middleware: runs for every connection before routing and connect, in the order
 * added. `process` may read and change the scope (cchannels/scope.h) and returns 0
 * to continue, an HTTP status 400..599 to reject the handshake with it, or a negative
 * code (rejects with 500). `destroy(ud)` (may be NULL) runs when the app is freed.
 * Built-in middleware is in cchannels/middleware.h. */
typedef struct cch_middleware {
    const char *name;                          /* for logs */
    int (*process)(cch_scope *s, void *ud);
    void (*destroy)(void *ud);
} cch_middleware;

/* Appends middleware (borrowed; usually static) with its user data. Returns 0,
 * CCH_EINVAL, CCH_ENOMEM (then destroy(ud) is not called: ud is still yours). */
int cch_app_use(cch_app *app, const cch_middleware *mw, void *ud);

/* Delivers up to `max` pending layer messages (0: no limit) to their connections'
 * handlers. Returns the number taken from the layer (handlers run or built-ins
 * applied; unknown types and messages dropped for closing connections included), or
 * a negative code (CCH_EINVAL; CCH_ESTATE when called from inside a handler it is
 * running). Call it when the wakeup callback fires, until it returns less than
 * `max`. */
int cch_app_dispatch(cch_app *app, size_t max);

/* Counters, cumulative. */
typedef struct cch_app_stats {
    uint64_t connections_opened;     /* cch_conn_open calls that made a connection */
    uint64_t connections_accepted;
    uint64_t connections_rejected;   /* 403/404/500... before the handshake */
    uint64_t connections_active;     /* opened and not yet disconnected */
    uint64_t messages_received;      /* client messages fed to receive */
    uint64_t messages_dispatched;    /* layer messages delivered to connections */
    uint64_t unknown_type;           /* dropped: no handler for the type */
    uint64_t dropped_closed;         /* dropped: the connection was closing */
    uint64_t handler_errors;         /* built-in handlers given a bad body */
} cch_app_stats;
void cch_app_stats_get(cch_app *app, cch_app_stats *out);

/* ---- The host interface ------------------------------------------------------ */

/* One request header; name and value need not be NUL-terminated. */
typedef struct cch_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} cch_header;

/* The WebSocket upgrade request, borrowed by cch_conn_open for its duration. */
typedef struct cch_request {
    const char *path;              /* NUL-terminated, without the query string */
    const char *query;             /* NUL-terminated raw query after '?', or NULL */
    const cch_header *headers;
    size_t n_headers;
    const char *client_host;       /* NULL when unknown */
    int client_port;
} cch_request;

/* What the connection asks of the host. `tctx` is the host's pointer given to
 * cch_conn_open. Every callback returns 0 or a negative code (CCH_ETRANSPORT,
 * CCH_ELIMIT when an outbound buffer is full...) that is passed back to the
 * consumer's call. Callbacks must not call cch_conn_disconnected synchronously:
 * the host ends connections from its own loop. */
typedef struct cch_transport {
    /* Complete the handshake (HTTP 101) with `subprotocol` (NULL: none). */
    int (*accept)(void *tctx, const char *subprotocol);
    /* Refuse the handshake with an HTTP status; then close. */
    int (*reject)(void *tctx, int http_status);
    /* Send one whole message. */
    int (*send)(void *tctx, const void *data, size_t len, bool binary);
    /* Optional: send message m's body as text. `m` is shared by every member of a
     * group_send, so a transport may build the frame once and keep it as an
     * attachment (cch_msg_attach). When NULL, send() gets the body. */
    int (*send_body)(void *tctx, const cch_msg *m);
    /* Start the close handshake with `code` and `reason` (NUL-terminated). The host
     * calls cch_conn_disconnected once the transport is gone. */
    int (*close)(void *tctx, int code, const char *reason);
} cch_transport;

/* Opens a connection for `req`: runs the middleware, routes the path, creates the
 * channel and the state, and calls the consumer's connect. `tp` is borrowed (must
 * outlive the connection); `tctx` is passed to its callbacks.
 *
 * Returns 0 and sets *out when a connection was made: it may already have been
 * accepted (tp->accept called), rejected (tp->reject called: 404 no route, a
 * middleware status, 403 from the consumer), or be undecided. In every case the host
 * later calls cch_conn_disconnected(*out, code) exactly once, when its transport is
 * gone. Returns a negative code (CCH_EINVAL, CCH_ENOMEM, a layer error) when no
 * connection was made; then no callback was called and the host answers 500. */
int cch_conn_open(cch_app *app, const cch_request *req, const cch_transport *tp, void *tctx,
                  cch_conn **out);

/* Feeds one complete message from the client to the consumer's receive. Ignored
 * (CCH_ESTATE) unless the connection is accepted and not closing. */
int cch_conn_receive(cch_conn *c, const void *data, size_t len, bool binary);

/* The transport is gone (close handshake done, peer vanished, or a rejected handshake
 * answered): runs disconnect (if connect ran), leaves the connection's groups,
 * releases its channel, and frees the connection. `c` is invalid afterwards. */
void cch_conn_disconnected(cch_conn *c, int code);

/* The host's context pointer given to cch_conn_open. */
void *cch_conn_transport_ctx(cch_conn *c);

/* The app a connection belongs to. */
cch_app *cch_conn_app(cch_conn *c);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
