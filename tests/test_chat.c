/* tests/test_chat.c - the chat scenarios of the core issue, with the communicator.
 *
 * The chat consumer is the tutorial's: a connection to /ws/chat/{room}/ joins group
 * "chat_<room>" (and "chat_all"); what a client sends becomes a "chat_message" sent
 * to the room's group; the chat_message handler forwards the body to its own socket,
 * unless the body carries a "users" list that does not name this connection's user.
 * Users come from an auth middleware reading ?token=u<id>. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <pthread.h>

#include "cchannels/cchannels.h"
#include "cchannels/json.h"

/* ---- the chat consumer -------------------------------------------------------- */

struct room {
    char group[CCH_NAME_BUF];
};

static int handler_calls, skipped, disconnects, last_disconnect_code;

static int chat_connect(cch_conn *c) {
    struct room *r = cch_state(c);
    int n = snprintf(r->group, sizeof r->group, "chat_%s", cch_param(c, "room"));
    if (n < 0 || (size_t)n >= sizeof r->group) return cch_reject(c, 400);
    int rc = cch_group_add(c, r->group);
    if (rc == 0) rc = cch_group_add(c, "chat_all");
    if (rc < 0) return rc;
    return cch_accept(c, NULL);
}

static void chat_receive(cch_conn *c, const char *text, size_t len, bool binary) {
    if (binary) return;
    struct room *r = cch_state(c);
    cch_msg *m = cch_msg_new("chat_message", text, len); /* the JSON becomes the body */
    if (!m) return;
    assert_int_equal(cch_group_send(c, r->group, m), 0); /* the sender too */
    cch_msg_unref(m);
}

/* Whether this connection's user should see m: yes unless the body has a "users"
 * list without this user's id. */
static bool for_me(cch_conn *c, const cch_msg *m) {
    const json_t *body = cch_msg_json(m);
    assert_non_null(body);
    json_t *users = json_object_get(body, "users");
    if (!users) return true;
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) {
        if (json_is_integer(u) && json_integer_value(u) == cch_user_id(c)) return true;
    }
    return false;
}

static void chat_message(cch_conn *c, const cch_msg *m) {
    handler_calls++;
    if (!for_me(c, m)) {
        skipped++;
        return;
    }
    assert_int_equal(cch_send_body(c, m), 0); /* framed once, shared by all members */
}

static void chat_disconnect(cch_conn *c, int code) {
    (void)c;
    disconnects++;
    last_disconnect_code = code;
}

static const cch_consumer_class chat = {
    .state_size = sizeof(struct room),
    .connect = chat_connect,
    .receive = chat_receive,
    .disconnect = chat_disconnect,
    .handlers = (const cch_handler[]){{"chat_message", chat_message}, {NULL, NULL}},
};

/* token "u<id>" -> user <id> */
static int resolve(cch_scope *s, const char *token, size_t len, void *ud) {
    (void)ud;
    (void)len;
    if (token[0] != 'u') return 403;
    char name[32];
    snprintf(name, sizeof name, "user%s", token + 1);
    return cch_scope_set_user(s, strtoll(token + 1, NULL, 10), name, NULL, NULL);
}

static cch_app *chat_app(cch_layer *layer) {
    cch_app *app = cch_app_new(layer ? layer : cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &chat, NULL), 0);
    cch_auth_options auth = {.query_param = "token", .resolve = resolve};
    assert_int_equal(cch_app_use_auth(app, &auth), 0);
    handler_calls = skipped = disconnects = last_disconnect_code = 0;
    return app;
}

static cch_communicator *join(cch_app *app, const char *path) {
    cch_communicator *t = cch_communicator_new(app, path, NULL, 0);
    assert_non_null(t);
    assert_int_equal(cch_communicator_connect(t), 0);
    return t;
}

static void send_str(cch_communicator *t, const char *text) {
    assert_int_equal(cch_communicator_send_text(t, text, strlen(text)), 0);
}

