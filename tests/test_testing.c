/* tests/test_testing.c - the communicator (cchannels/testing.h) itself.
 *
 * Consumers defined here echo, reject, stay undecided, pick subprotocols and close;
 * the tests check that the communicator reports each outcome the way testing.h says
 * and that it ends connections only outside transport callbacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cchannels/cchannels.h"

#include "alloc_fixture.h"

#define H(n, v) {(n), sizeof(n) - 1, (v), sizeof(v) - 1}

/* ---- consumers ---------------------------------------------------------------- */

static int connects, disconnects, last_disconnect_code;
static int disconnects_seen_in_receive = -1;
static int last_send_rc;
static char seen_header[64], seen_query[64], seen_client[64], seen_path[64];
static int seen_port;
static bool offered_chat, offered_superchat;

static int echo_connect(cch_conn *c) {
    connects++;
    cch_scope *s = cch_conn_scope(c);
    const char *h = cch_scope_header(s, "X-Test");
    snprintf(seen_header, sizeof seen_header, "%s", h ? h : "(none)");
    if (cch_scope_query(s, "b", seen_query, sizeof seen_query) < 0)
        snprintf(seen_query, sizeof seen_query, "(none)");
    snprintf(seen_client, sizeof seen_client, "%s", cch_scope_client_host(s));
    snprintf(seen_path, sizeof seen_path, "%s", cch_scope_path(s));
    seen_port = cch_scope_client_port(s);
    offered_chat = cch_scope_offers_subprotocol(s, "chat");
    offered_superchat = cch_scope_offers_subprotocol(s, "superchat");
    int rc = cch_group_add(c, "everyone");
    if (rc < 0) return rc; /* out of memory: rejects with 500 */
    return cch_accept(c, offered_superchat ? "superchat" : NULL);
}

/* Echoes; a few texts are commands. */
static void echo_receive(cch_conn *c, const char *data, size_t len, bool binary) {
    if (!binary && len == 5 && memcmp(data, "close", 5) == 0) {
        assert_int_equal(cch_send_text(c, "last", 4), 0);
        assert_int_equal(cch_close(c, 4001, "bye"), 0);
        /* The communicator must not end the connection inside the transport's close. */
        disconnects_seen_in_receive = disconnects;
        assert_int_equal(cch_send_text(c, "after", 5), CCH_ECLOSED);
        return;
    }
    if (!binary && len == 5 && memcmp(data, "three", 5) == 0) {
        assert_int_equal(cch_send_text(c, "1", 1), 0);
        assert_int_equal(cch_send_binary(c, "2", 1), 0);
        assert_int_equal(cch_send_text(c, "3", 1), 0);
        return;
    }
    last_send_rc = binary ? cch_send_binary(c, data, len) : cch_send_text(c, data, len);
}

static void echo_disconnect(cch_conn *c, int code) {
    (void)c;
    disconnects++;
    last_disconnect_code = code;
}

static void body_handler(cch_conn *c, const cch_msg *m) {
    assert_int_equal(cch_send_body(c, m), 0);
}

static const cch_consumer_class echo = {
    .connect = echo_connect,
    .receive = echo_receive,
    .disconnect = echo_disconnect,
    .handlers = (const cch_handler[]){{"test.body", body_handler}, {NULL, NULL}},
};

static int reject_connect(cch_conn *c) {
    connects++;
    return cch_reject(c, 401);
}
static const cch_consumer_class rejecting = {
    .connect = reject_connect, .disconnect = echo_disconnect};

static int close_connect(cch_conn *c) {
    connects++;
    return cch_close(c, 0, NULL); /* before accept: a 403 rejection */
}
static const cch_consumer_class closing = {
    .connect = close_connect, .disconnect = echo_disconnect};

static int later_connect(cch_conn *c) {
    connects++;
    (void)c;
    return 0; /* undecided */
}
static const cch_consumer_class later = {
    .connect = later_connect, .receive = echo_receive, .disconnect = echo_disconnect};

static int accept_close_connect(cch_conn *c) {
    connects++;
    assert_int_equal(cch_accept(c, NULL), 0);
    assert_int_equal(cch_send_text(c, "hello", 5), 0);
    return cch_close(c, 4002, "go away");
}
static const cch_consumer_class accept_close = {
    .connect = accept_close_connect, .disconnect = echo_disconnect};

