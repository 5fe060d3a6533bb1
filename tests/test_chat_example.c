/* test_chat_example.c - the bundled example chat's consumer (examples/chat/chat.c),
 * driven through the testing communicator: join/leave notices and member lists,
 * messages to everyone, direct messages, the room close, bad input and names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include <cchannels/cchannels.h>
#include <cchannels/json.h>

#include "chat.h"

/* ---- fixture --------------------------------------------------------------- */

#define MAX_LINES 64

typedef struct fixture {
    cch_app *app;
    chat_server *server;
    char *lines[MAX_LINES];     /* chat log lines, in order */
    size_t n_lines;
} fixture;

static void capture_log(void *ud, int level, const char *msg)
{
    fixture *f = ud;
    (void)level;
    if (f->n_lines < MAX_LINES)
        f->lines[f->n_lines++] = strdup(msg);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(f->app);
    f->server = chat_server_new(capture_log, f);
    assert_non_null(f->server);
    assert_int_equal(cch_app_route(f->app, "/ws/chat/{room}/", &chat_consumer, f->server), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(cch_app_free(f->app), 0);
    chat_server_free(f->server);
    for (size_t i = 0; i < f->n_lines; i++)
        free(f->lines[i]);
    free(f);
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

static cch_communicator *open_comm(fixture *f, const char *path)
{
    cch_communicator *t = cch_communicator_new(f->app, path, NULL, 0);
    assert_non_null(t);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_int_equal(cch_communicator_status(t), 101);
    return t;
}

/* The next message sent to `t`, parsed. */
static json_t *next_json(cch_communicator *t)
{
    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(t, &data, &len, &binary), 0);
    assert_false(binary);
    json_error_t err;
    json_t *v = json_loadb(data, len, 0, &err);
    if (!v)
        fail_msg("not JSON: %.*s", (int)len, data);
    return v;
}

/* Asserts that the next message sent to `t` equals the JSON text `expected`. */
static void expect_json(cch_communicator *t, const char *expected)
{
    json_t *want = json_loads(expected, 0, NULL);
    assert_non_null(want);
    json_t *got = next_json(t);
    if (!json_equal(got, want)) {
        char *s = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
        fail_msg("got %s\nwant %s", s, expected);
    }
    json_decref(got);
    json_decref(want);
}

/* Asserts that the next message is {"error": ...} and returns nothing else. */
static void expect_error(cch_communicator *t, const char *contains)
{
    json_t *got = next_json(t);
    const char *e = json_string_value(json_object_get(got, "error"));
    assert_non_null(e);
    assert_non_null(strstr(e, contains));
    assert_int_equal(json_object_size(got), 1);
    json_decref(got);
}

static void expect_nothing(cch_communicator *t)
{
    const char *data;
    size_t len;
    bool binary;
    int rc = cch_communicator_receive(t, &data, &len, &binary);
    if (rc == 0)
        fail_msg("unexpected message: %.*s", (int)len, data);
    assert_int_equal(rc, CCH_EAGAIN);
}

static void send_text(cch_communicator *t, const char *text)
{
    assert_int_equal(cch_communicator_send_text(t, text, strlen(text)), 0);
}

/* Joins `room` as `name`, checks the hello, and consumes the own join notice. */
static cch_communicator *join(fixture *f, const char *room, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "/ws/chat/%s/?name=%s", room, name);
    cch_communicator *t = open_comm(f, path);
    json_t *hello = next_json(t);
    assert_string_equal(json_string_value(json_object_get(hello, "event")), "hello");
    assert_string_equal(json_string_value(json_object_get(hello, "user")), name);
    assert_string_equal(json_string_value(json_object_get(hello, "room")), room);
    json_decref(hello);
    json_t *own = next_json(t);
    assert_string_equal(json_string_value(json_object_get(own, "event")), "join");
    assert_string_equal(json_string_value(json_object_get(own, "user")), name);
    json_decref(own);
    return t;
}

