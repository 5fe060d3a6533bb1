/* tests/test_conn.c - one connection through a fake transport: open (accept,
 * reject, close, defer, fail), subprotocols, receive, send, close codes, groups,
 * built-in websocket.send / websocket.close, disconnect, NULL and bad names, ENOMEM
 * paths, channel names longer than the connection keeps inline, and the memory an idle
 * connection costs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "app_internal.h"
#include "cchannels/layer_impl.h"
#include "conn_fixture.h"

/* ---- a consumer driven by a global script ------------------------------------------ */

enum mode {
    M_ACCEPT,        /* cch_accept(c, sub) */
    M_REJECT,        /* cch_reject(c, status) */
    M_CLOSE,         /* cch_close before accept */
    M_DEFER,         /* decide later */
    M_FAIL,          /* return -5 undecided */
    M_ACCEPT_FAIL,   /* accept, then return an error */
};

static struct script {
    int mode;
    const char *sub;       /* subprotocol to accept with */
    int status;            /* for M_REJECT */
    const char *group;     /* joined in connect when set */
} script;

static struct rec {
    int connects, receives, disconnects;
    int disconnect_code;
    int accept_rc;         /* what cch_accept returned in connect */
    int send_in_disconnect;
    int close_in_disconnect;
    char received[256];
    size_t received_len;
    bool received_binary;
    char param[64];
    void *state_seen;
    bool state_zeroed;
    int handled;
} rec;

struct cstate {
    int counter;
    char pad[60];
};

static int t_connect(cch_conn *c) {
    rec.connects++;
    struct cstate *st = cch_state(c);
    rec.state_seen = st;
    rec.state_zeroed = st && st->counter == 0 && st->pad[59] == 0;
    const char *p = cch_param(c, "room");
    snprintf(rec.param, sizeof rec.param, "%s", p ? p : "(null)");
    if (script.group) {
        int rc = cch_group_add(c, script.group);
        if (rc < 0) return rc;
    }
    switch (script.mode) {
    case M_ACCEPT:
        rec.accept_rc = cch_accept(c, script.sub);
        return 0;
    case M_REJECT:
        return cch_reject(c, script.status);
    case M_CLOSE:
        return cch_close(c, 4000, "no");
    case M_DEFER:
        return 0;
    case M_FAIL:
        return CCH_EAGAIN;
    case M_ACCEPT_FAIL:
        rec.accept_rc = cch_accept(c, NULL);
        return CCH_EIO;
    }
    return 0;
}

static void t_receive(cch_conn *c, const char *data, size_t len, bool binary) {
    rec.receives++;
    size_t n = len < sizeof rec.received - 1 ? len : sizeof rec.received - 1;
    memcpy(rec.received, data, n);
    rec.received[n] = '\0';
    rec.received_len = len;
    rec.received_binary = binary;
    /* echo */
    if (binary)
        cch_send_binary(c, data, len);
    else
        cch_send_text(c, data, len);
}

static void t_disconnect(cch_conn *c, int code) {
    rec.disconnects++;
    rec.disconnect_code = code;
    rec.send_in_disconnect = cch_send_text(c, "x", 1);
    rec.close_in_disconnect = cch_close(c, 1000, NULL);
}

static void t_handler(cch_conn *c, const cch_msg *m) {
    (void)m;
    rec.handled++;
    struct cstate *st = cch_state(c);
    st->counter++;
}

static const cch_consumer_class t_cls = {
    .state_size = sizeof(struct cstate),
    .connect = t_connect,
    .receive = t_receive,
    .disconnect = t_disconnect,
    .handlers = (const cch_handler[]){{"test.ping", t_handler}, {NULL, NULL}},
};

/* A class with no callbacks at all. */
static const cch_consumer_class bare_cls = {0};

static int class_ud_marker;

/* ---- fixture ------------------------------------------------------------------------- */

typedef struct fx {
    cch_app *app;
    fx_log log;
} fx;

static int setup(void **state) {
    memset(&script, 0, sizeof script);
    memset(&rec, 0, sizeof rec);
    fx *f = calloc(1, sizeof *f);
    f->app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(f->app);
    cch_app_set_log(f->app, fx_log_fn, &f->log);
    assert_int_equal(cch_app_route(f->app, "/ws/chat/{room}/", &t_cls, &class_ud_marker), 0);
    assert_int_equal(cch_app_route(f->app, "/bare/", &bare_cls, NULL), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_free(f->app), 0);
    free(f);
    return 0;
}

static cch_conn *open_conn(fx *f, fx_tp *t, const char *pq, const char *const *headers) {
    fx_req r;
    fx_req_init(&r, pq, headers);
    cch_conn *c = NULL;
    assert_int_equal(cch_conn_open(f->app, &r.req, &fx_transport, t, &c), 0);
    assert_non_null(c);
    return c;
}

static cch_msg *msg(const char *type, const char *body) {
    cch_msg *m = cch_msg_new(type, body, body ? strlen(body) : 0);
    assert_non_null(m);
    return m;
}

static size_t group_size;
static void count_members(void *ud, int status, const char *const *names, size_t n) {
    (void)ud;
    (void)names;
    assert_int_equal(status, 0);
    group_size = n;
}

static size_t members(fx *f, const char *group) {
    group_size = 9999;
    assert_int_equal(cch_layer_group_members(cch_app_layer(f->app), group, count_members, NULL),
                     0);
    return group_size;
}

/* ---- opening ------------------------------------------------------------------------- */