static int setup(void **state) {
    connects = disconnects = last_disconnect_code = 0;
    disconnects_seen_in_receive = -1;
    last_send_rc = 0;
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/echo/", &echo, NULL), 0);
    assert_int_equal(cch_app_route(app, "/ws/reject/", &rejecting, NULL), 0);
    assert_int_equal(cch_app_route(app, "/ws/close/", &closing, NULL), 0);
    assert_int_equal(cch_app_route(app, "/ws/later/", &later, NULL), 0);
    assert_int_equal(cch_app_route(app, "/ws/accept-close/", &accept_close, NULL), 0);
    *state = app;
    return 0;
}

static int teardown(void **state) {
    assert_int_equal(cch_app_free(*state), 0);
    return 0;
}

static cch_communicator *connected(cch_app *app, const char *path) {
    cch_communicator *t = cch_communicator_new(app, path, NULL, 0);
    assert_non_null(t);
    assert_int_equal(cch_communicator_connect(t), 0);
    return t;
}

/* ---- tests -------------------------------------------------------------------- */

static void connect_accepted(void **state) {
    cch_app *app = *state;
    cch_header h[] = {H("X-Test", "yes"), H("Host", "localhost")};
    cch_communicator *t = cch_communicator_new(app, "/ws/echo/?a=1&b=two", h, 2);
    assert_non_null(t);
    assert_null(cch_communicator_conn(t));
    assert_int_equal(cch_communicator_status(t), 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_int_equal(cch_communicator_status(t), 101);
    assert_non_null(cch_communicator_conn(t));
    assert_true(cch_is_open(cch_communicator_conn(t)));
    assert_null(cch_communicator_subprotocol(t));
    assert_int_equal(connects, 1);
    assert_string_equal(seen_header, "yes");
    assert_string_equal(seen_query, "two");
    assert_string_equal(seen_path, "/ws/echo/");
    assert_string_equal(seen_client, "127.0.0.1");
    assert_int_equal(seen_port, 50000);
    assert_string_equal(cch_scope_query_string(cch_conn_scope(cch_communicator_conn(t))),
                        "a=1&b=two");
    assert_int_equal(cch_communicator_close_code(t), 0);
    assert_null(cch_communicator_close_reason(t));
    /* A second connect is a state error. */
    assert_int_equal(cch_communicator_connect(t), CCH_ESTATE);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void headers_are_copied(void **state) {
    cch_app *app = *state;
    char name[] = "X-Test", value[] = "copied";
    cch_header h = {name, 6, value, 6};
    char path[] = "/ws/echo/?b=q";
    cch_communicator *t = cch_communicator_new(app, path, &h, 1);
    assert_non_null(t);
    memset(name, 'x', 6);
    memset(value, 'x', 6);
    memset(path, 'x', sizeof path - 1);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_string_equal(seen_header, "copied");
    assert_string_equal(seen_query, "q");
    cch_communicator_free(t);
}

static void no_query_string(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    assert_string_equal(seen_query, "(none)");
    assert_string_equal(seen_header, "(none)");
    assert_string_equal(cch_scope_query_string(cch_conn_scope(cch_communicator_conn(t))), "");
    cch_communicator_free(t);
}

static void connect_rejected(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/reject/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(t), 401);
    assert_int_equal(connects, 1);
    /* The connection is over: its disconnect ran once, outside the callbacks. */
    assert_int_equal(disconnects, 1);
    assert_null(cch_communicator_conn(t));
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ECLOSED);
    assert_int_equal(cch_communicator_send_text(t, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_communicator_disconnect(t, 1000), CCH_ESTATE);
    assert_int_equal(cch_communicator_connect(t), CCH_ESTATE);
    assert_int_equal(cch_communicator_close_code(t), 0);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);

    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_rejected, 1);
    assert_int_equal(st.connections_active, 0);
}

static void close_before_accept_is_403(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/close/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(t), 403);
    assert_int_equal(disconnects, 1);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void connect_no_route_is_404(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/nowhere/?x=1", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(t), 404);
    assert_int_equal(connects, 0);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 0); /* connect never ran */
}

static void connect_undecided_then_accepted(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/later/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EAGAIN);
    assert_int_equal(cch_communicator_status(t), 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EAGAIN); /* still undecided */
    assert_int_equal(connects, 1);                             /* connect ran once */
    cch_conn *c = cch_communicator_conn(t);
    assert_non_null(c);
    assert_false(cch_is_open(c));
    assert_int_equal(cch_communicator_send_text(t, "x", 1), CCH_ESTATE);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    /* The decision comes later (e.g. after asynchronous authentication). */
    assert_int_equal(cch_accept(c, NULL), 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_int_equal(cch_communicator_status(t), 101);
    assert_int_equal(cch_communicator_connect(t), CCH_ESTATE);
    assert_int_equal(cch_communicator_send_text(t, "now", 3), 0);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "now");
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 1000);
}

