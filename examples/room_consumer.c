/* examples/room_consumer.c - the room consumer: a text message goes to the whole room.
 *
 * Used by the adapter's test servers (tests/ws_echo_server.c, tests/ws_loops_server.c)
 * and the WebSocket fuzz targets (fuzz/ws_harness.c). */
#include "room_consumer.h"

#include <stdio.h>

int room_connect(cch_conn *c)
{
    room_state *st = cch_state(c);
    snprintf(st->group, sizeof st->group, "room_%s", cch_param(c, "room"));
    int rc = cch_group_add(c, st->group);
    if (rc < 0)
        return rc;
    return cch_accept(c, NULL);
}

void room_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    room_state *st = cch_state(c);
    if (binary)
        return;
    cch_msg *m = cch_msg_new("room.message", data, len);
    if (!m) {
        cch_close(c, 1003, "not a JSON object");
        return;
    }
    cch_group_send(c, st->group, m);
    cch_msg_unref(m);
}

static void room_message(cch_conn *c, const cch_msg *m)
{
    (void)cch_send_body(c, m);
}

const cch_handler room_handlers[] = {{"room.message", room_message}, {NULL, NULL}};

const cch_consumer_class room_consumer = {
    .state_size = sizeof(room_state),
    .connect = room_connect,
    .receive = room_receive,
    .handlers = room_handlers,
};