static bool logged(fixture *f, const char *needle)
{
    for (size_t i = 0; i < f->n_lines; i++)
        if (strstr(f->lines[i], needle))
            return true;
    return false;
}

/* ---- joining and leaving --------------------------------------------------- */

static void test_join_and_leave_notices(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = open_comm(f, "/ws/chat/lobby/?name=alice");
    expect_json(alice, "{\"message\":\"You joined lobby as alice\",\"event\":\"hello\","
                       "\"user\":\"alice\",\"room\":\"lobby\"}");
    expect_json(alice, "{\"message\":\"alice joined\",\"event\":\"join\",\"user\":\"alice\","
                       "\"owner\":\"alice\",\"members\":[\"alice\"],\"count\":1}");
    expect_nothing(alice);

    cch_communicator *bob = open_comm(f, "/ws/chat/lobby/?name=bob");
    const char *bob_joined = "{\"message\":\"bob joined\",\"event\":\"join\",\"user\":\"bob\","
                             "\"owner\":\"alice\",\"members\":[\"alice\",\"bob\"],\"count\":2}";
    expect_json(bob, "{\"message\":\"You joined lobby as bob\",\"event\":\"hello\","
                     "\"user\":\"bob\",\"room\":\"lobby\"}");
    expect_json(bob, bob_joined);
    expect_json(alice, bob_joined);

    /* Someone in another room hears nothing of the lobby. */
    cch_communicator *carol = join(f, "kitchen", "carol");
    expect_nothing(alice);
    expect_nothing(bob);

    assert_int_equal(cch_communicator_disconnect(bob, 1001), 0);
    expect_json(alice, "{\"message\":\"bob left\",\"event\":\"leave\",\"user\":\"bob\","
                       "\"owner\":\"alice\",\"members\":[\"alice\"],\"count\":1}");
    expect_nothing(alice);
    expect_nothing(carol);

    /* The last one out leaves nobody to tell. */
    assert_int_equal(cch_communicator_disconnect(alice, 1000), 0);
    expect_nothing(carol);
    cch_communicator_free(alice);
    cch_communicator_free(bob);
    cch_communicator_free(carol);
}

static void test_member_list_lists_each_name_once(void **state)
{
    fixture *f = *state;
    cch_communicator *a1 = join(f, "lobby", "alice");
    cch_communicator *a2 = open_comm(f, "/ws/chat/lobby/?name=alice");   /* a second tab */
    json_t *hello = next_json(a2);
    json_decref(hello);
    const char *second = "{\"message\":\"alice joined\",\"event\":\"join\",\"user\":\"alice\","
                         "\"owner\":\"alice\",\"members\":[\"alice\"],\"count\":2}";
    expect_json(a2, second);
    expect_json(a1, second);
    cch_communicator_free(a1);
    expect_json(a2, "{\"message\":\"alice left\",\"event\":\"leave\",\"user\":\"alice\","
                    "\"owner\":\"alice\",\"members\":[\"alice\"],\"count\":1}");
    cch_communicator_free(a2);
}

static void test_member_list_is_capped(void **state)
{
    fixture *f = *state;
    cch_communicator *t[CHAT_MEMBERS_IN_EVENT + 2];
    size_t n = sizeof t / sizeof t[0];
    for (size_t i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%zu", i);
        t[i] = join(f, "big", name);
        for (size_t j = 0; j < i; j++) {
            json_t *ev = next_json(t[j]);
            json_decref(ev);
        }
    }
    cch_communicator *last = open_comm(f, "/ws/chat/big/?name=last");
    json_decref(next_json(last));
    json_t *ev = next_json(last);
    assert_int_equal(json_array_size(json_object_get(ev, "members")), CHAT_MEMBERS_IN_EVENT);
    assert_int_equal(json_integer_value(json_object_get(ev, "count")), (json_int_t)n + 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(ev, "members"), 0)), "u0");
    json_decref(ev);
    cch_communicator_free(last);
    for (size_t i = 0; i < n; i++)
        cch_communicator_free(t[i]);
}