static void connect_undecided_then_rejected(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/later/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EAGAIN);
    assert_int_equal(cch_reject(cch_communicator_conn(t), 0), 0); /* 0 means 403 */
    assert_int_equal(cch_communicator_connect(t), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(t), 403);
    assert_null(cch_communicator_conn(t));
    assert_int_equal(disconnects, 1);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void undecided_peer_vanishes(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/later/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), CCH_EAGAIN);
    assert_int_equal(cch_communicator_disconnect(t, 1006), 0);
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 1006);
    assert_null(cch_communicator_conn(t));
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void subprotocols(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/echo/", NULL, 0);
    assert_int_equal(cch_communicator_offer_subprotocols(t, "chat"), 0);
    assert_int_equal(cch_communicator_offer_subprotocols(t, "chat, superchat"), 0); /* replaces */
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_true(offered_chat);
    assert_true(offered_superchat);
    assert_string_equal(cch_communicator_subprotocol(t), "superchat");
    assert_string_equal(cch_scope_subprotocol(cch_conn_scope(cch_communicator_conn(t))),
                        "superchat");
    assert_int_equal(cch_communicator_offer_subprotocols(t, "chat"), CCH_ESTATE);
    cch_communicator_free(t);

    t = cch_communicator_new(app, "/ws/echo/", NULL, 0);
    assert_int_equal(cch_communicator_offer_subprotocols(t, "chat"), 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_true(offered_chat);
    assert_false(offered_superchat);
    assert_null(cch_communicator_subprotocol(t));  /* the consumer chose none */
    cch_communicator_free(t);

    t = cch_communicator_new(app, "/ws/echo/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_false(offered_chat);
    cch_communicator_free(t);
}

static void receive_nothing(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    const char *d = "untouched";
    size_t len = 77;
    bool bin = true;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    cch_communicator_free(t);
}

static void text_and_binary_frames_in_order(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_send_text(t, "hi", 2), 0);
    static const unsigned char blob[] = {0, 1, 2, 0xff, 0};
    assert_int_equal(cch_communicator_send_binary(t, blob, sizeof blob), 0);
    assert_int_equal(cch_communicator_send_text(t, "", 0), 0);
    assert_int_equal(cch_communicator_send_text(t, "three", 5), 0);
    assert_int_equal(last_send_rc, 0);

    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_int_equal(len, 2);
    assert_false(bin);
    assert_string_equal(d, "hi"); /* NUL-terminated */
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_int_equal(len, sizeof blob);
    assert_true(bin);
    assert_memory_equal(d, blob, sizeof blob);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_int_equal(len, 0);
    assert_false(bin);
    assert_string_equal(d, "");
    const char *expect[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
        assert_string_equal(d, expect[i]);
        assert_int_equal(bin, i == 1);
    }
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);

    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.messages_received, 4);
    cch_communicator_free(t);
}

static void consumer_closes(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_send_text(t, "close", 5), 0);
    /* Inside receive, after cch_close, disconnect had not run yet. */
    assert_int_equal(disconnects_seen_in_receive, 0);
    assert_int_equal(cch_communicator_close_code(t), 4001);
    assert_string_equal(cch_communicator_close_reason(t), "bye");
    /* By the time close_code reports the code, disconnect has run. */
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 4001);
    assert_null(cch_communicator_conn(t));
    /* What was sent before the close is still there; then ECLOSED. */
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "last");
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ECLOSED);
    assert_int_equal(cch_communicator_send_text(t, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_communicator_send_binary(t, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_communicator_disconnect(t, 1000), CCH_ESTATE);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void close_is_settled_by_receive(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_send_text(t, "close", 5), 0);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "last");
    assert_int_equal(disconnects, 1);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ECLOSED);
    assert_int_equal(cch_communicator_close_code(t), 4001);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void accept_then_close_in_connect(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/accept-close/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_int_equal(cch_communicator_status(t), 101);
    assert_int_equal(cch_communicator_close_code(t), 4002);
    assert_string_equal(cch_communicator_close_reason(t), "go away");
    assert_int_equal(disconnects, 1);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "hello");
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ECLOSED);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
}

static void close_from_the_layer(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    cch_msg *m = cch_msg_new("websocket.close", "{\"code\":4321,\"reason\":\"layer\"}", 30);
    assert_non_null(m);
    assert_int_equal(cch_layer_group_send(cch_app_layer(app), "everyone", m, NULL, NULL), 0);
    cch_msg_unref(m);
    assert_int_equal(disconnects, 0);              /* nothing until dispatch */
    assert_int_equal(cch_communicator_close_code(t), 4321);
    assert_string_equal(cch_communicator_close_reason(t), "layer");
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 4321);
    cch_communicator_free(t);
}