static void test_open_accept(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/lobby/?a=1", NULL);
    assert_int_equal(rec.connects, 1);
    assert_int_equal(rec.accept_rc, 0);
    assert_int_equal(t.accepts, 1);
    assert_string_equal(t.subprotocol, "");
    assert_int_equal(t.rejects, 0);
    assert_true(cch_is_open(c));
    assert_string_equal(rec.param, "lobby");
    assert_ptr_equal(rec.state_seen, cch_state(c));
    assert_true(rec.state_zeroed);
    assert_true(((uintptr_t)cch_state(c) % _Alignof(max_align_t)) == 0);
    assert_ptr_equal(cch_class_data(c), &class_ud_marker);
    assert_ptr_equal(cch_conn_app(c), f->app);
    assert_ptr_equal(cch_conn_transport_ctx(c), &t);
    assert_ptr_equal(cch_conn_layer(c), cch_app_layer(f->app));
    assert_true(cch_valid_channel_name(cch_channel_name(c)));
    assert_non_null(strchr(cch_channel_name(c), '!'));
    assert_string_equal(cch_scope_path(cch_conn_scope(c)), "/ws/chat/lobby/");
    assert_string_equal(cch_scope_query_string(cch_conn_scope(c)), "a=1");
    assert_true(cch_user_id(c) == CCH_USER_ANONYMOUS);
    assert_null(cch_scope_subprotocol(cch_conn_scope(c)));

    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_opened, 1);
    assert_int_equal(st.connections_accepted, 1);
    assert_int_equal(st.connections_active, 1);
    assert_int_equal(st.connections_rejected, 0);

    /* A second accept is refused. */
    assert_int_equal(cch_accept(c, NULL), CCH_ESTATE);
    assert_int_equal(cch_reject(c, 403), CCH_ESTATE);
    assert_int_equal(t.accepts, 1);

    cch_conn_disconnected(c, 1001);
    assert_int_equal(rec.disconnects, 1);
    assert_int_equal(rec.disconnect_code, 1001);
    assert_int_equal(rec.send_in_disconnect, CCH_ECLOSED);
    assert_int_equal(rec.close_in_disconnect, CCH_ECLOSED);
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_active, 0);
}

static void test_open_no_route(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/other/", NULL);
    assert_int_equal(t.rejects, 1);
    assert_int_equal(t.reject_status, 404);
    assert_int_equal(t.accepts, 0);
    assert_int_equal(rec.connects, 0);
    assert_false(cch_is_open(c));
    assert_null(cch_state(c));
    assert_null(cch_class_data(c));
    assert_string_equal(cch_channel_name(c), "");
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_conn_receive(c, "x", 1, false), CCH_ESTATE);
    assert_int_equal(cch_group_add(c, "g"), CCH_ESTATE);
    assert_int_equal(cch_group_discard(c, "g"), 0);
    assert_int_equal(cch_accept(c, NULL), CCH_ESTATE);
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED);
    assert_string_equal(f->log.last, "no route for /ws/other/: 404");
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_rejected, 1);
    assert_int_equal(st.connections_opened, 1);
    /* The trailing slash matters: no match either. */
    fx_tp t2 = {0};
    cch_conn *c2 = open_conn(f, &t2, "/ws/chat/lobby", NULL);
    assert_int_equal(t2.reject_status, 404);
    cch_conn_disconnected(c, 1006);
    cch_conn_disconnected(c2, 1006);
    assert_int_equal(rec.disconnects, 0); /* connect never ran */
}

static void test_open_bare_class(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/bare/", NULL);
    assert_int_equal(t.accepts, 1); /* no connect: accepted */
    assert_true(cch_is_open(c));
    assert_null(cch_state(c));
    assert_null(cch_class_data(c));
    assert_int_equal(cch_conn_receive(c, "hi", 2, false), 0); /* no receive: ignored */
    cch_conn_disconnected(c, 1000);
}

static void test_open_invalid(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    fx_req r;
    fx_req_init(&r, "/ws/chat/x/", NULL);
    cch_conn *c = (cch_conn *)(uintptr_t)1;
    assert_int_equal(cch_conn_open(NULL, &r.req, &fx_transport, &t, &c), CCH_EINVAL);
    assert_null(c);
    assert_int_equal(cch_conn_open(f->app, NULL, &fx_transport, &t, &c), CCH_EINVAL);
    assert_int_equal(cch_conn_open(f->app, &r.req, NULL, &t, &c), CCH_EINVAL);
    assert_int_equal(cch_conn_open(f->app, &r.req, &fx_transport, &t, NULL), CCH_EINVAL);
    cch_transport partial = fx_transport;
    partial.close = NULL;
    assert_int_equal(cch_conn_open(f->app, &r.req, &partial, &t, &c), CCH_EINVAL);
    partial = fx_transport;
    partial.accept = NULL;
    assert_int_equal(cch_conn_open(f->app, &r.req, &partial, &t, &c), CCH_EINVAL);
    r.req.n_headers = 1; /* headers NULL */
    assert_int_equal(cch_conn_open(f->app, &r.req, &fx_transport, &t, &c), CCH_EINVAL);
    r.req.n_headers = 0;
    r.req.path = NULL;
    assert_int_equal(cch_conn_open(f->app, &r.req, &fx_transport, &t, &c), CCH_EINVAL);
    assert_int_equal(t.accepts + t.rejects, 0);
    assert_int_equal(rec.connects, 0);
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_opened, 0);

    /* NULL connections everywhere. */
    assert_null(cch_state(NULL));
    assert_null(cch_conn_scope(NULL));
    assert_null(cch_param(NULL, "room"));
    assert_true(cch_user_id(NULL) == CCH_USER_ANONYMOUS);
    assert_null(cch_class_data(NULL));
    assert_null(cch_channel_name(NULL));
    assert_null(cch_conn_layer(NULL));
    assert_null(cch_conn_app(NULL));
    assert_null(cch_conn_transport_ctx(NULL));
    assert_false(cch_is_open(NULL));
    assert_int_equal(cch_accept(NULL, NULL), CCH_EINVAL);
    assert_int_equal(cch_reject(NULL, 0), CCH_EINVAL);
    assert_int_equal(cch_close(NULL, 0, NULL), CCH_EINVAL);
    assert_int_equal(cch_send_text(NULL, "x", 1), CCH_EINVAL);
    assert_int_equal(cch_send_binary(NULL, "x", 1), CCH_EINVAL);
    cch_msg *m = msg("a.b", NULL);
    assert_int_equal(cch_send_body(NULL, m), CCH_EINVAL);
    assert_int_equal(cch_group_add(NULL, "g"), CCH_EINVAL);
    assert_int_equal(cch_group_discard(NULL, "g"), CCH_EINVAL);
    assert_int_equal(cch_group_send(NULL, "g", m), CCH_EINVAL);
    assert_int_equal(cch_group_send_others(NULL, "g", m), CCH_EINVAL);
    assert_int_equal(cch_channel_send(NULL, "specific.x", m), CCH_EINVAL);
    assert_int_equal(cch_conn_receive(NULL, "x", 1, false), CCH_EINVAL);
    cch_conn_disconnected(NULL, 1000);
    cch_msg_unref(m);
}