static void test_anonymous_users_get_guest_names(void **state)
{
    fixture *f = *state;
    cch_communicator *g1 = open_comm(f, "/ws/chat/lobby/");
    json_t *hello = next_json(g1);
    assert_string_equal(json_string_value(json_object_get(hello, "user")), "guest-1");
    json_decref(hello);
    cch_communicator *g2 = open_comm(f, "/ws/chat/lobby/?name=");
    hello = next_json(g2);
    assert_string_equal(json_string_value(json_object_get(hello, "user")), "guest-2");
    json_decref(hello);
    cch_communicator_free(g1);
    cch_communicator_free(g2);
}

/* ---- names --------------------------------------------------------------- */

static void test_name_rules(void **state)
{
    (void)state;
    assert_true(chat_valid_name("alice"));
    assert_true(chat_valid_name("A.b_c-9"));
    assert_true(chat_valid_name("x"));
    assert_true(chat_valid_name("abcdefghijklmnopqrstuvwxyz012345"));     /* 32 */
    assert_false(chat_valid_name("abcdefghijklmnopqrstuvwxyz0123456"));   /* 33 */
    assert_false(chat_valid_name(""));
    assert_false(chat_valid_name(NULL));
    assert_false(chat_valid_name("bad name"));
    assert_false(chat_valid_name("<script>"));
    assert_false(chat_valid_name("\xc3\xa9t\xc3\xa9"));
    assert_true(chat_valid_room("lobby"));
    assert_true(chat_valid_room("room_2-b"));
    assert_false(chat_valid_room("a.b"));
    assert_false(chat_valid_room("a b"));
    assert_false(chat_valid_room(""));
    assert_false(chat_valid_room(NULL));
    char room[CHAT_ROOM_MAX + 2];
    memset(room, 'r', sizeof room - 1);
    room[sizeof room - 1] = '\0';
    assert_false(chat_valid_room(room));
    room[CHAT_ROOM_MAX] = '\0';
    assert_true(chat_valid_room(room));
}

static void expect_refused(fixture *f, const char *path, int code, const char *reason)
{
    cch_communicator *t = open_comm(f, path);
    assert_int_equal(cch_communicator_close_code(t), code);
    assert_string_equal(cch_communicator_close_reason(t), reason);
    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(t, &data, &len, &binary), CCH_ECLOSED);
    cch_communicator_free(t);
}

static void test_invalid_names_are_closed_with_a_reason(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    expect_refused(f, "/ws/chat/lobby/?name=bad%20name", CHAT_CLOSE_BAD_NAME, "invalid name");
    expect_refused(f, "/ws/chat/lobby/?name=%3Cb%3E", CHAT_CLOSE_BAD_NAME, "invalid name");
    expect_refused(f, "/ws/chat/lobby/?name=abcdefghijklmnopqrstuvwxyz0123456",
                   CHAT_CLOSE_BAD_NAME, "invalid name");
    expect_refused(f, "/ws/chat/lobby/?name=abcdefghijklmnopqrstuvwxyz0123456789abcdef",
                   CHAT_CLOSE_BAD_NAME, "invalid name");
    expect_refused(f, "/ws/chat/a.b/?name=bob", CHAT_CLOSE_BAD_ROOM, "invalid room name");
    expect_refused(f, "/ws/chat/a%0Ab/?name=bob", CHAT_CLOSE_BAD_ROOM, "invalid room name");
    /* Nobody joined, so the room heard nothing, and the log cannot be forged. */
    expect_nothing(alice);
    for (size_t i = 0; i < f->n_lines; i++)
        assert_null(strchr(f->lines[i], '\n'));
    cch_communicator_free(alice);
}

/* ---- messages ---------------------------------------------------------------- */