static void receive_dispatches_layer_messages(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    cch_layer *l = cch_app_layer(app);
    const char *chan = cch_channel_name(cch_communicator_conn(t));
    cch_msg *m = cch_msg_new("websocket.send", "{\"text\":\"from layer\"}", 21);
    assert_int_equal(cch_layer_send(l, chan, m), 0);
    cch_msg_unref(m);
    m = cch_msg_new("test.body", "{\"k\":[1,2]}", 11);
    assert_int_equal(cch_layer_send(l, chan, m), 0);
    cch_msg_unref(m);

    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "from layer");
    assert_false(bin);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "{\"k\":[1,2]}");   /* send_body: the body, as text */
    assert_int_equal(len, 11);
    assert_false(bin);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    cch_communicator_free(t);
}

static void dispatch_reaches_every_communicator(void **state) {
    cch_app *app = *state;
    cch_communicator *a = connected(app, "/ws/echo/");
    cch_communicator *b = connected(app, "/ws/echo/");
    cch_msg *m = cch_msg_new("test.body", "{\"to\":\"all\"}", 12);
    assert_int_equal(cch_layer_group_send(cch_app_layer(app), "everyone", m, NULL, NULL), 0);
    cch_msg_unref(m);
    const char *d;
    size_t len;
    bool bin;
    /* a's receive dispatches for the whole app; b's frame waits in b's queue. */
    assert_int_equal(cch_communicator_receive(a, &d, &len, &bin), 0);
    assert_string_equal(d, "{\"to\":\"all\"}");
    assert_int_equal(cch_communicator_receive(b, &d, &len, &bin), 0);
    assert_string_equal(d, "{\"to\":\"all\"}");
    assert_int_equal(cch_communicator_receive(a, &d, &len, &bin), CCH_EAGAIN);
    assert_int_equal(cch_communicator_receive(b, &d, &len, &bin), CCH_EAGAIN);
    cch_communicator_free(a);
    cch_communicator_free(b);
}

static void disconnect_runs_consumer_disconnect(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    assert_int_equal(cch_communicator_send_text(t, "x", 1), 0);
    assert_int_equal(cch_communicator_disconnect(t, 1001), 0);
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 1001);
    assert_null(cch_communicator_conn(t));
    assert_int_equal(cch_communicator_disconnect(t, 1001), CCH_ESTATE);
    assert_int_equal(cch_communicator_send_text(t, "y", 1), CCH_ECLOSED);
    assert_int_equal(cch_communicator_connect(t), CCH_ESTATE);
    /* The client left; what the consumer had sent is still readable. */
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "x");
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ECLOSED);
    assert_int_equal(cch_communicator_close_code(t), 0); /* the consumer never closed */
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_active, 0);
}

static void free_disconnects_with_1000(void **state) {
    cch_app *app = *state;
    cch_communicator *t = connected(app, "/ws/echo/");
    assert_int_equal(cch_communicator_send_text(t, "unread", 6), 0); /* freed too */
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
    assert_int_equal(last_disconnect_code, 1000);
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_active, 0);
    /* Freeing a communicator that never connected does nothing. */
    t = cch_communicator_new(app, "/ws/echo/", NULL, 0);
    cch_communicator_free(t);
    assert_int_equal(disconnects, 1);
    cch_communicator_free(NULL);
}

static void before_connect(void **state) {
    cch_app *app = *state;
    cch_communicator *t = cch_communicator_new(app, "/ws/echo/", NULL, 0);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_send_text(t, "x", 1), CCH_ESTATE);
    assert_int_equal(cch_communicator_send_binary(t, "x", 1), CCH_ESTATE);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_ESTATE);
    assert_int_equal(cch_communicator_disconnect(t, 1000), CCH_ESTATE);
    assert_int_equal(cch_communicator_close_code(t), 0);
    assert_null(cch_communicator_close_reason(t));
    assert_null(cch_communicator_subprotocol(t));
    assert_int_equal(cch_communicator_status(t), 0);
    cch_communicator_free(t);
    assert_int_equal(connects, 0);
}

