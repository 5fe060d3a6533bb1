/* tests/ws_consumers.c - the reject and subprotocol consumers (see ws_consumers.h). */
#include "ws_consumers.h"

#include <string.h>

#include <cchannels/scope.h>

static int reject_connect(cch_conn *c)
{
    return cch_reject(c, 403);
}

const cch_consumer_class reject_consumer = {.connect = reject_connect};

static int proto_connect(cch_conn *c)
{
    static const char *const known[] = {"chat", "superchat"};
    for (size_t i = 0; i < 2; i++)
        if (cch_scope_offers_subprotocol(cch_conn_scope(c), known[i]))
            return cch_accept(c, known[i]);
    return cch_accept(c, NULL);
}

static void proto_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    (void)data, (void)len, (void)binary;
    const char *p = cch_scope_subprotocol(cch_conn_scope(c));
    cch_send_text(c, p ? p : "", p ? strlen(p) : 0);
}

const cch_consumer_class proto_consumer = {.connect = proto_connect, .receive = proto_receive};