static void expect_text(cch_communicator *t, const char *want) {
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_false(bin);
    assert_int_equal(len, strlen(want));
    assert_string_equal(d, want);
}

static void expect_nothing(cch_communicator *t) {
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
}

/* ---- group membership, read through the layer --------------------------------- */

struct members {
    int calls, status;
    size_t n;
    char names[32][CCH_NAME_BUF];
};

static void collect(void *ud, int status, const char *const *names, size_t n) {
    struct members *m = ud;
    m->calls++;
    m->status = status;
    m->n = n;
    for (size_t i = 0; i < n && i < 32; i++)
        snprintf(m->names[i], sizeof m->names[i], "%s", names[i]);
}

static struct members members_of(cch_layer *l, const char *group) {
    struct members m = {0};
    assert_int_equal(cch_layer_group_members(l, group, collect, &m), 0);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.status, 0);
    return m;
}

static bool is_member(const struct members *m, const char *channel) {
    for (size_t i = 0; i < m->n && i < 32; i++)
        if (strcmp(m->names[i], channel) == 0) return true;
    return false;
}

/* ---- (a) ---------------------------------------------------------------------- */

static void a_every_member_receives_the_sender_too(void **state) {
    (void)state;
    cch_app *app = chat_app(NULL);
    cch_communicator *t[3];
    for (int i = 0; i < 3; i++) t[i] = join(app, "/ws/chat/lobby/");
    cch_communicator *elsewhere = join(app, "/ws/chat/kitchen/");

    send_str(t[1], "{\"message\":\"hello\"}");
    for (int i = 0; i < 3; i++) expect_text(t[i], "{\"message\":\"hello\"}");
    for (int i = 0; i < 3; i++) expect_nothing(t[i]);
    expect_nothing(elsewhere);
    assert_int_equal(handler_calls, 3);

    /* Messages keep their order. */
    send_str(t[0], "{\"message\":\"one\"}");
    send_str(t[2], "{\"message\":\"two\"}");
    for (int i = 0; i < 3; i++) {
        expect_text(t[i], "{\"message\":\"one\"}");
        expect_text(t[i], "{\"message\":\"two\"}");
        expect_nothing(t[i]);
    }
    /* The other room talks among itself. */
    send_str(elsewhere, "{\"message\":\"kitchen\"}");
    expect_text(elsewhere, "{\"message\":\"kitchen\"}");
    for (int i = 0; i < 3; i++) expect_nothing(t[i]);

    /* Not JSON: the consumer drops it; nobody receives anything. */
    send_str(t[0], "not json");
    for (int i = 0; i < 3; i++) expect_nothing(t[i]);

    for (int i = 0; i < 3; i++) cch_communicator_free(t[i]);
    cch_communicator_free(elsewhere);
    assert_int_equal(disconnects, 4);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- (b) ---------------------------------------------------------------------- */

static void b_users_list_reaches_only_those_users(void **state) {
    (void)state;
    enum { USERS = 15 };
    cch_app *app = chat_app(NULL);
    cch_communicator *t[USERS + 1];
    for (int id = 1; id <= USERS; id++) {
        char path[64];
        snprintf(path, sizeof path, "/ws/chat/lobby/?token=u%d", id);
        t[id] = join(app, path);
        assert_int_equal(cch_user_id(cch_communicator_conn(t[id])), id);
    }
    assert_int_equal(members_of(cch_app_layer(app), "chat_lobby").n, USERS);

    const char *dm = "{\"message\":\"psst\",\"users\":[12,13]}";
    send_str(t[1], dm);
    for (int id = 1; id <= USERS; id++) {
        if (id == 12 || id == 13) {
            expect_text(t[id], dm);
        }
        expect_nothing(t[id]);
    }
    /* Every member's handler ran, with its own user; 13 of them skipped it. */
    assert_int_equal(handler_calls, USERS);
    assert_int_equal(skipped, USERS - 2);

    /* Without a list, everyone; with an unknown user, no one. */
    send_str(t[5], "{\"message\":\"all\"}");
    for (int id = 1; id <= USERS; id++) expect_text(t[id], "{\"message\":\"all\"}");
    send_str(t[5], "{\"message\":\"ghost\",\"users\":[99]}");
    for (int id = 1; id <= USERS; id++) expect_nothing(t[id]);

    /* The same list sent by the layer directly (e.g. from a server task). */
    json_t *body = json_pack("{s:s, s:[i]}", "message", "to 7", "users", 7);
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_from_json(&m, "chat.message", body), 0);
    json_decref(body);
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(cch_app_layer(app), "chat_lobby", m, NULL, &res), 0);
    assert_int_equal(res.delivered, USERS);
    cch_msg_unref(m);
    for (int id = 1; id <= USERS; id++) {
        if (id == 7) expect_text(t[id], "{\"message\":\"to 7\",\"users\":[7]}");
        expect_nothing(t[id]);
    }

    for (int id = 1; id <= USERS; id++) cch_communicator_free(t[id]);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- (c) ---------------------------------------------------------------------- */

