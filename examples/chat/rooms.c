/* rooms.c - the chat example's room registry (see rooms.h): a hash table of rooms
 * by name, each with its members in join order and its owner. */
#include "rooms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

struct chat_room {
    char name[CHAT_ROOM_MAX + 1];
    chat_member *members;       /* utlist doubly-linked list, oldest first */
    chat_member *owner;
    size_t count;
    bool closing;               /* taken out of the registry by chat_rooms_close */
    UT_hash_handle hh;
};

struct chat_rooms {
    chat_room *by_name;
};

chat_rooms *chat_rooms_new(void)
{
    return calloc(1, sizeof(chat_rooms));
}

void chat_rooms_free(chat_rooms *rs)
{
    if (!rs)
        return;
    chat_room *r, *tmp;
    HASH_ITER(hh, rs->by_name, r, tmp) {
        HASH_DEL(rs->by_name, r);
        free(r);
    }
    free(rs);
}

int chat_rooms_join(chat_rooms *rs, const char *room, chat_member *m)
{
    chat_room *r = NULL;
    HASH_FIND_STR(rs->by_name, room, r);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        snprintf(r->name, sizeof r->name, "%s", room);
        HASH_ADD_STR(rs->by_name, name, r);
    }
    DL_APPEND(r->members, m);
    m->room = r;
    r->count++;
    if (!r->owner)
        r->owner = m;
    return 0;
}

void chat_rooms_leave(chat_rooms *rs, chat_member *m)
{
    chat_room *r = m->room;
    if (!r)
        return;
    DL_DELETE(r->members, m);
    m->room = NULL;
    m->prev = m->next = NULL;
    r->count--;
    if (r->owner == m)
        r->owner = r->members;        /* the oldest remaining member, or NULL */
    if (r->count == 0) {
        if (!r->closing)
            HASH_DEL(rs->by_name, r);
        free(r);
    }
}

void chat_rooms_close(chat_rooms *rs, chat_room *r)
{
    if (r->closing)
        return;
    HASH_DEL(rs->by_name, r);
    r->closing = true;
}

const char *chat_room_name(const chat_room *r) { return r->name; }
bool chat_room_closing(const chat_room *r) { return r->closing; }
const chat_member *chat_room_owner(const chat_room *r) { return r->owner; }
const chat_member *chat_room_first(const chat_room *r) { return r->members; }
size_t chat_room_count(const chat_room *r) { return r->count; }