static void test_reject_in_connect(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    script.mode = M_REJECT;
    script.status = 200; /* invalid: stays undecided, and connect returns EINVAL -> 500 */
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(t.rejects, 1);
    assert_int_equal(t.reject_status, 500);
    cch_conn_disconnected(c, 1006);
    assert_int_equal(rec.disconnects, 1); /* connect ran */

    fx_tp t2 = {0};
    script.status = 0; /* default 403 */
    c = open_conn(f, &t2, "/ws/chat/a/", NULL);
    assert_int_equal(t2.rejects, 1);
    assert_int_equal(t2.reject_status, 403);
    assert_int_equal(t2.accepts, 0);
    assert_int_equal(cch_accept(c, NULL), CCH_ESTATE);
    assert_int_equal(cch_reject(c, 403), CCH_ESTATE);
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED);
    cch_conn_disconnected(c, 1006);

    fx_tp t3 = {0};
    script.status = 451;
    c = open_conn(f, &t3, "/ws/chat/a/", NULL);
    assert_int_equal(t3.reject_status, 451);
    cch_conn_disconnected(c, 1006);

    fx_tp t4 = {0};
    script.status = 600;
    c = open_conn(f, &t4, "/ws/chat/a/", NULL);
    assert_int_equal(t4.reject_status, 500);
    cch_conn_disconnected(c, 1006);
    assert_int_equal(rec.disconnects, 4);

    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_rejected, 4);
    assert_int_equal(st.connections_accepted, 0);
}

static void test_connect_fails(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    script.mode = M_FAIL;
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(t.rejects, 1);
    assert_int_equal(t.reject_status, 500);
    assert_non_null(strstr(f->log.last, "connect failed"));
    cch_conn_disconnected(c, 1006);

    /* An error after deciding changes nothing. */
    fx_tp t2 = {0};
    script.mode = M_ACCEPT_FAIL;
    c = open_conn(f, &t2, "/ws/chat/a/", NULL);
    assert_int_equal(t2.accepts, 1);
    assert_int_equal(t2.rejects, 0);
    assert_true(cch_is_open(c));
    cch_conn_disconnected(c, 1000);
}

static void test_close_before_accept(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    script.mode = M_CLOSE;
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(t.rejects, 1);
    assert_int_equal(t.reject_status, 403); /* as Channels does */
    assert_int_equal(t.closes, 0);
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED);
    cch_conn_disconnected(c, 1006);
    assert_int_equal(rec.disconnects, 1);
}

static void test_deferred_accept(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    script.mode = M_DEFER;
    const char *h[] = {"Sec-WebSocket-Protocol: chat, superchat", "Host: a", NULL};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", h);
    assert_int_equal(t.accepts + t.rejects, 0);
    assert_false(cch_is_open(c));
    /* Undecided: no sending, no receiving. */
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ESTATE);
    assert_int_equal(cch_send_binary(c, "x", 1), CCH_ESTATE);
    assert_int_equal(cch_conn_receive(c, "x", 1, false), CCH_ESTATE);
    /* Headers are gone; the offers are still known. */
    assert_null(cch_scope_header(cch_conn_scope(c), "host"));
    assert_int_equal(cch_accept(c, "nope"), CCH_EINVAL);
    assert_int_equal(t.accepts, 0);
    assert_int_equal(cch_accept(c, "superchat"), 0);
    assert_int_equal(t.accepts, 1);
    assert_string_equal(t.subprotocol, "superchat");
    assert_string_equal(cch_scope_subprotocol(cch_conn_scope(c)), "superchat");
    assert_true(cch_is_open(c));
    assert_int_equal(cch_send_text(c, "x", 1), 0);
    cch_conn_disconnected(c, 1000);

    /* Deferred, then rejected later. */
    fx_tp t2 = {0};
    c = open_conn(f, &t2, "/ws/chat/a/", h);
    assert_int_equal(cch_reject(c, 401), 0);
    assert_int_equal(t2.reject_status, 401);
    cch_conn_disconnected(c, 1006);
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_accepted, 1);
    assert_int_equal(st.connections_rejected, 1);
}

static void test_subprotocols(void **state) {
    fx *f = *state;
    const char *h[] = {"Sec-WebSocket-Protocol: chat", "sec-websocket-protocol: v2, v3",
                       NULL};
    fx_tp t = {0};
    script.sub = "v3";
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", h);
    assert_int_equal(rec.accept_rc, 0);
    assert_string_equal(t.subprotocol, "v3");
    assert_string_equal(cch_scope_subprotocol(cch_conn_scope(c)), "v3");
    cch_conn_disconnected(c, 1000);

    /* Choosing what was not offered fails; the connection stays undecided. */
    fx_tp t2 = {0};
    script.sub = "v4";
    c = open_conn(f, &t2, "/ws/chat/a/", h);
    assert_int_equal(rec.accept_rc, CCH_EINVAL);
    assert_int_equal(t2.accepts, 0);
    assert_int_equal(cch_accept(c, ""), CCH_EINVAL);
    assert_int_equal(cch_accept(c, NULL), 0);
    assert_string_equal(t2.subprotocol, "");
    assert_null(cch_scope_subprotocol(cch_conn_scope(c)));
    cch_conn_disconnected(c, 1000);

    /* No offer at all. */
    fx_tp t3 = {0};
    script.sub = "chat";
    c = open_conn(f, &t3, "/ws/chat/a/", NULL);
    assert_int_equal(rec.accept_rc, CCH_EINVAL);
    cch_conn_disconnected(c, 1000);
}