static void c_websocket_close_to_a_group_closes_every_member(void **state) {
    (void)state;
    cch_app *app = chat_app(NULL);
    cch_layer *l = cch_app_layer(app);
    cch_communicator *t[3];
    for (int i = 0; i < 3; i++) t[i] = join(app, "/ws/chat/doomed/");
    cch_communicator *elsewhere = join(app, "/ws/chat/safe/");

    cch_msg *m = cch_msg_new("websocket.close", "{\"code\":4000,\"reason\":\"room closed\"}",
                             36);
    assert_non_null(m);
    assert_int_equal(cch_layer_group_send(l, "chat_doomed", m, NULL, NULL), 0);
    cch_msg_unref(m);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(cch_communicator_close_code(t[i]), 4000);
        assert_string_equal(cch_communicator_close_reason(t[i]), "room closed");
        assert_int_equal(disconnects, i + 1); /* its disconnect has run */
        assert_int_equal(last_disconnect_code, 4000);
        assert_null(cch_communicator_conn(t[i]));
        const char *d;
        size_t len;
        bool bin;
        assert_int_equal(cch_communicator_receive(t[i], &d, &len, &bin), CCH_ECLOSED);
    }
    assert_int_equal(members_of(l, "chat_doomed").n, 0);

    /* The other room is untouched. */
    assert_int_equal(cch_communicator_close_code(elsewhere), 0);
    assert_true(cch_is_open(cch_communicator_conn(elsewhere)));
    send_str(elsewhere, "{\"message\":\"still here\"}");
    expect_text(elsewhere, "{\"message\":\"still here\"}");

    /* A close with no code in the body closes with 1000. */
    cch_communicator *u = join(app, "/ws/chat/plain/");
    m = cch_msg_new("websocket.close", NULL, 0);
    assert_int_equal(cch_layer_group_send(l, "chat_plain", m, NULL, NULL), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_communicator_close_code(u), 1000);
    assert_int_equal(last_disconnect_code, 1000);

    for (int i = 0; i < 3; i++) cch_communicator_free(t[i]);
    cch_communicator_free(elsewhere);
    cch_communicator_free(u);
    assert_int_equal(disconnects, 5);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- (d) ---------------------------------------------------------------------- */

