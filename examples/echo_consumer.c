/* examples/echo_consumer.c - the echo consumer: every message goes back as it came.
 *
 * Used by the example server (examples/chat/main.c) at /ws/echo/ and by the
 * adapter's test server (tests/ws_echo_server.c). */
#include "echo_consumer.h"

static void echo_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    /* A send can only fail when the connection is closing or the client stopped
     * reading (the adapter then closes it with 1008): nothing to do here. */
    if (binary)
        (void)cch_send_binary(c, data, len);
    else
        (void)cch_send_text(c, data, len);
}

const cch_consumer_class echo_consumer = {
    .connect = NULL, /* accept with no subprotocol */
    .receive = echo_receive,
};