static void test_transport_failures(void **state) {
    fx *f = *state;
    fx_tp t = {.fail_accept = CCH_ETRANSPORT};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(rec.accept_rc, CCH_ETRANSPORT);
    assert_false(cch_is_open(c));
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED);
    cch_conn_disconnected(c, 1006);

    fx_tp t2 = {0};
    c = open_conn(f, &t2, "/ws/chat/a/", NULL);
    t2.fail_send = CCH_ELIMIT;
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ELIMIT);
    assert_int_equal(cch_send_binary(c, "x", 1), CCH_ELIMIT);
    cch_msg *m = msg("a", "{}");
    assert_int_equal(cch_send_body(c, m), CCH_ELIMIT);
    cch_msg_unref(m);
    t2.fail_close = CCH_ETRANSPORT;
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ETRANSPORT);
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED); /* closing anyway */
    cch_conn_disconnected(c, 1006);

    /* A failing reject is logged, the connection is made. */
    fx_tp t3 = {.fail_reject = CCH_ETRANSPORT};
    c = open_conn(f, &t3, "/nowhere", NULL);
    assert_int_equal(t3.rejects, 1);
    assert_non_null(strstr(f->log.last, "failed to reject"));
    cch_conn_disconnected(c, 1006);
}

/* ---- receive and send ---------------------------------------------------------------- */

static void test_receive_and_send(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(cch_conn_receive(c, "hello", 5, false), 0);
    assert_int_equal(rec.receives, 1);
    assert_string_equal(rec.received, "hello");
    assert_false(rec.received_binary);
    assert_int_equal(t.sends, 1);
    assert_string_equal(t.frames[0].data, "hello");
    assert_false(t.frames[0].binary);
    assert_int_equal(cch_conn_receive(c, "\0\1\2", 3, true), 0);
    assert_true(rec.received_binary);
    assert_int_equal(rec.received_len, 3);
    assert_int_equal(t.sends, 2);
    assert_true(t.frames[1].binary);
    assert_int_equal(t.frames[1].len, 3);
    assert_memory_equal(t.frames[1].data, "\0\1\2", 3);
    /* Empty messages are messages. */
    assert_int_equal(cch_conn_receive(c, NULL, 0, false), 0);
    assert_int_equal(rec.received_len, 0);
    assert_int_equal(cch_conn_receive(c, NULL, 3, false), CCH_EINVAL);
    assert_int_equal(cch_send_text(c, NULL, 0), 0);
    assert_int_equal(cch_send_text(c, NULL, 2), CCH_EINVAL);
    assert_int_equal(cch_send_binary(c, NULL, 2), CCH_EINVAL);
    assert_int_equal(cch_send_body(c, NULL), CCH_EINVAL);

    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.messages_received, 3);

    /* send_body hands the shared message to the transport. */
    cch_msg *m = msg("chat.message", "{\"message\":\"hi\"}");
    size_t before = t.sends;
    assert_int_equal(cch_send_body(c, m), 0);
    assert_ptr_equal(t.last_body, m);
    assert_true(t.frames[before].via_body);
    assert_string_equal(t.frames[before].data, "{\"message\":\"hi\"}");
    cch_conn_disconnected(c, 1000);

    /* Without send_body, send gets the body text. */
    fx_tp t2 = {0};
    fx_req r;
    fx_req_init(&r, "/ws/chat/a/", NULL);
    assert_int_equal(cch_conn_open(f->app, &r.req, &fx_transport_nobody, &t2, &c), 0);
    assert_int_equal(cch_send_body(c, m), 0);
    assert_int_equal(t2.sends, 1);
    assert_false(t2.frames[0].via_body);
    assert_false(t2.frames[0].binary);
    assert_string_equal(t2.frames[0].data, "{\"message\":\"hi\"}");
    cch_conn_disconnected(c, 1000);
    cch_msg_unref(m);
}

static void test_close(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    const int bad[] = {-1, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cch_close(c, bad[i], NULL), CCH_EINVAL);
    char reason[200];
    memset(reason, 'r', sizeof reason);
    reason[124] = '\0';
    assert_int_equal(cch_close(c, 1000, reason), CCH_EINVAL); /* 124 bytes */
    assert_int_equal(t.closes, 0);
    assert_true(cch_is_open(c));
    reason[123] = '\0';
    assert_int_equal(cch_close(c, 4999, reason), 0); /* 123 bytes */
    assert_int_equal(t.closes, 1);
    assert_int_equal(t.close_code, 4999);
    assert_int_equal(strlen(t.close_reason), 123);
    assert_false(cch_is_open(c));
    /* Double close, send after close, receive after close. */
    assert_int_equal(cch_close(c, 1000, NULL), CCH_ECLOSED);
    assert_int_equal(t.closes, 1);
    assert_int_equal(cch_send_text(c, "x", 1), CCH_ECLOSED);
    assert_int_equal(cch_send_binary(c, "x", 1), CCH_ECLOSED);
    cch_msg *m = msg("a", NULL);
    assert_int_equal(cch_send_body(c, m), CCH_ECLOSED);
    cch_msg_unref(m);
    assert_int_equal(cch_conn_receive(c, "x", 1, false), CCH_ESTATE);
    assert_int_equal(rec.receives, 0);
    cch_conn_disconnected(c, 4999);
    assert_int_equal(rec.disconnect_code, 4999);

    /* Code 0 means 1000, NULL reason means "". */
    fx_tp t2 = {0};
    c = open_conn(f, &t2, "/ws/chat/a/", NULL);
    assert_int_equal(cch_close(c, 0, NULL), 0);
    assert_int_equal(t2.close_code, 1000);
    assert_string_equal(t2.close_reason, "");
    cch_conn_disconnected(c, 1000);

    const int good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                        1014, 3000, 4000};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        fx_tp t3 = {0};
        c = open_conn(f, &t3, "/ws/chat/a/", NULL);
        assert_int_equal(cch_close(c, good[i], "ok"), 0);
        assert_int_equal(t3.close_code, good[i]);
        cch_conn_disconnected(c, good[i]);
    }
}

/* ---- groups -------------------------------------------------------------------------- */

