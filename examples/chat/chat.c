/* chat.c - the bundled example chat's consumer: the Django Channels tutorial chat,
 * plus join/leave notices with the member list, direct messages and a room close.
 * The protocol is described in chat.h. Nothing here knows about sockets.
 *
 * Threads: one chat_server may serve the apps of several loops (the server's
 * --threads), so a room's members can live on different threads. The room registry
 * and the guest counter are under the chat_server's mutex; so is every join, leave
 * and close together with the group message that announces it, so that every member
 * sees the notices in the order the registry changed and each notice's member list
 * is the registry's at that moment. Chat messages themselves take no lock. */
#include "chat.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cchannels/json.h>

#include "rooms.h"

struct chat_server {
    pthread_mutex_t lock;       /* the registry, guests, and the notices they cause */
    chat_rooms *rooms;
    unsigned long guests;       /* last generated "guest-N" */
    cch_log_fn log;
    void *log_ud;
};

/* Per-connection state: kept small, an idle connection costs it. The group name,
 * "chat_<room>" as in the tutorial, is made from the room's name when needed. */
typedef struct chat_conn {
    chat_member member;         /* the user's name and room, linked into the registry */
} chat_conn;

/* The tutorial's group name for room `room` into buf (CCH_NAME_BUF bytes). */
static const char *group_name(const char *room, char *buf)
{
    snprintf(buf, CCH_NAME_BUF, "chat_%s", room);
    return buf;
}

chat_server *chat_server_new(cch_log_fn log, void *log_ud)
{
    chat_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rooms = chat_rooms_new();
    if (!s->rooms || pthread_mutex_init(&s->lock, NULL) != 0) {
        chat_rooms_free(s->rooms);
        free(s);
        return NULL;
    }
    s->log = log;
    s->log_ud = log_ud;
    return s;
}

void chat_server_free(chat_server *s)
{
    if (!s)
        return;
    chat_rooms_free(s->rooms);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static bool valid_chars(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || strchr(extra, *p)))
            return false;
    return true;
}

bool chat_valid_name(const char *name)
{
    return name && valid_chars(name, CHAT_NAME_MAX, "_.-");
}

bool chat_valid_room(const char *room)
{
    return room && valid_chars(room, CHAT_ROOM_MAX, "_-");
}

