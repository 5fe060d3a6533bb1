/* cchannels/consumer.h - consumers: what a connection does, and what it can do.
 *
 * A consumer class is a struct of callbacks (connect, receive, disconnect) plus a
 * table of handlers keyed by message type: the C form of a Django Channels consumer.
 * When a message reaches a connection's channel (a group_send to one of its groups,
 * or a send to its channel name), the handler for the message's type runs *with that
 * connection*, so it sees that connection's own scope and state.
 *
 * Handler lookup treats '.' and '_' alike ("chat.message" runs the "chat_message"
 * handler). The class's table is searched first, then the built-in types:
 *   websocket.send  - sends the body's "text" field as a text message (a body
 *                     without a string "text" is logged and counted as an error);
 *   websocket.close - closes the connection with the body's "code" (default 1000)
 *                     and "reason" (default "").
 * Then the class's default_handler, if any. Otherwise the type is unknown: the app
 * logs it, counts it (cch_app_stats.unknown_type) and drops the message.
 *
 * Every function here must be called on the thread that owns the connection's app,
 * usually from inside one of the connection's callbacks. */
#ifndef CCHANNELS_CONSUMER_H
#define CCHANNELS_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>

#include "layer.h"
#include "msg.h"
#include "scope.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_conn cch_conn;

/* Runs for a message of this type arriving on the connection's channel. `m` is
 * borrowed for the call; take a reference (cch_msg_ref) to keep it. */
typedef void (*cch_handler_fn)(cch_conn *c, const cch_msg *m);

typedef struct cch_handler {
    const char *type;       /* message type; NULL ends a table */
    cch_handler_fn fn;
} cch_handler;

typedef struct cch_consumer_class {
    /* Bytes of per-connection state, zero-filled, from cch_state(). May be 0. */
    size_t state_size;

    /* The client asks to connect; routing and middleware have run. Decide with
     * cch_accept(), cch_reject() or cch_close(), or leave it undecided and decide
     * later (for example after asynchronous authentication). Returning a negative
     * code while undecided rejects with HTTP 500. NULL: accept with no subprotocol. */
    int (*connect)(cch_conn *c);

    /* A complete text (binary false; valid UTF-8, not NUL-terminated) or binary
     * message from the client. `data` is borrowed for the call. NULL: ignored. */
    void (*receive)(cch_conn *c, const char *data, size_t len, bool binary);

    /* The connection ended, with the WebSocket close code (1006 when the peer
     * vanished without a close frame). Runs once, for every connection whose connect
     * callback ran. Groups joined with cch_group_add are left after it returns; the
     * state is freed after it returns. NULL: nothing to do. */
    void (*disconnect)(cch_conn *c, int code);

    /* Handlers by message type, ended by {NULL, NULL}. May be NULL. */
    const cch_handler *handlers;

    /* Runs for a type found neither in `handlers` nor among the built-ins. */
    cch_handler_fn default_handler;
} cch_consumer_class;

/* The connection's state (state_size bytes, zero-filled at open), or NULL when the
 * class has none. */
void *cch_state(cch_conn *c);

/* The connection's scope: request, route parameters, user (cchannels/scope.h). */
cch_scope *cch_conn_scope(cch_conn *c);

/* Shortcuts: cch_scope_param(cch_conn_scope(c), name) and the user id. */
const char *cch_param(cch_conn *c, const char *name);
int64_t cch_user_id(cch_conn *c);

/* The class's user data given to cch_app_route(). */
void *cch_class_data(cch_conn *c);

/* The connection's channel name ("specific.xxxx!yyyy"), owned by the connection. */
const char *cch_channel_name(cch_conn *c);

/* The layer the connection's app uses (borrowed). */
cch_layer *cch_conn_layer(cch_conn *c);

/* Completes the handshake, choosing `subprotocol` (NULL: none; otherwise it must be
 * one the client offered). Only before the connection is decided.
 * Returns 0, CCH_ESTATE (already accepted, rejected or closed), CCH_EINVAL
 * (subprotocol not offered), CCH_ENOMEM, CCH_ETRANSPORT. */
int cch_accept(cch_conn *c, const char *subprotocol);

/* Refuses the handshake with an HTTP status (403 when `http_status` is 0; must be
 * 400..599). Only before the connection is decided. Returns 0, CCH_ESTATE,
 * CCH_EINVAL. */
int cch_reject(cch_conn *c, int http_status);

/* Sends a text (must be valid UTF-8; not checked here, the adapter checks) or binary
 * message to this connection's client. The data is copied or written before return.
 * Returns 0, CCH_ESTATE (not accepted yet), CCH_ECLOSED (closing or closed),
 * CCH_ETRANSPORT, or a transport's limit error (CCH_ELIMIT). */
int cch_send_text(cch_conn *c, const char *text, size_t len);
int cch_send_binary(cch_conn *c, const void *data, size_t len);

/* Sends the message's body as a text message. The transport receives the shared
 * message itself, so it may frame the body once for every recipient of a
 * group_send. Same returns as cch_send_text. */
int cch_send_body(cch_conn *c, const cch_msg *m);

/* Closes the connection with a close code (1000 when 0) and a reason (NULL: "";
 * at most 123 bytes). Before accept, this rejects the handshake with 403, as
 * Channels does. The disconnect callback runs once the transport is gone.
 * Returns 0, CCH_ECLOSED (already closing), CCH_EINVAL (bad code or reason). */
int cch_close(cch_conn *c, int code, const char *reason);

/* Whether the connection has been accepted and is not closing. */
bool cch_is_open(cch_conn *c);

/* Joins / leaves a group. The connection remembers its groups and leaves them all
 * when it ends. Returns 0, CCH_ENAME, CCH_EINVAL, CCH_ENOMEM, or the layer's error
 * (add: CCH_ESTATE on a connection rejected before routing, which has no channel).
 * Discarding a group the connection is not in returns 0. */
int cch_group_add(cch_conn *c, const char *group);
int cch_group_discard(cch_conn *c, const char *group);

/* Sends `m` to every member of `group` (this connection included, if a member), or
 * to every member but this connection (like Phoenix's broadcast_from). The caller
 * keeps its reference. For the per-member counts use cch_layer_group_send.
 * Returns 0 or the layer's error (CCH_ENAME, CCH_EINVAL, CCH_ENOMEM). */
int cch_group_send(cch_conn *c, const char *group, const cch_msg *m);
int cch_group_send_others(cch_conn *c, const char *group, const cch_msg *m);

/* Sends `m` to the channel called `channel` (cch_layer_send). The caller keeps its
 * reference. Returns 0, CCH_ENAME, CCH_EINVAL, CCH_ECHANFULL, CCH_ENOMEM. */
int cch_channel_send(cch_conn *c, const char *channel, const cch_msg *m);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