static void test_message_reaches_everyone(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));                       /* bob joined */
    cch_communicator *carol = join(f, "lobby", "carol");
    json_decref(next_json(alice));
    json_decref(next_json(bob));

    send_text(alice, "{\"message\":\"hi \\u00e9\\\"\"}");
    const char *want = "{\"message\":\"hi \\u00e9\\\"\",\"user\":\"alice\"}";
    expect_json(alice, want);
    expect_json(bob, want);
    expect_json(carol, want);
    expect_nothing(alice);

    /* Extra fields from the client are not forwarded; an empty message is a message. */
    send_text(bob, "{\"message\":\"\",\"user\":\"mallory\",\"x\":1}");
    want = "{\"message\":\"\",\"user\":\"bob\"}";
    expect_json(alice, want);
    expect_json(bob, want);
    expect_json(carol, want);
    cch_communicator_free(alice);
    cch_communicator_free(bob);
    cch_communicator_free(carol);
}

/* {"message": "\n" x escapes, then plain 'x's} into buf. */
static const char *escaped_message(char *buf, int escapes, int plain)
{
    int n = sprintf(buf, "{\"message\":\"");
    for (int i = 0; i < escapes; i++)
        buf[n++] = '\\', buf[n++] = 'n';
    memset(buf + n, 'x', (size_t)plain);
    strcpy(buf + n + plain, "\"}");
    return buf;
}

/* The chat reads plain messages without jansson (a fast path) and everything else
 * with it: both must agree on every form a client can send. */
static void test_message_forms_agree_with_the_full_parser(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));                       /* bob joined */

    /* Duplicate keys: the last one counts, as with jansson. */
    send_text(alice, "{\"message\":\"first\",\"message\":\"last\"}");
    const char *want = "{\"message\":\"last\",\"user\":\"alice\"}";
    expect_json(alice, want);
    expect_json(bob, want);
    /* Whitespace, escapes and non-ASCII text pass through as JSON-equal strings. */
    send_text(alice, " {\n\"message\" : \"tab\\there \\ud83d\\ude00 \xc3\xa9\" } ");
    want = "{\"message\":\"tab\\there \\ud83d\\ude00 \\u00e9\",\"user\":\"alice\"}";
    expect_json(alice, want);
    expect_json(bob, want);
    /* A command wins over a message in the same object. */
    send_text(alice, "{\"message\":\"x\",\"command\":\"explode\"}");
    expect_error(alice, "unknown command");
    expect_nothing(bob);
    /* "users" that is not null makes it a direct message (or an error). */
    send_text(alice, "{\"message\":\"x\",\"users\":\"bob\"}");
    expect_error(alice, "users");
    expect_nothing(bob);

    /* CHAT_MESSAGE_MAX decoded bytes whose literal is longer (escapes) is not too long;
     * one more byte is. */
    char *big = malloc(CHAT_MESSAGE_MAX * 2 + 32);
    assert_non_null(big);
    send_text(alice, escaped_message(big, 8, CHAT_MESSAGE_MAX - 8));
    json_t *got = next_json(bob);
    assert_int_equal(json_string_length(json_object_get(got, "message")), CHAT_MESSAGE_MAX);
    assert_string_equal(json_string_value(json_object_get(got, "user")), "alice");
    json_decref(got);
    json_decref(next_json(alice));
    send_text(alice, escaped_message(big, 8, CHAT_MESSAGE_MAX - 7));
    expect_error(alice, "too long");
    expect_nothing(bob);
    free(big);
    cch_communicator_free(alice);
    cch_communicator_free(bob);
}