__attribute__((format(printf, 3, 4)))
static void chat_log(cch_conn *c, int level, const char *fmt, ...)
{
    chat_server *s = cch_class_data(c);
    if (!s->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->log(s->log_ud, level, line);
}

/* Client-supplied text for a log line: printable ASCII only, so that a hostile
 * room name cannot forge log lines. */
static const char *printable(const char *in, char *buf, size_t cap)
{
    size_t i = 0;
    for (; in && in[i] && i + 1 < cap; i++)
        buf[i] = (in[i] > 0x20 && in[i] < 0x7f) ? in[i] : '?';
    buf[i] = '\0';
    return buf;
}

/* Whether JSON value `v` is the string `name`. */
static bool names(const json_t *v, const char *name)
{
    const char *s = json_string_value(v);
    return s && !strcmp(s, name);
}

/* Sends `body` (consumed) as a message of `type` to room r's group. */
/* Sends m (made with status rc: 0, or why it could not be made) to room r's group,
 * or to the others in it, logs a failure, and releases m. */
static void room_send(cch_conn *c, const chat_room *r, int rc, cch_msg *m, bool others)
{
    char group[CCH_NAME_BUF];
    group_name(chat_room_name(r), group);
    if (rc == 0) {
        rc = others ? cch_group_send_others(c, group, m) : cch_group_send(c, group, m);
        cch_msg_unref(m);
    }
    if (rc < 0)
        chat_log(c, CCH_LOG_WARN, "chat group_send to %s failed: %s", group, cch_strerror(rc));
}

/* room_send of a JSON body (which it takes: NULL means out of memory). */
static void group_send(cch_conn *c, const chat_room *r, const char *type, json_t *body,
                       bool others)
{
    cch_msg *m = NULL;
    int rc = body ? cch_msg_from_json(&m, type, body) : CCH_ENOMEM;
    json_decref(body);
    room_send(c, r, rc, m, others);
}

static void reply_error(cch_conn *c, const char *error)
{
    json_t *body = json_pack("{s:s}", "error", error);
    if (body)
        cch_send_json(c, body);
    json_decref(body);
}

/* A join or leave notice for `r`, which `who` has just joined or left, carrying the
 * room's owner and (the first CHAT_MEMBERS_IN_EVENT distinct) member names. Called
 * with the chat_server's lock held (it reads other connections' members). */
static void send_presence(cch_conn *c, const chat_room *r, const char *who, bool join)
{
    json_t *members = json_array();
    for (const chat_member *m = chat_room_first(r);
         m && members && json_array_size(members) < CHAT_MEMBERS_IN_EVENT; m = m->next) {
        size_t i;
        json_t *v;
        bool listed = false;
        json_array_foreach(members, i, v) listed = listed || names(v, m->name);
        if (!listed)
            json_array_append_new(members, json_string(m->name));
    }
    const chat_member *owner = chat_room_owner(r);
    json_t *body = json_pack("{s:s+, s:s, s:s, s:s, s:o*, s:I}",
                             "message", who, join ? " joined" : " left",
                             "event", join ? "join" : "leave", "user", who,
                             "owner", owner ? owner->name : "", "members", members,
                             "count", (json_int_t)chat_room_count(r));
    group_send(c, r, "chat_message", body, !join);
}

static int chat_connect(cch_conn *c)
{
    chat_server *s = cch_class_data(c);
    chat_conn *st = cch_state(c);
    const cch_scope *sc = cch_conn_scope(c);
    const char *room = cch_param(c, "room");
    char name[CHAT_NAME_MAX + 2], pr[CHAT_ROOM_MAX + 1], pn[CHAT_NAME_MAX + 1];
    int n = cch_scope_query(sc, "name", name, sizeof name);

    printable(room, pr, sizeof pr);
    chat_log(c, CCH_LOG_INFO, "chat connect room=%s user=%s client=%s:%d", pr,
             n > 0 ? printable(name, pn, sizeof pn) : "-", cch_scope_client_host(sc),
             cch_scope_client_port(sc));
    if (n == CCH_ENOTFOUND || n == 0) {
        pthread_mutex_lock(&s->lock);
        unsigned long guest = ++s->guests;
        pthread_mutex_unlock(&s->lock);
        snprintf(st->member.name, sizeof st->member.name, "guest-%lu", guest);
    } else if (n < 0 || !chat_valid_name(name)) {
        /* Accept, then close with a reason: a browser sees the reason, not a 403. */
        chat_log(c, CCH_LOG_INFO, "chat refuse room=%s: invalid name", pr);
        cch_accept(c, NULL);
        return cch_close(c, CHAT_CLOSE_BAD_NAME, "invalid name");
    } else {
        memcpy(st->member.name, name, (size_t)n + 1);       /* valid: n <= CHAT_NAME_MAX */
    }
    if (!chat_valid_room(room)) {
        chat_log(c, CCH_LOG_INFO, "chat refuse room=%s: invalid room name", pr);
        cch_accept(c, NULL);
        return cch_close(c, CHAT_CLOSE_BAD_ROOM, "invalid room name");
    }

    char group[CCH_NAME_BUF];
    int rc = cch_group_add(c, group_name(room, group));
    if (rc == 0)
        rc = cch_accept(c, NULL);
    if (rc < 0)
        return rc;                              /* undecided: rejected with 500 */
    chat_log(c, CCH_LOG_INFO, "chat accept room=%s user=%s channel=%s", room,
             st->member.name, cch_channel_name(c));
    pthread_mutex_lock(&s->lock);
    if (chat_rooms_join(s->rooms, room, &st->member) < 0) {
        pthread_mutex_unlock(&s->lock);
        return cch_close(c, 1011, "out of memory");
    }
    json_t *hello = json_pack("{s:s+++, s:s, s:s, s:s}",
                              "message", "You joined ", room, " as ", st->member.name,
                              "event", "hello", "user", st->member.name, "room", room);
    if (hello)
        cch_send_json(c, hello);
    json_decref(hello);
    send_presence(c, st->member.room, st->member.name, true);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* {"message": "...", "users": [...]?}: a chat message, or a direct message. */
static void on_message(cch_conn *c, json_t *in)
{
    chat_conn *st = cch_state(c);
    json_t *text = json_object_get(in, "message");
    json_t *users = json_object_get(in, "users");
    if (!json_is_string(text)) {
        reply_error(c, "expected {\"message\": \"...\"} or {\"command\": \"close\"}");
        return;
    }
    if (json_string_length(text) > CHAT_MESSAGE_MAX) {
        reply_error(c, "message too long");
        return;
    }
    if (json_is_null(users))
        users = NULL;
    bool users_ok = json_is_array(users) && json_array_size(users) >= 1 &&
                    json_array_size(users) <= CHAT_DM_MAX;
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) users_ok = users_ok && chat_valid_name(json_string_value(u));
    if (users && !users_ok) {
        reply_error(c, "\"users\" must be a list of 1 to 16 user names");
        return;
    }
    json_t *out = json_pack("{s:O, s:s, s:O*}", "message", text, "user", st->member.name,
                            "users", users);
    group_send(c, st->member.room, "chat_message", out, false);
}

/* {"command": "close"}: the room's creator closes the room for everyone. */
static void on_command(cch_conn *c, json_t *cmd)
{
    chat_server *s = cch_class_data(c);
    chat_conn *st = cch_state(c);
    chat_room *r = st->member.room;
    if (!json_is_string(cmd) || strcmp(json_string_value(cmd), "close") != 0) {
        reply_error(c, "unknown command");
        return;
    }
    pthread_mutex_lock(&s->lock);
    if (chat_room_owner(r) != &st->member) {
        pthread_mutex_unlock(&s->lock);
        reply_error(c, "only the room's creator can close it");
        return;
    }
    chat_log(c, CCH_LOG_INFO, "chat close room=%s by user=%s members=%zu", chat_room_name(r),
             st->member.name, chat_room_count(r));
    chat_rooms_close(s->rooms, r);
    group_send(c, r, "chat_message",
               json_pack("{s:s+, s:s, s:s}", "message", st->member.name, " closed the room",
                         "event", "close", "user", st->member.name), false);
    group_send(c, r, "websocket.close",
               json_pack("{s:i, s:s}", "code", CHAT_CLOSE_ROOM, "reason", "room closed"), false);
    pthread_mutex_unlock(&s->lock);
}

/* The common case, {"message": "..."} and nothing else that matters, without a JSON
 * library: the message's raw string literal is copied into the group message as it
 * came (the user name needs no escaping: chat_valid_name), so a room message costs a
 * scan of the text instead of a parse, a pack and a dump. Returns false when the text
 * needs the full path below (a command, a direct message, an error to report). */
static bool send_plain_message(cch_conn *c, const char *data, size_t len)
{
    chat_conn *st = cch_state(c);
    const char *text, *other;
    size_t text_len, other_len;
    /* the raw literal is at least as long as the decoded bytes: short enough stays so */
    if (cch_json_field_raw(data, len, "message", &text, &text_len) != 0 || text[0] != '"' ||
        text_len - 2 > CHAT_MESSAGE_MAX ||
        cch_json_field_raw(data, len, "command", &other, &other_len) != CCH_ENOTFOUND)
        return false;
    int rc = cch_json_field_raw(data, len, "users", &other, &other_len);
    if (rc != CCH_ENOTFOUND && !(rc == 0 && other_len == 4 && !memcmp(other, "null", 4)))
        return false;
    static const char head[] = "{\"message\":", mid[] = ",\"user\":\"", tail[] = "\"}";
    size_t name_len = strlen(st->member.name);
    char buf[sizeof head + CHAT_MESSAGE_MAX + 2 + sizeof mid + CHAT_NAME_MAX + sizeof tail];
    size_t n = 0;
    memcpy(buf + n, head, sizeof head - 1), n += sizeof head - 1;
    memcpy(buf + n, text, text_len), n += text_len;
    memcpy(buf + n, mid, sizeof mid - 1), n += sizeof mid - 1;
    memcpy(buf + n, st->member.name, name_len), n += name_len;
    memcpy(buf + n, tail, sizeof tail - 1), n += sizeof tail - 1;
    cch_msg *m = NULL;
    int made = cch_msg_create(&m, "chat_message", buf, n);
    room_send(c, st->member.room, made, m, false);
    return true;
}

static void chat_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    chat_conn *st = cch_state(c);
    if (!st->member.room)
        return;
    if (binary) {
        reply_error(c, "binary messages are not supported");
        return;
    }
    if (send_plain_message(c, data, len))
        return;
    json_t *in = cch_json_parse(data, len);
    if (!json_is_object(in))
        reply_error(c, "invalid JSON: expected an object");
    else if (json_object_get(in, "command"))
        on_command(c, json_object_get(in, "command"));
    else
        on_message(c, in);
    json_decref(in);
}