static void test_groups(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    assert_int_equal(cch_group_add(c, "room.a"), 0);
    assert_int_equal(cch_group_add(c, "room.a"), 0); /* renew, one membership */
    assert_int_equal(cch_group_add(c, "room_b-1"), 0);
    assert_int_equal(members(f, "room.a"), 1);
    assert_int_equal(members(f, "room_b-1"), 1);
    assert_int_equal(c->n_groups, 2);

    /* Names. */
    assert_int_equal(cch_group_add(c, NULL), CCH_EINVAL);
    assert_int_equal(cch_group_add(c, ""), CCH_ENAME);
    assert_int_equal(cch_group_add(c, "a b"), CCH_ENAME);
    assert_int_equal(cch_group_add(c, "a!b"), CCH_ENAME);
    char big[CCH_NAME_MAX + 2];
    memset(big, 'g', sizeof big);
    big[CCH_NAME_MAX + 1] = '\0'; /* 100 bytes: too long */
    assert_int_equal(cch_group_add(c, big), CCH_ENAME);
    big[CCH_NAME_MAX] = '\0';     /* 99 bytes: fine */
    assert_int_equal(cch_group_add(c, big), 0);
    assert_int_equal(cch_group_discard(c, big), 0);
    assert_int_equal(cch_group_discard(c, NULL), CCH_EINVAL);
    assert_int_equal(cch_group_discard(c, ""), CCH_ENAME);
    assert_int_equal(cch_group_discard(c, "x y"), CCH_ENAME);

    /* Discarding a non-member, or a group that does not exist, is fine. */
    assert_int_equal(cch_group_discard(c, "never"), 0);
    assert_int_equal(cch_group_discard(c, "room_b-1"), 0);
    assert_int_equal(members(f, "room_b-1"), 0);
    assert_int_equal(cch_group_discard(c, "room_b-1"), 0);
    assert_int_equal(c->n_groups, 1);

    cch_msg *m = msg("test.ping", NULL);
    assert_int_equal(cch_group_send(c, NULL, m), CCH_EINVAL);
    assert_int_equal(cch_group_send(c, "room.a", NULL), CCH_EINVAL);
    assert_int_equal(cch_group_send(c, "bad name", m), CCH_ENAME);
    assert_int_equal(cch_group_send(c, "empty.group", m), 0);
    assert_int_equal(cch_channel_send(c, "bad name", m), CCH_ENAME);
    assert_int_equal(cch_channel_send(c, NULL, m), CCH_EINVAL);
    assert_int_equal(cch_channel_send(c, "specific.x", NULL), CCH_EINVAL);
    cch_msg_unref(m);
    cch_conn_disconnected(c, 1000);
}

/* The joined groups' names live in the connection's name buffer after the channel's
 * name while they fit (no allocation for a chat room's one group), and move to the
 * heap, intact, when they do not. */
static bool in_conn(const cch_conn *c, const char *p) {
    return (uintptr_t)p >= (uintptr_t)c && (uintptr_t)p < (uintptr_t)c + sizeof *c;
}

static void test_group_names_storage(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    char name[CCH_NAME_BUF];
    snprintf(name, sizeof name, "%s", cch_channel_name(c));
    assert_int_equal(cch_group_add(c, "chat_lobby"), 0);
    assert_true(in_conn(c, c->groups));
    assert_int_equal(cch_group_add(c, "g2"), 0);
    assert_true(in_conn(c, c->groups));
    char longer[41];
    memset(longer, 'l', 40);
    longer[40] = '\0';
    assert_int_equal(cch_group_add(c, longer), 0); /* does not fit: to the heap */
    assert_false(in_conn(c, c->groups));
    assert_string_equal(cch_channel_name(c), name);
    assert_int_equal(c->n_groups, 3);
    assert_int_equal(cch_group_add(c, "g2"), 0); /* still found: a renewal */
    assert_int_equal(c->n_groups, 3);
    assert_int_equal(cch_group_discard(c, longer), 0);
    assert_int_equal(cch_group_discard(c, "chat_lobby"), 0);
    assert_int_equal(cch_group_discard(c, "g2"), 0);
    assert_null(c->groups); /* emptied: the heap buffer is gone */
    assert_int_equal(cch_group_add(c, "g4"), 0); /* fits again: inline */
    assert_true(in_conn(c, c->groups));
    assert_int_equal(cch_group_add(c, longer), 0);
    assert_int_equal(members(f, "g4"), 1);
    assert_int_equal(members(f, longer), 1);
    assert_string_equal(cch_channel_name(c), name);
    cch_conn_disconnected(c, 1000); /* leaves both; frees the heap buffer */
    assert_int_equal(members(f, "g4"), 0);
    assert_int_equal(members(f, longer), 0);
}

static void test_group_send_and_channel_send(void **state) {
    fx *f = *state;
    fx_tp t1 = {0}, t2 = {0};
    cch_conn *a = open_conn(f, &t1, "/ws/chat/a/", NULL);
    cch_conn *b = open_conn(f, &t2, "/ws/chat/b/", NULL);
    assert_int_equal(cch_group_add(a, "g"), 0);
    assert_int_equal(cch_group_add(b, "g"), 0);
    cch_msg *m = msg("test.ping", NULL);

    assert_int_equal(cch_group_send(a, "g", m), 0);
    assert_int_equal(cch_app_dispatch(f->app, 0), 2);
    assert_int_equal(((struct cstate *)cch_state(a))->counter, 1); /* sender too */
    assert_int_equal(((struct cstate *)cch_state(b))->counter, 1);

    assert_int_equal(cch_group_send_others(a, "g", m), 0);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(((struct cstate *)cch_state(a))->counter, 1);
    assert_int_equal(((struct cstate *)cch_state(b))->counter, 2);

    assert_int_equal(cch_channel_send(a, cch_channel_name(b), m), 0);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(((struct cstate *)cch_state(b))->counter, 3);
    cch_msg_unref(m);

    /* Disconnect leaves every group it joined. */
    assert_int_equal(cch_group_add(a, "g2"), 0);
    assert_int_equal(cch_group_add(a, "g3"), 0);
    assert_int_equal(members(f, "g"), 2);
    cch_conn_disconnected(a, 1000);
    assert_int_equal(members(f, "g"), 1);
    assert_int_equal(members(f, "g2"), 0);
    assert_int_equal(members(f, "g3"), 0);
    cch_conn_disconnected(b, 1000);
    assert_int_equal(members(f, "g"), 0);
}