static void test_direct_message_reaches_only_its_users(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));
    cch_communicator *carol = join(f, "lobby", "carol");
    json_decref(next_json(alice));
    json_decref(next_json(bob));

    send_text(alice, "{\"message\":\"psst\",\"users\":[\"bob\"]}");
    const char *want = "{\"message\":\"psst\",\"user\":\"alice\",\"users\":[\"bob\"]}";
    expect_json(bob, want);
    expect_json(alice, want);              /* the sender gets it back, marked by "users" */
    expect_nothing(carol);

    send_text(carol, "{\"message\":\"both\",\"users\":[\"alice\",\"bob\"]}");
    want = "{\"message\":\"both\",\"user\":\"carol\",\"users\":[\"alice\",\"bob\"]}";
    expect_json(alice, want);
    expect_json(bob, want);
    expect_json(carol, want);

    /* To somebody who is not here: only the sender sees it. */
    send_text(bob, "{\"message\":\"anyone?\",\"users\":[\"dave\"]}");
    expect_json(bob, "{\"message\":\"anyone?\",\"user\":\"bob\",\"users\":[\"dave\"]}");
    expect_nothing(alice);
    expect_nothing(carol);

    /* "users": null is a message to everyone. */
    send_text(bob, "{\"message\":\"all\",\"users\":null}");
    want = "{\"message\":\"all\",\"user\":\"bob\"}";
    expect_json(alice, want);
    expect_json(bob, want);
    expect_json(carol, want);
    cch_communicator_free(alice);
    cch_communicator_free(bob);
    cch_communicator_free(carol);
}

static void test_bad_recipient_lists_are_refused(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));
    const char *bad[] = {
        "{\"message\":\"x\",\"users\":\"bob\"}",
        "{\"message\":\"x\",\"users\":[]}",
        "{\"message\":\"x\",\"users\":[1]}",
        "{\"message\":\"x\",\"users\":[\"bob\",\"b o b\"]}",
        "{\"message\":\"x\",\"users\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\","
        "\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        send_text(alice, bad[i]);
        expect_error(alice, "users");
        expect_nothing(bob);
    }
    cch_communicator_free(alice);
    cch_communicator_free(bob);
}

static void test_invalid_input_gets_an_error_reply(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));

    const char *bad_json[] = {"not json", "", "{\"message\":", "[1,2]", "\"hi\"", "42",
                              "{\"message\":\"a\"} trailing"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        send_text(alice, bad_json[i]);
        expect_error(alice, "invalid JSON");
    }
    send_text(alice, "{\"message\":5}");
    expect_error(alice, "expected");
    send_text(alice, "{\"text\":\"hi\"}");
    expect_error(alice, "expected");
    send_text(alice, "{\"command\":\"explode\"}");
    expect_error(alice, "unknown command");
    send_text(alice, "{\"command\":1}");
    expect_error(alice, "unknown command");
    assert_int_equal(cch_communicator_send_binary(alice, "\x00\x01", 2), 0);
    expect_error(alice, "binary");

    static char deep[2 * 200 + 1];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    deep[400] = '\0';
    send_text(alice, deep);
    expect_error(alice, "invalid JSON");

    char *big = malloc(CHAT_MESSAGE_MAX + 32);
    assert_non_null(big);
    send_text(alice, escaped_message(big, 0, CHAT_MESSAGE_MAX + 1));
    expect_error(alice, "too long");
    free(big);

    /* Nothing reached the room, and the connection still works. */
    expect_nothing(bob);
    assert_int_equal(cch_communicator_close_code(alice), 0);
    send_text(alice, "{\"message\":\"still here\"}");
    expect_json(bob, "{\"message\":\"still here\",\"user\":\"alice\"}");
    cch_communicator_free(alice);
    cch_communicator_free(bob);
}

/* A group message from another program on the layer, as the tutorial's Django
 * ChatConsumer sends it, reaches the browsers unchanged. */
static void test_tutorial_messages_pass_through(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_msg *m = cch_msg_new("chat.message", "{\"message\":\"from django\"}", 25);
    assert_non_null(m);
    assert_int_equal(cch_layer_group_send(cch_app_layer(f->app), "chat_lobby", m, NULL, NULL), 0);
    cch_msg_unref(m);
    expect_json(alice, "{\"message\":\"from django\"}");
    cch_communicator_free(alice);
}

/* ---- closing the room -------------------------------------------------------- */

