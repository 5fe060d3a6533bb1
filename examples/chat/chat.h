/* chat.h - the bundled example chat's consumer: the Django Channels tutorial chat
 * plus direct messages, join/leave notices, the member list and a room close.
 *
 * Protocol (what the browser sends to ws://HOST:PORT/ws/chat/ROOM/?name=NAME):
 *   {"message": "hi"}                      to everyone in the room
 *   {"message": "hi", "users": ["bob"]}    a direct message to bob (and the sender)
 *   {"command": "close"}                   close the room (its creator only)
 * What every member gets back is the tutorial's {"message": "...", ...}:
 *   {"message": "hi", "user": "alice"}
 *   {"message": "hi", "user": "alice", "users": ["bob"]}        a direct message
 *   {"message": "bob joined", "event": "join", "user": "bob",
 *    "owner": "alice", "members": ["alice", "bob"], "count": 2}  (also "leave")
 * and, to one connection only:
 *   {"message": "You joined lobby as bob", "event": "hello", "user": "bob", "room": "lobby"}
 *   {"error": "..."}                       the client sent something invalid
 * A room close closes every member's socket with code 4000, reason "room closed".
 * A name that is not 1..32 of [A-Za-z0-9_.-] is accepted then closed with 4001
 * ("invalid name"), so that a browser can show why; no name gives "guest-N".
 *
 * Every group message is of type "chat_message" with a "message" field (except the
 * close, "websocket.close"), so a Django ChatConsumer on a shared layer understands
 * them. */
#ifndef CHAT_EXAMPLE_H
#define CHAT_EXAMPLE_H

#include <stdbool.h>

#include <cchannels/cchannels.h>

#define CHAT_NAME_MAX 32          /* longest user name */
#define CHAT_ROOM_MAX 64          /* longest room name */
#define CHAT_MESSAGE_MAX 4096     /* longest message text, bytes */
#define CHAT_DM_MAX 16            /* most recipients of one direct message */
#define CHAT_MEMBERS_IN_EVENT 32  /* most names listed in a join/leave event */

#define CHAT_CLOSE_ROOM 4000      /* close code: the room was closed */
#define CHAT_CLOSE_BAD_NAME 4001  /* close code: the user name is invalid */
#define CHAT_CLOSE_BAD_ROOM 4002  /* close code: the room name is invalid */

/* The per-process chat state: the room registry (who is in which room, who created
 * it) and the log sink. Pass it as the class data of the chat route:
 *     cch_app_route(app, "/ws/chat/{room}/", &chat_consumer, server);
 * One chat_server may serve the apps of several loops at once (cch_ws_run_loops): it
 * is thread-safe, and the log sink is then called from every loop's thread. Free it
 * after the app(s). */
typedef struct chat_server chat_server;

/* Creates the chat state; `log` (may be NULL) gets one line per connection event.
 * Returns NULL when out of memory. */
chat_server *chat_server_new(cch_log_fn log, void *log_ud);
void chat_server_free(chat_server *s);

/* The chat consumer class. */
extern const cch_consumer_class chat_consumer;

/* Whether `name` is a valid user name (1..CHAT_NAME_MAX of [A-Za-z0-9_.-]). */
bool chat_valid_name(const char *name);

/* Whether `room` is a valid room name (1..CHAT_ROOM_MAX of [A-Za-z0-9_-]). */
bool chat_valid_room(const char *room);

#endif