static void d_disconnect_leaves_every_group(void **state) {
    (void)state;
    cch_app *app = chat_app(NULL);
    cch_layer *l = cch_app_layer(app);
    cch_communicator *a = join(app, "/ws/chat/lobby/");
    cch_communicator *b = join(app, "/ws/chat/lobby/");
    char chan_a[CCH_NAME_BUF], chan_b[CCH_NAME_BUF];
    snprintf(chan_a, sizeof chan_a, "%s", cch_channel_name(cch_communicator_conn(a)));
    snprintf(chan_b, sizeof chan_b, "%s", cch_channel_name(cch_communicator_conn(b)));
    /* a also joins a group of its own, through the connection */
    assert_int_equal(cch_group_add(cch_communicator_conn(a), "extra"), 0);

    struct members lobby = members_of(l, "chat_lobby"), all = members_of(l, "chat_all"),
                   extra = members_of(l, "extra");
    assert_int_equal(lobby.n, 2);
    assert_true(is_member(&lobby, chan_a) && is_member(&lobby, chan_b));
    assert_true(is_member(&all, chan_a) && is_member(&all, chan_b));
    assert_int_equal(extra.n, 1);
    assert_true(is_member(&extra, chan_a));

    assert_int_equal(cch_communicator_disconnect(a, 1001), 0);
    assert_int_equal(last_disconnect_code, 1001);
    lobby = members_of(l, "chat_lobby");
    all = members_of(l, "chat_all");
    extra = members_of(l, "extra");
    assert_int_equal(lobby.n, 1);
    assert_false(is_member(&lobby, chan_a));
    assert_true(is_member(&lobby, chan_b));
    assert_int_equal(all.n, 1);
    assert_false(is_member(&all, chan_a));
    assert_int_equal(extra.n, 0);

    /* A message to the room reaches only the one left. */
    send_str(b, "{\"message\":\"alone\"}");
    expect_text(b, "{\"message\":\"alone\"}");
    assert_int_equal(handler_calls, 1);

    /* Leaving via the consumer's close (server side) cleans up the same way. */
    assert_int_equal(cch_close(cch_communicator_conn(b), 4005, NULL), 0);
    assert_int_equal(cch_communicator_close_code(b), 4005);
    assert_int_equal(members_of(l, "chat_lobby").n, 0);
    assert_int_equal(members_of(l, "chat_all").n, 0);

    cch_communicator_free(a);
    cch_communicator_free(b);
    assert_int_equal(disconnects, 2);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- (e) ---------------------------------------------------------------------- */

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
    int wakeups;
};

static void on_wakeup(void *ud) {
    struct waker *w = ud;
    pthread_mutex_lock(&w->mu);
    w->woken = true;
    w->wakeups++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits for a wakeup and consumes it. The timeout only guards against a lost wakeup
 * hanging the test; it is not a timing assertion. */
static bool wait_wakeup(struct waker *w) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&w->mu);
    while (!w->woken) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) != 0) break;
    }
    bool woken = w->woken;
    w->woken = false;
    pthread_mutex_unlock(&w->mu);
    return woken;
}

static void waker_init(struct waker *w) {
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->woken = false;
    w->wakeups = 0;
}

static void waker_destroy(struct waker *w) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

struct sender {
    cch_layer *layer;
    int id, count;
    pthread_barrier_t *start;
    int failures;
};

static void *sender_thread(void *arg) {
    struct sender *s = arg;
    if (s->start) pthread_barrier_wait(s->start);
    for (int n = 0; n < s->count; n++) {
        char body[64];
        int len = snprintf(body, sizeof body, "{\"t\":%d,\"n\":%d}", s->id, n);
        cch_msg *m = cch_msg_new("chat_message", body, (size_t)len);
        cch_group_send_result res;
        if (!m || cch_layer_group_send(s->layer, "chat_lobby", m, NULL, &res) != 0 ||
            res.full != 0)
            s->failures++;
        cch_msg_unref(m);
    }
    return NULL;
}