static void leave_in_disconnect(cch_conn *c, int code) {
    (void)code;
    /* Groups can still be changed while disconnecting; all are left afterwards. */
    assert_int_equal(cch_group_discard(c, "x1"), 0);
    assert_int_equal(cch_group_add(c, "x3"), 0);
}

static void test_groups_in_disconnect(void **state) {
    fx *f = *state;
    static const cch_consumer_class cls = {.disconnect = leave_in_disconnect};
    assert_int_equal(cch_app_route(f->app, "/d/", &cls, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/d/", NULL);
    assert_int_equal(cch_group_add(c, "x1"), 0);
    assert_int_equal(cch_group_add(c, "x2"), 0);
    cch_conn_disconnected(c, 1000);
    assert_int_equal(members(f, "x1"), 0);
    assert_int_equal(members(f, "x2"), 0);
    assert_int_equal(members(f, "x3"), 0);
}

/* ---- built-in message types ----------------------------------------------------------- */

static void test_builtin_send(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    cch_msg *m = msg("websocket.send", "{\"text\":\"hi \\\"there\\\" \\u00e9\"}");
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t.sends, 1);
    assert_string_equal(t.frames[0].data, "hi \"there\" \xc3\xa9");
    assert_false(t.frames[0].binary);

    /* A long text takes the heap path. */
    enum { n = 5000 };
    static char body[n + 20];
    snprintf(body, sizeof body, "{\"text\":\"%0*d\"}", n, 0);
    m = msg("websocket_send", body);
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t.sends, 2);
    assert_int_equal(t.frames[1].len, n);

    /* Bad bodies: logged and counted, nothing sent. */
    const char *bad[] = {"{}", "{\"text\":5}", "{\"text\":null}", "{\"bytes\":\"aGk=\"}"};
    for (size_t i = 0; i < 4; i++) {
        m = msg("websocket.send", bad[i]);
        assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
        cch_msg_unref(m);
    }
    assert_int_equal(cch_app_dispatch(f->app, 0), 4);
    assert_int_equal(t.sends, 2);
    assert_non_null(strstr(f->log.last, "websocket.send"));
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.handler_errors, 4);
    assert_int_equal(st.unknown_type, 0);
    cch_conn_disconnected(c, 1000);
}

/* websocket.send to a group: the text is decoded once, and every member's transport
 * gets the same derived message (so the adapter frames it once). */
static void test_builtin_send_shared_by_group(void **state) {
    fx *f = *state;
    fx_tp t[3] = {{0}};
    cch_conn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = open_conn(f, &t[i], "/ws/chat/a/", NULL);
        assert_int_equal(cch_group_add(c[i], "shared"), 0);
    }
    cch_msg *m = msg("websocket.send", "{\"text\":\"to all \\u00e9\"}");
    assert_int_equal(cch_group_send(c[0], "shared", m), 0);
    assert_int_equal(cch_app_dispatch(f->app, 0), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].sends, 1);
        assert_true(t[i].frames[0].via_body);
        assert_string_equal(t[i].frames[0].data, "to all \xc3\xa9");
        assert_ptr_equal(t[i].last_body, t[0].last_body);
    }
    assert_ptr_not_equal(t[0].last_body, m);
    cch_msg_unref(m);
    for (int i = 0; i < 3; i++) cch_conn_disconnected(c[i], 1000);
}

static void test_builtin_close(void **state) {
    fx *f = *state;
    struct {
        const char *body;
        int code;
        const char *reason;
        int errors;
    } cases[] = {
        {"{\"code\":4000,\"reason\":\"bye\"}", 4000, "bye", 0},
        {"{}", 1000, "", 0},
        {"{\"reason\":\"only\"}", 1000, "only", 0},
        {"{\"code\":\"x\"}", 1000, "", 1},
        {"{\"code\":1005}", 1000, "", 1},
        {"{\"code\":99999999999}", 1000, "", 1},
        {"{\"code\":3001,\"reason\":7}", 3001, "", 1},
    };
    uint64_t errors = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx_tp t = {0};
        cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
        cch_msg *m = msg("websocket.close", cases[i].body);
        assert_int_equal(cch_group_add(c, "closers"), 0);
        assert_int_equal(cch_group_send(c, "closers", m), 0);
        cch_msg_unref(m);
        assert_int_equal(cch_app_dispatch(f->app, 0), 1);
        assert_int_equal(t.closes, 1);
        assert_int_equal(t.close_code, cases[i].code);
        assert_string_equal(t.close_reason, cases[i].reason);
        assert_false(cch_is_open(c));
        errors += (uint64_t)cases[i].errors;
        cch_app_stats st;
        cch_app_stats_get(f->app, &st);
        assert_int_equal(st.handler_errors, errors);
        cch_conn_disconnected(c, t.close_code);
        assert_int_equal(rec.disconnect_code, cases[i].code);
    }
    /* A reason longer than 123 bytes is refused: closed with "" instead. */
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    char body[300];
    snprintf(body, sizeof body, "{\"code\":4001,\"reason\":\"%0130d\"}", 0);
    cch_msg *m = msg("websocket.close", body);
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t.close_code, 4001);
    assert_string_equal(t.close_reason, "");
    cch_conn_disconnected(c, 4001);

    /* Before accept, websocket.close rejects with 403. */
    fx_tp t2 = {0};
    script.mode = M_DEFER;
    c = open_conn(f, &t2, "/ws/chat/a/", NULL);
    m = msg("websocket.close", "{\"code\":4002}");
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t2.rejects, 1);
    assert_int_equal(t2.reject_status, 403);
    assert_int_equal(t2.closes, 0);
    cch_conn_disconnected(c, 1006);
}

static void test_dropped_when_closing(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    cch_msg *m = msg("test.ping", NULL);
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_close(c, 1000, NULL), 0);
    assert_int_equal(cch_app_dispatch(f->app, 0), 2);
    assert_int_equal(rec.handled, 0);
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.dropped_closed, 2);
    assert_int_equal(st.messages_dispatched, 0);
    cch_conn_disconnected(c, 1000);
}