/* Whether a chat_message reaches this connection: everything but a direct message,
 * which only its recipients and its sender get. (jansson's getters take non-const
 * pointers but do not modify.) */
static bool for_me(const chat_conn *st, const json_t *body)
{
    json_t *users = json_object_get((json_t *)body, "users");
    if (!json_is_array(users) || names(json_object_get((json_t *)body, "user"), st->member.name))
        return true;
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) if (names(u, st->member.name)) return true;
    return false;
}

/* Whether m is a direct message (its "users" is an array): found once per message,
 * without parsing it (cch_msg_field_raw), and kept on the message, so that a room
 * message costs each member one attachment lookup, not a JSON lookup. */
static char dm_key, dm_yes, dm_no;

static bool is_direct(const cch_msg *m)
{
    const void *known = cch_msg_attachment(m, &dm_key);
    if (known)
        return known == &dm_yes;
    const char *raw;
    size_t len;
    bool dm = cch_msg_field_raw(m, "users", &raw, &len) == 0 && len > 0 && raw[0] == '[';
    cch_msg_attach(m, &dm_key, dm ? &dm_yes : &dm_no, NULL); /* no memory: found again */
    return dm;
}

static void chat_message(cch_conn *c, const cch_msg *m)
{
    if (is_direct(m)) {
        const json_t *body = cch_msg_json(m);   /* parsed once for all members */
        if (!body || !for_me(cch_state(c), body))
            return;
    }
    cch_send_body(c, m);                        /* framed once for all members */
}

static void chat_disconnect(cch_conn *c, int code)
{
    chat_server *s = cch_class_data(c);
    chat_conn *st = cch_state(c);
    chat_room *r = st->member.room;    /* only this connection's thread changes it */
    if (!r) {
        chat_log(c, CCH_LOG_INFO, "chat disconnect room=- user=%s code=%d",
                 st->member.name[0] ? st->member.name : "-", code);
        return;
    }
    pthread_mutex_lock(&s->lock);
    chat_log(c, CCH_LOG_INFO, "chat disconnect room=%s user=%s code=%d", chat_room_name(r),
             st->member.name, code);
    bool notify = !chat_room_closing(r) && chat_room_count(r) > 1;
    chat_rooms_leave(s->rooms, &st->member);
    if (notify)                                 /* r lives on: someone is still in it */
        send_presence(c, r, st->member.name, false);
    pthread_mutex_unlock(&s->lock);
}

const cch_consumer_class chat_consumer = {
    .state_size = sizeof(chat_conn),
    .connect = chat_connect,
    .receive = chat_receive,
    .disconnect = chat_disconnect,
    .handlers = (const cch_handler[]){ {"chat_message", chat_message}, {NULL, NULL} },
};