static void e_group_send_from_another_thread_after_wakeup(void **state) {
    (void)state;
    struct waker w;
    waker_init(&w);
    cch_app *app = chat_app(NULL);
    cch_app_set_wakeup(app, on_wakeup, &w);
    cch_communicator *t[3];
    for (int i = 0; i < 3; i++) t[i] = join(app, "/ws/chat/lobby/");
    for (int i = 0; i < 3; i++) expect_nothing(t[i]);
    pthread_mutex_lock(&w.mu);
    w.woken = false;
    w.wakeups = 0;
    pthread_mutex_unlock(&w.mu);

    struct sender s = {.layer = cch_app_layer(app), .id = 9, .count = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sender_thread, &s), 0);
    assert_true(wait_wakeup(&w));
    pthread_join(th, NULL);
    assert_int_equal(s.failures, 0);
    assert_int_equal(w.wakeups, 1);  /* one receiver, woken once */
    /* The main thread now dispatches: each member's handler runs once. */
    assert_int_equal(cch_app_dispatch(app, 0), 3);
    assert_int_equal(handler_calls, 3);
    for (int i = 0; i < 3; i++) {
        expect_text(t[i], "{\"t\":9,\"n\":0}");
        expect_nothing(t[i]);
    }
    assert_int_equal(cch_app_dispatch(app, 0), 0);

    for (int i = 0; i < 3; i++) cch_communicator_free(t[i]);
    assert_int_equal(cch_app_free(app), 0);
    waker_destroy(&w);
}

static void e_concurrent_senders_lose_nothing(void **state) {
    (void)state;
    enum { THREADS = 4, PER_THREAD = 500, MEMBERS = 3 };
    struct waker w;
    waker_init(&w);
    cch_memory_layer_options opts = {.capacity = THREADS * PER_THREAD + 16};
    cch_layer *layer = cch_memory_layer_new(&opts);
    assert_non_null(layer);
    cch_app *app = chat_app(layer);
    cch_app_set_wakeup(app, on_wakeup, &w);
    cch_communicator *t[MEMBERS];
    for (int i = 0; i < MEMBERS; i++) t[i] = join(app, "/ws/chat/lobby/");

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    struct sender s[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct sender){.layer = layer, .id = i, .count = PER_THREAD, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, sender_thread, &s[i]), 0);
    }

    /* next[member][thread]: the n expected next; messages of one thread arrive in
     * the order it sent them. */
    int next[MEMBERS][THREADS] = {{0}};
    long total = 0;
    const long expected = (long)MEMBERS * THREADS * PER_THREAD;
    while (total < expected) {
        assert_true(wait_wakeup(&w));
        assert_true(cch_app_dispatch(app, 0) >= 0);
        for (int i = 0; i < MEMBERS; i++) {
            const char *d;
            size_t len;
            bool bin;
            int rc;
            while ((rc = cch_communicator_receive(t[i], &d, &len, &bin)) == 0) {
                int tid = -1, n = -1;
                assert_int_equal(sscanf(d, "{\"t\":%d,\"n\":%d}", &tid, &n), 2);
                assert_true(tid >= 0 && tid < THREADS);
                assert_int_equal(n, next[i][tid]);
                next[i][tid]++;
                total++;
            }
            assert_int_equal(rc, CCH_EAGAIN);
        }
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(total, expected);
    for (int i = 0; i < MEMBERS; i++)
        for (int k = 0; k < THREADS; k++) assert_int_equal(next[i][k], PER_THREAD);
    assert_int_equal(handler_calls, expected);

    cch_layer_stats ls;
    cch_layer_stats_get(layer, &ls);
    assert_int_equal(ls.full, 0);
    assert_int_equal(ls.dropped, 0);
    assert_int_equal(ls.expired, 0);
    cch_app_stats as;
    cch_app_stats_get(app, &as);
    assert_int_equal(as.messages_dispatched, (uint64_t)expected);

    for (int i = 0; i < MEMBERS; i++) cch_communicator_free(t[i]);
    assert_int_equal(cch_app_free(app), 0);
    waker_destroy(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_every_member_receives_the_sender_too),
        cmocka_unit_test(b_users_list_reaches_only_those_users),
        cmocka_unit_test(c_websocket_close_to_a_group_closes_every_member),
        cmocka_unit_test(d_disconnect_leaves_every_group),
        cmocka_unit_test(e_group_send_from_another_thread_after_wakeup),
        cmocka_unit_test(e_concurrent_senders_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