static void test_pending_gets_messages(void **state) {
    fx *f = *state;
    fx_tp t = {0};
    script.mode = M_DEFER;
    script.group = "early";
    cch_conn *c = open_conn(f, &t, "/ws/chat/a/", NULL);
    cch_msg *m = msg("test.ping", NULL);
    assert_int_equal(cch_group_send(c, "early", m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(rec.handled, 1); /* handlers run before accept */
    cch_conn_disconnected(c, 1006);
    assert_int_equal(members(f, "early"), 0);
}

/* ---- out of memory -------------------------------------------------------------------- */

static void test_enomem_open(void **state) {
    (void)state;
    memset(&script, 0, sizeof script);
    memset(&rec, 0, sizeof rec);
    /* The fixture's app uses libc; build one on the counting allocator. */
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &t_cls, NULL), 0);
    script.group = "room";
    script.sub = "chat";
    const char *h[] = {"Sec-WebSocket-Protocol: chat", NULL};
    fx_req r;
    fx_req_init(&r, "/ws/chat/lobby/", h);
    size_t base = fx_live;
    int failures = 0;
    for (long k = 0; k < 100; k++) {
        fx_tp t = {0};
        cch_conn *c = NULL;
        alloc_budget = k;
        int saved_connects = rec.connects;
        int rc = cch_conn_open(app, &r.req, &fx_transport, &t, &c);
        alloc_budget = -1;
        if (rc < 0) {
            /* No connection, no callback. */
            assert_int_equal(rc, CCH_ENOMEM);
            assert_null(c);
            assert_int_equal(t.accepts + t.rejects, 0);
            assert_int_equal(rec.connects, saved_connects);
            assert_int_equal(fx_live, base);
            failures++;
            continue;
        }
        /* Made: a failure inside connect (group_add, accept) shows as 500. */
        assert_non_null(c);
        if (t.accepts == 1) {
            assert_string_equal(t.subprotocol, "chat");
            cch_conn_disconnected(c, 1000);
            assert_int_equal(fx_live, base);
            break;
        }
        cch_conn_disconnected(c, 1006);
        assert_int_equal(fx_live, base);
    }
    assert_true(failures >= 2); /* the connection and its scope buffer at least */
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_active, 0);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

static void test_enomem_group_add(void **state) {
    (void)state;
    memset(&script, 0, sizeof script);
    memset(&rec, 0, sizeof rec);
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_int_equal(cch_app_route(app, "/b/", &bare_cls, NULL), 0);
    fx_req r;
    fx_req_init(&r, "/b/", NULL);
    fx_tp t = {0};
    cch_conn *c;
    assert_int_equal(cch_conn_open(app, &r.req, &fx_transport, &t, &c), 0);
    size_t base = fx_live;
    for (long k = 0;; k++) {
        alloc_budget = k;
        int rc = cch_group_add(c, "grp");
        alloc_budget = -1;
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
        assert_int_equal(c->n_groups, 0);
        /* Nothing half-done: the group has no member. */
        group_size = 99;
        assert_int_equal(cch_layer_group_members(cch_app_layer(app), "grp", count_members,
                                                 NULL), 0);
        assert_int_equal(group_size, 0);
        (void)base;
        assert_true(k < 50);
    }
    assert_int_equal(c->n_groups, 1);
    cch_conn_disconnected(c, 1000);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

static void test_enomem_accept_subprotocol(void **state) {
    (void)state;
    memset(&script, 0, sizeof script);
    memset(&rec, 0, sizeof rec);
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &t_cls, NULL), 0);
    script.mode = M_DEFER;
    const char *h[] = {"Sec-WebSocket-Protocol: chat", NULL};
    fx_req r;
    fx_req_init(&r, "/ws/chat/a/", h);
    fx_tp t = {0};
    cch_conn *c;
    assert_int_equal(cch_conn_open(app, &r.req, &fx_transport, &t, &c), 0);
    alloc_budget = 0;
    assert_int_equal(cch_accept(c, "chat"), CCH_ENOMEM);
    alloc_budget = -1;
    assert_int_equal(t.accepts, 0);
    assert_int_equal(cch_accept(c, "chat"), 0);
    assert_string_equal(t.subprotocol, "chat");
    cch_conn_disconnected(c, 1000);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

/* ---- memory per connection ----------------------------------------------------------- */

static int chat_connect(cch_conn *c) {
    char group[CCH_NAME_BUF];
    snprintf(group, sizeof group, "chat_%s", cch_param(c, "room"));
    assert_int_equal(cch_group_add(c, group), 0);
    return cch_accept(c, NULL);
}

struct room_state {
    char group[CCH_NAME_BUF];
};

/* A layer whose channel names are longer than CCH__CONN_NAME_INLINE: the memory
 * layer with a long prefix in front of every name it makes. */
typedef struct long_layer {
    cch_layer base;
    cch_layer *inner;
} long_layer;

#define LONG_PREFIX "a-channel-prefix-long-enough-to-overflow"
#define INNER(l) (((long_layer *)(l))->inner)