static void invalid_arguments(void **state) {
    cch_app *app = *state;
    assert_null(cch_communicator_new(NULL, "/ws/echo/", NULL, 0));
    assert_null(cch_communicator_new(app, NULL, NULL, 0));
    assert_null(cch_communicator_new(app, "/ws/echo/", NULL, 1));
    cch_header bad = {NULL, 3, "x", 1};
    assert_null(cch_communicator_new(app, "/ws/echo/", &bad, 1));
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_connect(NULL), CCH_EINVAL);
    assert_int_equal(cch_communicator_offer_subprotocols(NULL, "a"), CCH_EINVAL);
    assert_int_equal(cch_communicator_send_text(NULL, "x", 1), CCH_EINVAL);
    assert_int_equal(cch_communicator_send_binary(NULL, "x", 1), CCH_EINVAL);
    assert_int_equal(cch_communicator_receive(NULL, &d, &len, &bin), CCH_EINVAL);
    assert_int_equal(cch_communicator_disconnect(NULL, 1000), CCH_EINVAL);
    assert_int_equal(cch_communicator_status(NULL), 0);
    assert_int_equal(cch_communicator_close_code(NULL), 0);
    assert_null(cch_communicator_close_reason(NULL));
    assert_null(cch_communicator_subprotocol(NULL));
    assert_null(cch_communicator_conn(NULL));

    cch_communicator *t = connected(app, "/ws/echo/");
    assert_int_equal(cch_communicator_offer_subprotocols(t, NULL), CCH_EINVAL);
    assert_int_equal(cch_communicator_send_text(t, NULL, 1), CCH_EINVAL);
    assert_int_equal(cch_communicator_send_text(t, NULL, 0), 0); /* empty message */
    assert_int_equal(cch_communicator_receive(t, NULL, &len, &bin), CCH_EINVAL);
    assert_int_equal(cch_communicator_receive(t, &d, NULL, &bin), CCH_EINVAL);
    assert_int_equal(cch_communicator_receive(t, &d, &len, NULL), CCH_EINVAL);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_int_equal(len, 0);
    cch_communicator_free(t);
}

static void out_of_memory(void **state) {
    cch_app *app = *state;
    cch_header h[] = {H("X-Test", "oom"), H("Cookie", "a=b")};
    bool succeeded = false;
    for (long n = 0; n < 200 && !succeeded; n++) {
        connects = disconnects = 0;
        fail_after(n);
        cch_communicator *t = cch_communicator_new(app, "/ws/echo/?b=1", h, 2);
        int rc = t ? cch_communicator_offer_subprotocols(t, "chat, superchat") : CCH_ENOMEM;
        bool connected_called = rc == 0;
        if (rc == 0) rc = cch_communicator_connect(t);
        alloc_restore();
        if (rc == 0) {
            succeeded = true;
            assert_int_equal(cch_communicator_status(t), 101);
            assert_string_equal(cch_communicator_subprotocol(t), "superchat");
        } else if (t) {
            /* Out of memory somewhere: either no connection was made, or it was
             * refused, or the consumer's accept failed (still undecided). */
            assert_true(rc == CCH_ENOMEM || rc == CCH_EREJECTED || rc == CCH_EAGAIN);
            assert_int_equal(cch_communicator_status(t), !connected_called ? 0
                                                         : rc == CCH_ENOMEM ? 500
                                                         : cch_communicator_status(t));
            if (!connected_called) assert_int_equal(rc, CCH_ENOMEM);
            if (rc == CCH_EREJECTED) assert_true(cch_communicator_status(t) >= 400);
        }
        cch_communicator_free(t);
        cch_app_stats st;
        cch_app_stats_get(app, &st);
        assert_int_equal(st.connections_active, 0);
    }
    assert_true(succeeded);

    /* A frame the consumer sends cannot be stored: the consumer's send fails. */
    cch_communicator *t = connected(app, "/ws/echo/");
    last_send_rc = 0;
    fail_after(0);
    int rc = cch_communicator_send_text(t, "x", 1);
    alloc_restore();
    assert_int_equal(rc, 0);
    assert_int_equal(last_send_rc, CCH_ENOMEM);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    assert_int_equal(cch_communicator_send_text(t, "y", 1), 0);
    assert_int_equal(last_send_rc, 0);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "y");
    cch_communicator_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(connect_accepted),
        T(headers_are_copied),
        T(no_query_string),
        T(connect_rejected),
        T(close_before_accept_is_403),
        T(connect_no_route_is_404),
        T(connect_undecided_then_accepted),
        T(connect_undecided_then_rejected),
        T(undecided_peer_vanishes),
        T(subprotocols),
        T(receive_nothing),
        T(text_and_binary_frames_in_order),
        T(consumer_closes),
        T(close_is_settled_by_receive),
        T(accept_then_close_in_connect),
        T(close_from_the_layer),
        T(receive_dispatches_layer_messages),
        T(dispatch_reaches_every_communicator),
        T(disconnect_runs_consumer_disconnect),
        T(free_disconnects_with_1000),
        T(before_connect),
        T(invalid_arguments),
        T(out_of_memory),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