static void test_only_the_creator_can_close_the_room(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));
    cch_communicator *other = join(f, "kitchen", "carol");

    send_text(bob, "{\"command\":\"close\"}");
    expect_error(bob, "creator");
    expect_nothing(alice);
    assert_int_equal(cch_communicator_close_code(alice), 0);
    assert_int_equal(cch_communicator_close_code(bob), 0);

    send_text(alice, "{\"command\":\"close\"}");
    const char *notice = "{\"message\":\"alice closed the room\",\"event\":\"close\","
                         "\"user\":\"alice\"}";
    expect_json(alice, notice);
    expect_json(bob, notice);
    assert_int_equal(cch_communicator_close_code(alice), CHAT_CLOSE_ROOM);
    assert_int_equal(cch_communicator_close_code(bob), CHAT_CLOSE_ROOM);
    assert_string_equal(cch_communicator_close_reason(alice), "room closed");
    assert_string_equal(cch_communicator_close_reason(bob), "room closed");
    /* No leave notices while the room closes; other rooms are untouched. */
    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(alice, &data, &len, &binary), CCH_ECLOSED);
    assert_int_equal(cch_communicator_receive(bob, &data, &len, &binary), CCH_ECLOSED);
    expect_nothing(other);
    assert_int_equal(cch_communicator_close_code(other), 0);
    assert_true(logged(f, "chat close room=lobby by user=alice members=2"));

    /* The next visitor starts a new room and is its creator. */
    cch_communicator *dave = open_comm(f, "/ws/chat/lobby/?name=dave");
    json_decref(next_json(dave));
    expect_json(dave, "{\"message\":\"dave joined\",\"event\":\"join\",\"user\":\"dave\","
                      "\"owner\":\"dave\",\"members\":[\"dave\"],\"count\":1}");
    send_text(dave, "{\"command\":\"close\"}");
    json_decref(next_json(dave));
    assert_int_equal(cch_communicator_close_code(dave), CHAT_CLOSE_ROOM);
    cch_communicator_free(dave);
    cch_communicator_free(alice);
    cch_communicator_free(bob);
    cch_communicator_free(other);
}

static void test_creator_role_passes_to_the_oldest_member(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    cch_communicator *bob = join(f, "lobby", "bob");
    json_decref(next_json(alice));
    cch_communicator *carol = join(f, "lobby", "carol");
    json_decref(next_json(alice));
    json_decref(next_json(bob));

    cch_communicator_free(alice);
    const char *left = "{\"message\":\"alice left\",\"event\":\"leave\",\"user\":\"alice\","
                       "\"owner\":\"bob\",\"members\":[\"bob\",\"carol\"],\"count\":2}";
    expect_json(bob, left);
    expect_json(carol, left);
    send_text(carol, "{\"command\":\"close\"}");
    expect_error(carol, "creator");
    send_text(bob, "{\"command\":\"close\"}");
    json_decref(next_json(carol));
    assert_int_equal(cch_communicator_close_code(carol), CHAT_CLOSE_ROOM);
    assert_int_equal(cch_communicator_close_code(bob), CHAT_CLOSE_ROOM);
    cch_communicator_free(bob);
    cch_communicator_free(carol);
}

/* ---- logging ----------------------------------------------------------------- */

static void test_one_log_line_per_connection_event(void **state)
{
    fixture *f = *state;
    cch_communicator *alice = join(f, "lobby", "alice");
    assert_true(logged(f, "chat connect room=lobby user=alice client=127.0.0.1:50000"));
    assert_true(logged(f, "chat accept room=lobby user=alice channel="));
    assert_int_equal(cch_communicator_disconnect(alice, 1001), 0);
    assert_true(logged(f, "chat disconnect room=lobby user=alice code=1001"));
    assert_int_equal(f->n_lines, 3);
    cch_communicator_free(alice);

    /* Without a log sink the chat is silent and works. */
    chat_server *quiet = chat_server_new(NULL, NULL);
    assert_non_null(quiet);
    assert_int_equal(cch_app_route(f->app, "/ws/quiet/{room}/", &chat_consumer, quiet), 0);
    cch_communicator *t = open_comm(f, "/ws/quiet/lobby/?name=zed");
    json_decref(next_json(t));
    json_decref(next_json(t));
    cch_communicator_free(t);
    assert_int_equal(f->n_lines, 3);
    chat_server_free(quiet);
}

