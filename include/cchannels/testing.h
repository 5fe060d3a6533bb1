/* cchannels/testing.h - the communicator: unit-test consumers without sockets.
 *
 * The counterpart of Django Channels' WebsocketCommunicator. A communicator is an
 * in-process host for one connection of an app: it opens the connection with a path
 * and headers, feeds it client messages, collects every message the consumer sends
 * back, and records the handshake outcome and the close code. Layer messages are
 * delivered by cch_app_dispatch, which cch_communicator_receive calls for you.
 *
 *     cch_communicator *t = cch_communicator_new(app, "/ws/chat/lobby/?token=a", NULL, 0);
 *     assert(cch_communicator_connect(t) == 0);
 *     cch_communicator_send_text(t, "{\"message\":\"hi\"}", 16);
 *     const char *data; size_t len; bool binary;
 *     assert(cch_communicator_receive(t, &data, &len, &binary) == 0);
 *     cch_communicator_free(t);     // disconnects with 1000 if still open
 *
 * Single-threaded, like the app it drives. */
#ifndef CCHANNELS_TESTING_H
#define CCHANNELS_TESTING_H

#include <stdbool.h>
#include <stddef.h>

#include "app.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_communicator cch_communicator;

/* Creates a communicator for a connection to `path` (it may carry "?query") with
 * the given headers (copied; may be NULL when n is 0), from client 127.0.0.1:50000.
 * Nothing happens until cch_communicator_connect. Returns NULL on CCH_EINVAL or
 * CCH_ENOMEM. */
cch_communicator *cch_communicator_new(cch_app *app, const char *path,
                                       const cch_header *headers, size_t n_headers);

/* Offers subprotocols (as Sec-WebSocket-Protocol would), before connect. `list` is
 * comma-separated ("chat, superchat"), copied. Returns 0, CCH_ESTATE, CCH_ENOMEM. */
int cch_communicator_offer_subprotocols(cch_communicator *t, const char *list);

/* Opens the connection. Returns 0 when the consumer accepted, CCH_EREJECTED when
 * the handshake was refused (see cch_communicator_status), CCH_EAGAIN when connect
 * left it undecided (call again after deciding: it then reports the decision),
 * CCH_ESTATE when already connected, or the error of cch_conn_open. */
int cch_communicator_connect(cch_communicator *t);

/* The handshake's HTTP status: 101 accepted, the rejection status otherwise, 0 while
 * undecided. */
int cch_communicator_status(cch_communicator *t);

/* The subprotocol the consumer chose, or NULL. Owned by the communicator. */
const char *cch_communicator_subprotocol(cch_communicator *t);

/* Sends a client message to the consumer. Returns 0, or CCH_ESTATE / CCH_ECLOSED
 * when the connection is not open. */
int cch_communicator_send_text(cch_communicator *t, const char *text, size_t len);
int cch_communicator_send_binary(cch_communicator *t, const void *data, size_t len);

/* Dispatches pending layer messages, then takes the oldest message the consumer
 * sent to this client. On 0, *data (NUL-terminated for convenience), *len and
 * *binary describe it; the data stays valid until the next call on `t`.
 * Returns CCH_EAGAIN when nothing was sent (receive_nothing), CCH_ECLOSED when
 * nothing is left and the consumer closed the connection. */
int cch_communicator_receive(cch_communicator *t, const char **data, size_t *len,
                             bool *binary);

/* Dispatches pending layer messages; returns the close code the consumer closed
 * with, or 0 while it has not. A close completes the connection: the consumer's
 * disconnect has run by the time this returns a code. */
int cch_communicator_close_code(cch_communicator *t);

/* The close reason the consumer gave (NULL while not closed). Owned by t. */
const char *cch_communicator_close_reason(cch_communicator *t);

/* The client goes away with `code` (as a close frame would say; 1006 for a vanished
 * peer): runs the consumer's disconnect. Returns 0 or CCH_ESTATE (not connected or
 * already disconnected). */
int cch_communicator_disconnect(cch_communicator *t, int code);

/* The connection (NULL before connect and after disconnect), to reach its state. */
cch_conn *cch_communicator_conn(cch_communicator *t);

/* Disconnects with 1000 if still connected, and frees. NULL is ignored. */
void cch_communicator_free(cch_communicator *t);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
