/* examples/room_consumer.h - a room: every text message goes to everyone in it.
 *
 * Mount it on a route with a {room} parameter (cch_app_route(app, "/ws/room/{room}/",
 * &room_consumer, NULL)): a connection joins group "room_<room>" and is accepted;
 * each text message (it must be a JSON object, else the connection closes with 1003)
 * goes to the whole group as a "room.message", whose body every member receives as
 * text. Binary messages are ignored.
 *
 * The parts are exported for consumers that vary it (tests/ws_loops_server.c,
 * fuzz/ws_harness.c): a class with state_size sizeof(room_state), room_connect and
 * room_handlers behaves as this one does, with its own receive. */
#ifndef CCH_EXAMPLE_ROOM_CONSUMER_H
#define CCH_EXAMPLE_ROOM_CONSUMER_H

#include <cchannels/consumer.h>
#include <cchannels/layer.h>

/* The connection's state: the name of its room's group. */
typedef struct room_state {
    char group[CCH_NAME_BUF];
} room_state;

extern const cch_consumer_class room_consumer;

/* Joins "room_<room>" and accepts. Returns 0 or a negative CCH_E* code. */
int room_connect(cch_conn *c);

/* Sends a text message to the room; ignores a binary one. */
void room_receive(cch_conn *c, const char *data, size_t len, bool binary);

/* {"room.message": the body goes to the client}, ended by {NULL, NULL}. */
extern const cch_handler room_handlers[];

#endif