/* ---- out of memory ------------------------------------------------------------ */

static long alloc_calls, alloc_fail_at;    /* fail the Nth allocation (0: never) */

static bool alloc_should_fail(void)
{
    return alloc_fail_at > 0 && ++alloc_calls == alloc_fail_at;
}
static void *t_malloc(size_t n) { return alloc_should_fail() ? NULL : malloc(n); }
static void *t_realloc(void *p, size_t n) { return alloc_should_fail() ? NULL : realloc(p, n); }
static void *t_calloc(size_t c, size_t n) { return alloc_should_fail() ? NULL : calloc(c, n); }

/* A whole chat session with the library's Nth allocation failing, for every N: no
 * crash, no leak (under ASan), and everything can be freed afterwards. */
static void test_survives_allocation_failures(void **state)
{
    (void)state;
    bool failed = true;
    long last_n = 0;
    for (long n = 1; failed && n < 5000; n++) {
        last_n = n;
        fixture *f;
        assert_int_equal(setup((void **)&f), 0);
        alloc_calls = 0;
        alloc_fail_at = n;
        assert_int_equal(cch_replace_allocator(t_malloc, t_realloc, t_calloc, free), 0);

        cch_communicator *a = cch_communicator_new(f->app, "/ws/chat/lobby/?name=alice", NULL, 0);
        cch_communicator *b = cch_communicator_new(f->app, "/ws/chat/lobby/?name=bob", NULL, 0);
        if (a)
            (void)cch_communicator_connect(a);
        if (b)
            (void)cch_communicator_connect(b);
        const char *script[][2] = {
            {"a", "{\"message\":\"hi\"}"},
            {"b", "{\"message\":\"psst\",\"users\":[\"alice\"]}"},
            {"a", "oops"},
            {"b", "{\"command\":\"close\"}"},
            {"a", "{\"command\":\"close\"}"},
        };
        for (size_t i = 0; i < sizeof script / sizeof script[0]; i++) {
            cch_communicator *t = script[i][0][0] == 'a' ? a : b;
            if (t)
                (void)cch_communicator_send_text(t, script[i][1], strlen(script[i][1]));
            const char *data;
            size_t len;
            bool binary;
            for (int k = 0; k < 2; k++) {
                if (a)
                    while (cch_communicator_receive(a, &data, &len, &binary) == 0) {}
                if (b)
                    while (cch_communicator_receive(b, &data, &len, &binary) == 0) {}
            }
        }
        cch_communicator_free(a);
        cch_communicator_free(b);
        failed = alloc_calls >= alloc_fail_at;
        alloc_fail_at = 0;
        assert_int_equal(cch_replace_allocator(malloc, realloc, calloc, free), 0);
        assert_int_equal(teardown((void **)&f), 0);
    }
    print_message("allocation failures tried: %ld\n", last_n);
    assert_false(failed);            /* some run had no failure: every N was tried */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_and_leave_notices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_list_lists_each_name_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_list_is_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous_users_get_guest_names, setup, teardown),
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test_setup_teardown(test_invalid_names_are_closed_with_a_reason, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_reaches_everyone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_forms_agree_with_the_full_parser, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_direct_message_reaches_only_its_users, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_recipient_lists_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_input_gets_an_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tutorial_messages_pass_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_the_creator_can_close_the_room, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_creator_role_passes_to_the_oldest_member, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_one_log_line_per_connection_event, setup, teardown),
        cmocka_unit_test(test_survives_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