static cch_receiver *ll_receiver_new(cch_layer *l, cch_wakeup_fn fn, void *ud) {
    return cch_layer_receiver_new(INNER(l), fn, ud);
}
static void ll_receiver_free(cch_layer *l, cch_receiver *r) {
    cch_layer_receiver_free(INNER(l), r);
}
static int ll_new_channel(cch_layer *l, const char *prefix, cch_receiver *r, void *ud,
                          char *name, size_t cap) {
    (void)prefix;
    return cch_layer_new_channel(INNER(l), LONG_PREFIX, r, ud, name, cap);
}
static int ll_release(cch_layer *l, const char *ch) {
    return cch_layer_release_channel(INNER(l), ch);
}
static int ll_send(cch_layer *l, const char *ch, const cch_msg *m) {
    return cch_layer_send(INNER(l), ch, m);
}
static int ll_receive(cch_layer *l, const char *ch, cch_msg **out) {
    return cch_layer_receive(INNER(l), ch, out);
}
static int ll_poll(cch_layer *l, cch_receiver *r, cch_delivery *out, size_t max) {
    return cch_layer_poll(INNER(l), r, out, max);
}
static int ll_group_add(cch_layer *l, const char *g, const char *ch) {
    return cch_layer_group_add(INNER(l), g, ch);
}
static int ll_group_discard(cch_layer *l, const char *g, const char *ch) {
    return cch_layer_group_discard(INNER(l), g, ch);
}
static int ll_group_send(cch_layer *l, const char *g, const cch_msg *m, const char *ex,
                         cch_group_send_result *res) {
    return cch_layer_group_send(INNER(l), g, m, ex, res);
}
static int ll_group_members(cch_layer *l, const char *g, cch_members_fn cb, void *ud) {
    return cch_layer_group_members(INNER(l), g, cb, ud);
}
static void ll_stats(cch_layer *l, cch_layer_stats *out) { cch_layer_stats_get(INNER(l), out); }
static void ll_destroy(cch_layer *l) {
    cch_layer_unref(INNER(l));
    free(l);
}
static const cch_layer_ops long_ops = {
    .kind = "long",
    .receiver_new = ll_receiver_new,
    .receiver_free = ll_receiver_free,
    .new_channel = ll_new_channel,
    .release_channel = ll_release,
    .send = ll_send,
    .receive = ll_receive,
    .poll = ll_poll,
    .group_add = ll_group_add,
    .group_discard = ll_group_discard,
    .group_send = ll_group_send,
    .group_members = ll_group_members,
    .stats = ll_stats,
    .destroy = ll_destroy,
};

static void test_long_channel_name(void **state) {
    (void)state;
    memset(&script, 0, sizeof script);
    memset(&rec, 0, sizeof rec);
    long_layer *ll = calloc(1, sizeof *ll);
    assert_non_null(ll);
    cch_layer_init(&ll->base, &long_ops);
    fx_alloc_install(); /* before the inner layer: it frees with this allocator */
    ll->inner = cch_memory_layer_new(NULL);
    assert_non_null(ll->inner);
    cch_app *app = cch_app_new(&ll->base);
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &t_cls, NULL), 0);
    script.group = "room";
    fx_req r;
    fx_req_init(&r, "/ws/chat/lobby/", NULL);
    size_t base = fx_live;
    /* the name's heap buffer may fail like any allocation: nothing is left behind */
    int failures = 0;
    cch_conn *c = NULL;
    fx_tp t = {0};
    for (long k = 0; k < 100; k++) {
        memset(&t, 0, sizeof t);
        alloc_budget = k;
        int rc = cch_conn_open(app, &r.req, &fx_transport, &t, &c);
        alloc_budget = -1;
        if (rc == 0 && t.accepts == 1) break;
        if (rc == 0) {
            cch_conn_disconnected(c, 1006); /* a failure inside connect: 500 */
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
            failures++;
        }
        assert_int_equal(fx_live, base);
        c = NULL;
    }
    assert_non_null(c);
    assert_true(failures >= 3); /* the connection (its scope inside), the layer, the name's buffer */
    const char *name = cch_channel_name(c);
    assert_true(c->channel_big); /* the longest name it could make: heap */
    assert_int_equal(strncmp(name, LONG_PREFIX ".", strlen(LONG_PREFIX) + 1), 0);
    /* the long name works everywhere the connection names its channel */
    cch_msg *m = cch_msg_new("t.msg", NULL, 0);
    assert_int_equal(cch_channel_send(c, name, m), 0);
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(cch_app_layer(app), "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 1);
    cch_msg_unref(m);
    cch_conn_disconnected(c, 1000); /* the channel's ring stays in the layer's pool */
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

static void test_memory_per_idle_connection(void **state) {
    (void)state;
    static const cch_consumer_class chat = {
        .state_size = sizeof(struct room_state),
        .connect = chat_connect,
    };
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &chat, NULL), 0);
    const char *h[] = {"Host: localhost:8000",
                       "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Firefox/120.0",
                       "Accept: */*",
                       "Accept-Language: en-US,en;q=0.5",
                       "Sec-WebSocket-Version: 13",
                       "Origin: http://localhost:8000",
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                       "Cookie: sessionid=0123456789abcdef0123456789abcdef; csrftoken=abc"};
    fx_req r;
    fx_req_init(&r, "/ws/chat/lobby/?token=abc", h);
    enum { N = 200 };
    static cch_conn *conns[N];
    static fx_tp tps[N];
    size_t base = fx_live;
    for (int i = 0; i < N; i++) {
        memset(&tps[i], 0, sizeof tps[i]);
        assert_int_equal(cch_conn_open(app, &r.req, &fx_transport, &tps[i], &conns[i]), 0);
        assert_int_equal(tps[i].accepts, 1);
    }
    size_t per_conn = (fx_live - base) / N;
    print_message("idle accepted connection in one group: %zu bytes (conn struct %zu, "
                  "scope %zu)\n",
                  per_conn, sizeof(struct cch_conn), sizeof(cch_scope));
    assert_true(per_conn <= 600); /* 572 on LP64 glibc: struct + state, scope buffer,
                                     channel (group names inline, no allocation) */
    for (int i = 0; i < N; i++) cch_conn_disconnected(conns[i], 1000);
    assert_int_equal(fx_live, base);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_accept),
        T(test_open_no_route),
        T(test_open_bare_class),
        T(test_open_invalid),
        T(test_reject_in_connect),
        T(test_connect_fails),
        T(test_close_before_accept),
        T(test_deferred_accept),
        T(test_subprotocols),
        T(test_transport_failures),
        T(test_receive_and_send),
        T(test_close),
        T(test_groups),
        T(test_group_names_storage),
        T(test_group_send_and_channel_send),
        T(test_groups_in_disconnect),
        T(test_builtin_send),
        T(test_builtin_send_shared_by_group),
        T(test_builtin_close),
        T(test_dropped_when_closing),
        T(test_pending_gets_messages),
        cmocka_unit_test(test_enomem_open),
        cmocka_unit_test(test_enomem_group_add),
        cmocka_unit_test(test_enomem_accept_subprotocol),
        cmocka_unit_test(test_long_channel_name),
        cmocka_unit_test(test_memory_per_idle_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
