/* rooms.h - the chat example's room registry: who is in which room, in join order,
 * and who may close it. Per process (each process of a multi-process deployment
 * knows its own connections only), shared by the apps of all its loops. Not
 * thread-safe by itself: chat.c makes every call under its chat_server's mutex. */
#ifndef CHAT_ROOMS_H
#define CHAT_ROOMS_H

#include <stdbool.h>
#include <stddef.h>

#include "chat.h"

typedef struct chat_room chat_room;
typedef struct chat_rooms chat_rooms;

/* One connection in a room. Lives in the connection's state; the registry only
 * links it into its room's list. */
typedef struct chat_member {
    char name[CHAT_NAME_MAX + 1];
    chat_room *room;                    /* NULL while not in a room */
    struct chat_member *prev, *next;    /* the room's members, oldest first */
} chat_member;

chat_rooms *chat_rooms_new(void);
/* Frees the registry and any room left in it (members are not touched). */
void chat_rooms_free(chat_rooms *rs);

/* Adds `m` to room `room` (created when it does not exist); the first member of a
 * new room becomes its owner. Returns 0, or -1 when out of memory. */
int chat_rooms_join(chat_rooms *rs, const char *room, chat_member *m);

/* Removes `m` from its room. If it owned the room, the oldest remaining member
 * becomes the owner; an empty room is freed. Nothing happens when `m` is in no room. */
void chat_rooms_leave(chat_rooms *rs, chat_member *m);

/* Takes a room out of the registry because it is being closed: its members stay
 * in it until they leave (the last one frees it), and the next connection to the
 * same name starts a new room. */
void chat_rooms_close(chat_rooms *rs, chat_room *r);

const char *chat_room_name(const chat_room *r);
bool chat_room_closing(const chat_room *r);
const chat_member *chat_room_owner(const chat_room *r);
const chat_member *chat_room_first(const chat_room *r);   /* oldest member */
size_t chat_room_count(const chat_room *r);               /* connections */

#endif
