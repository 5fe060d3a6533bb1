/* tests/test_redis_layer.c - the Redis layer against real redis-servers, each started
 * by the test on a free loopback port (persistence off) and stopped at the end:
 * send and receive, group_send to members spread over two layer instances (one queue
 * entry per process, checked in Redis), capacity, a sender outrunning a receiving
 * process (backpressure: nothing lost or reordered), expiry and group_expiry (with the
 * refresh of live memberships), sharding over two servers, a server restarted in the
 * middle of traffic, and the pub/sub format. Skips (77) without redis-server.
 *
 * Waits are bounded: deliveries are awaited on a condition variable, Redis work with
 * cch_redis_layer_sync. Only the expiry test waits for the wall clock (Redis's
 * expiry is in whole seconds): about two seconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "redis_fixture.h"
#include "redis_internal.h"

static fx_redis srv[2];

static cch_layer *layer_on(int nsrv, cch_redis_layer_options *o) {
    const char *urls[2] = {srv[0].url, srv[1].url};
    cch_redis_layer_options d = {0};
    if (!o) o = &d;
    o->urls = urls;
    o->n_urls = (size_t)nsrv;
    if (!o->reconnect_min_ms) o->reconnect_min_ms = 20;
    if (!o->reconnect_max_ms) o->reconnect_max_ms = 100;
    cch_layer *l = NULL;
    assert_int_equal(cch_redis_layer_new(o, &l), 0);
    return l;
}

static cch_msg *msg(const char *type, const char *body) {
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_create(&m, type, body, strlen(body)), 0);
    return m;
}

static void synced(cch_layer *l) { assert_int_equal(cch_redis_layer_sync(l, FX_WAIT_MS), 0); }

static redisReply *raw(redisContext *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static long long raw_int(int s, const char *fmt, ...) {
    redisContext *c = fx_raw(&srv[s]);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static void flushall(int n) {
    for (int i = 0; i < n; i++) {
        redisContext *c = fx_raw(&srv[i]);
        assert_non_null(c);
        freeReplyObject(raw(c, "FLUSHALL"));
        redisFree(c);
    }
}

static int setup_one(void **state) {
    (void)state;
    if (!fx_redis_available()) return 0;
    return fx_redis_start(&srv[0]);
}
static int setup_two(void **state) {
    (void)state;
    if (!fx_redis_available()) return 0;
    if (fx_redis_start(&srv[0]) != 0) return -1;
    return fx_redis_start(&srv[1]);
}
static int teardown(void **state) {
    (void)state;
    fx_redis_stop(&srv[0]);
    fx_redis_stop(&srv[1]);
    srv[0].port = srv[1].port = 0;
    return 0;
}

/* presence answers arrive on the I/O thread */
typedef struct members {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls, status;
    size_t n;
    char names[16][CCH_NAME_BUF];
} members;

static void members_fn(void *ud, int status, const char *const *names, size_t n) {
    members *m = ud;
    pthread_mutex_lock(&m->mu);
    m->calls++;
    m->status = status;
    m->n = n;
    for (size_t i = 0; i < n && i < 16; i++) snprintf(m->names[i], CCH_NAME_BUF, "%s", names[i]);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static size_t members_of(cch_layer *l, const char *group, members *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    assert_int_equal(cch_layer_group_members(l, group, members_fn, m), 0);
    struct timespec dl;
    fx_deadline(&dl, FX_WAIT_MS);
    pthread_mutex_lock(&m->mu);
    while (m->calls == 0 && pthread_cond_timedwait(&m->cv, &m->mu, &dl) == 0) {
    }
    pthread_mutex_unlock(&m->mu);
    assert_int_equal(m->calls, 1);
    assert_int_equal(m->status, 0);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    return m->n;
}

static bool listed(const members *m, const char *name) {
    for (size_t i = 0; i < m->n && i < 16; i++)
        if (!strcmp(m->names[i], name)) return true;
    return false;
}

/* Decodes a queue member read from Redis (12 random bytes + msgpack). */
static void decode_member(const redisReply *e, rl_incoming *in) {
    char err[160];
    assert_int_equal(e->type, REDIS_REPLY_STRING);
    assert_true(e->len > 12);
    int rc = rl_decode(in, e->str + 12, e->len - 12, err, sizeof err);
    if (rc) fail_msg("%s", err);
}

static bool chan_has(const rl_incoming *in, const char *name) {
    const msgpack_object *c = in->chan;
    if (!c || c->type != MSGPACK_OBJECT_ARRAY) return false;
    for (uint32_t i = 0; i < c->via.array.size; i++)
        if (c->via.array.ptr[i].via.str.size == strlen(name) &&
            !memcmp(c->via.array.ptr[i].via.str.ptr, name, strlen(name)))
            return true;
    return false;
}

#define SKIP_WITHOUT_REDIS()                                                                  \
    do {                                                                                      \
        if (!fx_redis_available()) skip();                                                    \
    } while (0)

/* ---- send / receive --------------------------------------------------------------------------- */

static const char body_all[] =
    "{\"message\":\"h\\u00e9\",\"n\":-7,\"big\":9007199254740993,\"f\":0.1,"
    "\"l\":[1,null,true,{\"x\":[]}],\"e\":{}}";
static const char body_all_received[] =
    "{\"message\":\"h\xc3\xa9\",\"n\":-7,\"big\":9007199254740993,\"f\":0.1,"
    "\"l\":[1,null,true,{\"x\":[]}],\"e\":{}}";

static void test_send_receive(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_redis_layer_options ob = {.capacity = 3};
    cch_layer *a = layer_on(1, NULL), *b = layer_on(1, &ob);
    fx_recv wb, wb2;
    fx_recv_init(&wb, b);
    fx_recv_init(&wb2, b);
    char cb[CCH_NAME_BUF], cb2[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(b, NULL, wb.r, (void *)1, cb, sizeof cb), 0);
    assert_int_equal(cch_layer_new_channel(b, NULL, wb2.r, (void *)2, cb2, sizeof cb2), 0);
    assert_int_equal(strncmp(cb, "specific.", 9), 0);
    assert_non_null(strstr(cb, cch_redis_layer_process(b)));
    synced(a);
    synced(b);
    assert_true(cch_redis_layer_connected(a));

    /* A -> B through Redis: the exact type and fields */
    cch_msg *m = msg("chat.message", body_all);
    assert_int_equal(cch_layer_send(a, cb, m), 0);
    synced(a);
    cch_delivery d[8];
    assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].channel_ud, (void *)1);
    assert_string_equal(cch_msg_type(d[0].msg), "chat.message");
    assert_string_equal(cch_msg_body(d[0].msg), body_all_received);
    fx_drop(d, 1);

    /* B to its own channel: in-process, full at capacity (3), synchronously */
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(b, cb, m), 0);
    assert_int_equal(cch_layer_send(b, cb, m), CCH_ECHANFULL);
    assert_int_equal(cch_layer_poll(b, wb.r, d, 8), 3);
    fx_drop(d, 3);
    /* through Redis, the in-process queue is bounded the same way: 3, then full. The
     * message to cb2 after them shows that B has handled all four. */
    for (int i = 0; i < 4; i++) assert_int_equal(cch_layer_send(a, cb, m), 0);
    cch_msg *last = msg("t", "{\"last\":true}");
    assert_int_equal(cch_layer_send(a, cb2, last), 0);
    assert_int_equal(fx_collect(&wb2, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].channel_ud, (void *)2);
    fx_drop(d, 1);
    assert_int_equal(cch_layer_poll(b, wb.r, d, 8), 3);
    fx_drop(d, 3);
    cch_layer_stats st;
    cch_layer_stats_get(b, &st);
    assert_int_equal(st.full, 2); /* one in-process, one through Redis */

    /* the queue entry of a direct send carries "__asgi_channel__" as a string */
    assert_int_equal(cch_layer_send(a, "specific.gone!x", m), 0);
    synced(a);
    redisContext *c = fx_raw(&srv[0]);
    redisReply *r = raw(c, "ZRANGE asgispecific.gone! 0 -1");
    assert_int_equal(r->elements, 1);
    rl_incoming in;
    decode_member(r->element[0], &in);
    assert_int_equal(in.chan->type, MSGPACK_OBJECT_STR);
    assert_memory_equal(in.chan->via.str.ptr, "specific.gone!x", 15);
    assert_string_equal(cch_msg_type(in.msg), "chat.message");
    rl_incoming_done(&in);
    freeReplyObject(r);
    r = raw(c, "TTL asgispecific.gone!");
    assert_true(r->integer > 0 && r->integer <= 60);
    freeReplyObject(r);

    /* a plain channel: receive asks Redis in the background */
    assert_int_equal(cch_layer_send(a, "plainq", m), 0);
    synced(a);
    cch_msg *out = NULL;
    assert_int_equal(cch_layer_receive(b, "plainq", &out), CCH_EAGAIN);
    synced(b);
    assert_int_equal(cch_layer_receive(b, "plainq", &out), 0);
    assert_string_equal(cch_msg_body(out), body_all_received);
    cch_msg_unref(out);
    assert_int_equal(cch_layer_receive(b, "plainq", &out), CCH_EAGAIN);
    synced(b);
    assert_int_equal(cch_layer_receive(b, "plainq", &out), CCH_EAGAIN); /* empty now */
    /* someone else's channel cannot be received on */
    assert_int_equal(cch_layer_receive(b, "specific.gone!x", &out), CCH_EINVAL);
    redisFree(c);

    cch_msg_unref(last);
    cch_msg_unref(m);
    cch_layer_release_channel(b, cb);
    cch_layer_release_channel(b, cb2);
    fx_recv_free(&wb);
    fx_recv_free(&wb2);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* ---- groups across two instances ---------------------------------------------------------------- */

static void test_group_send_two_instances(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_layer *a = layer_on(1, NULL), *b = layer_on(1, NULL);
    fx_recv wa, wb;
    fx_recv_init(&wa, a);
    fx_recv_init(&wb, b);
    char ca[2][CCH_NAME_BUF], cb[3][CCH_NAME_BUF];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cch_layer_new_channel(a, NULL, wa.r, (void *)(intptr_t)(i + 1), ca[i],
                                               CCH_NAME_BUF), 0);
        assert_int_equal(cch_layer_group_add(a, "room", ca[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cch_layer_new_channel(b, NULL, wb.r, (void *)(intptr_t)(i + 1), cb[i],
                                               CCH_NAME_BUF), 0);
        assert_int_equal(cch_layer_group_add(b, "room", cb[i]), 0);
    }
    /* two consumers of a foreign process (nobody pops its queue) */
    redisContext *c = fx_raw(&srv[0]);
    freeReplyObject(raw(c, "ZADD asgi:group:room %f specific.fake!a %f specific.fake!b",
                        (double)time(NULL), (double)time(NULL)));
    synced(a);
    synced(b);

    members pm;
    assert_int_equal(members_of(a, "room", &pm), 7);
    assert_true(listed(&pm, ca[0]) && listed(&pm, cb[2]) && listed(&pm, "specific.fake!a"));

    cch_msg *m = msg("chat_message", "{\"message\":\"to all\"}");
    assert_int_equal(cch_layer_group_send(a, "room", m, ca[1], NULL), 0); /* not ca[1] */
    synced(a);
    cch_delivery d[8];
    assert_int_equal(fx_collect(&wa, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].channel_ud, (void *)1);
    fx_drop(d, 1);
    assert_int_equal(fx_collect(&wb, d, 3, FX_WAIT_MS), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        seen |= 1 << ((intptr_t)d[i].channel_ud - 1);
        assert_string_equal(cch_msg_body(d[i].msg), "{\"message\":\"to all\"}");
    }
    assert_int_equal(seen, 7);
    assert_ptr_equal(d[0].msg, d[1].msg); /* one message shared by B's members */
    fx_drop(d, 3);
    assert_int_equal(cch_layer_poll(a, wa.r, d, 8), 0);

    /* the foreign process got ONE queue entry listing both of its consumers */
    redisReply *r = raw(c, "ZRANGE asgispecific.fake! 0 -1 WITHSCORES");
    assert_int_equal(r->elements, 2);
    rl_incoming in;
    decode_member(r->element[0], &in);
    assert_int_equal(in.chan->via.array.size, 2);
    assert_true(chan_has(&in, "specific.fake!a") && chan_has(&in, "specific.fake!b"));
    assert_string_equal(cch_msg_type(in.msg), "chat_message");
    assert_string_equal(cch_msg_body(in.msg), "{\"message\":\"to all\"}");
    rl_incoming_done(&in);
    double score = strtod(r->element[1]->str, NULL);
    assert_true(score > (double)time(NULL) - 5 && score < (double)time(NULL) + 5);
    freeReplyObject(r);

    cch_layer_stats st;
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.sent, 1 + 3 + 2);
    assert_int_equal(st.errors, 0);

    /* leaving: the next group_send skips it */
    assert_int_equal(cch_layer_group_discard(b, "room", cb[2]), 0);
    synced(b);
    assert_int_equal(members_of(b, "room", &pm), 6);
    assert_int_equal(cch_layer_group_send(a, "room", m, NULL, NULL), 0);
    synced(a);
    assert_int_equal(fx_collect(&wb, d, 2, FX_WAIT_MS), 2);
    assert_true(d[0].channel_ud != (void *)3 && d[1].channel_ud != (void *)3);
    fx_drop(d, 2);
    assert_int_equal(fx_collect(&wa, d, 2, FX_WAIT_MS), 2);
    fx_drop(d, 2);

    /* group_sends in a row (one ZRANGE serves them, bucketed once per left-out member):
     * each leaves out its own */
    const char *excl[5] = {NULL, ca[0], ca[0], cb[0], NULL};
    cch_msg *ms[5];
    for (int k = 0; k < 5; k++) {
        char body[32];
        snprintf(body, sizeof body, "{\"k\":%d}", k);
        ms[k] = msg("chat_message", body);
        assert_int_equal(cch_layer_group_send(a, "room", ms[k], excl[k], NULL), 0);
    }
    synced(a);
    cch_delivery dd[16];
    /* A: ca[0] (ud 1) gets 0, 3, 4; ca[1] all five. B: cb[0] (ud 1) 0, 1, 2, 4; cb[1] five */
    static const int want_a[2][5] = {{1, 0, 0, 1, 1}, {1, 1, 1, 1, 1}};
    static const int want_b[2][5] = {{1, 1, 1, 0, 1}, {1, 1, 1, 1, 1}};
    for (int side = 0; side < 2; side++) {
        fx_recv *w = side ? &wb : &wa;
        int n = side ? 9 : 8, got[2][5] = {{0}};
        assert_int_equal(fx_collect(w, dd, n, FX_WAIT_MS), n);
        for (int i = 0; i < n; i++) {
            int k = -1;
            for (int j = 0; j < 5; j++)
                if (dd[i].msg == ms[j] || !strcmp(cch_msg_body(dd[i].msg), cch_msg_body(ms[j])))
                    k = j;
            assert_true(k >= 0);
            got[(intptr_t)dd[i].channel_ud - 1][k]++;
        }
        fx_drop(dd, (size_t)n);
        assert_memory_equal(got, side ? want_b : want_a, sizeof got);
        assert_int_equal(cch_layer_poll(side ? b : a, w->r, dd, 16), 0);
    }
    for (int k = 0; k < 5; k++) cch_msg_unref(ms[k]);

    redisFree(c);
    cch_msg_unref(m);
    fx_recv_free(&wa);
    fx_recv_free(&wb);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* ---- capacity ------------------------------------------------------------------------------------- */

static void test_capacity(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_redis_capacity caps[1] = {{"specific.fake!*", 2}};
    cch_redis_layer_options o = {.channel_capacity = caps, .n_channel_capacity = 1};
    cch_layer *a = layer_on(1, &o);
    redisContext *c = fx_raw(&srv[0]);
    freeReplyObject(raw(c, "ZADD asgi:group:cap %f specific.fake!a", (double)time(NULL)));
    cch_msg *m = msg("t", "{}");
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_group_send(a, "cap", m, NULL, NULL), 0);
    synced(a);
    redisReply *r = raw(c, "ZCARD asgispecific.fake!");
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
    cch_layer_stats st;
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.sent, 2);
    assert_int_equal(st.full, 1);
    /* a direct send to the full queue is refused by Redis, counted */
    assert_int_equal(cch_layer_send(a, "specific.fake!a", m), 0);
    synced(a);
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.full, 2);
    r = raw(c, "ZCARD asgispecific.fake!");
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
    /* other channels keep the default capacity (100) */
    for (int i = 0; i < 5; i++) assert_int_equal(cch_layer_send(a, "specific.other!a", m), 0);
    synced(a);
    r = raw(c, "ZCARD asgispecific.other!");
    assert_int_equal(r->integer, 5);
    freeReplyObject(r);
    redisFree(c);
    cch_msg_unref(m);
    cch_layer_unref(a);
}

/* The loops of one process pause for each other through cch_layer_congested: the
 * Redis layer reports its local channels' congestion (more than half the capacity
 * queued on a channel bound to a receiver), and clears it when they are polled. */
static void test_congested_follows_local_channels(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_redis_layer_options o = {.capacity = 4};
    cch_layer *a = layer_on(1, &o);
    fx_recv w;
    fx_recv_init(&w, a);
    char ch[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(a, NULL, w.r, NULL, ch, CCH_NAME_BUF), 0);
    assert_false(cch_layer_congested(a));
    cch_msg *m = msg("t", "{}");
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(a, ch, m), 0); /* 3 of 4 */
    cch_msg_unref(m);
    assert_true(cch_layer_congested(a));
    cch_delivery d[4];
    int n = fx_collect(&w, d, 3, 50);
    assert_int_equal(n, 3);
    fx_drop(d, n);
    assert_false(cch_layer_congested(a));
    cch_layer_release_channel(a, ch);
    fx_recv_free(&w);
    cch_layer_unref(a);
}

/* A sender that outruns another process: its queue key (capacity 5) and its
 * in-process channel (capacity 5 too) fill up, and nothing may be lost or reordered:
 * the layer waits for room (the sender's own echo waits with it) instead of dropping,
 * as long as the receiver reads within RL_FULL_PATIENCE_MS. */
static void test_group_send_backpressure(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    enum { N = 60 };
    cch_redis_layer_options o = {.capacity = 5};
    cch_layer *a = layer_on(1, &o), *b = layer_on(1, &o);
    fx_recv w[2];
    fx_recv_init(&w[0], a);
    fx_recv_init(&w[1], b);
    char ch[2][CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(a, NULL, w[0].r, NULL, ch[0], CCH_NAME_BUF), 0);
    assert_int_equal(cch_layer_new_channel(b, NULL, w[1].r, NULL, ch[1], CCH_NAME_BUF), 0);
    assert_int_equal(cch_layer_group_add(a, "bp", ch[0]), 0);
    assert_int_equal(cch_layer_group_add(b, "bp", ch[1]), 0);
    synced(a);
    synced(b);
    for (int i = 0; i < N; i++) { /* all at once: 12 times what either side holds */
        char body[32];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        cch_msg *m = msg("seq", body);
        assert_int_equal(cch_layer_group_send(a, "bp", m, NULL, NULL), 0);
        cch_msg_unref(m);
    }
    struct timespec ts = {0, 300000000}; /* nobody reads for a while: everything fills */
    nanosleep(&ts, NULL);
    int got[2] = {0, 0};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int k = 0; k < 2; k++) {
            cch_delivery d[N];
            int n = fx_collect(&w[k], d, N - got[k], 50);
            for (int i = 0; i < n; i++) {
                char want[32];
                snprintf(want, sizeof want, "{\"n\":%d}", got[k] + i);
                assert_string_equal(cch_msg_body(d[i].msg), want); /* in order, no gap */
            }
            fx_drop(d, n);
            got[k] += n;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((got[0] < N || got[1] < N) && t.tv_sec - t0.tv_sec < 10);
    assert_int_equal(got[0], N);
    assert_int_equal(got[1], N);
    synced(a);
    synced(b);
    cch_layer_stats st;
    for (int k = 0; k < 2; k++) {
        cch_layer_stats_get(k ? b : a, &st);
        assert_int_equal(st.full, 0);
        assert_int_equal(st.dropped, 0);
        assert_int_equal(st.errors, 0);
    }
    fx_recv_free(&w[0]);
    fx_recv_free(&w[1]);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* A channel of ours full for longer than RL_FULL_PATIENCE_MS is given up on: while it
 * stays full, what does not fit is dropped at once (counted in `full`), and
 * deliveries to the other members do not wait behind it any more. */
static void test_full_channel_given_up(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_redis_layer_options o = {.capacity = 2};
    cch_layer *a = layer_on(1, &o);
    fx_recv w;
    fx_recv_init(&w, a);
    char stuck[CCH_NAME_BUF], live[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(a, NULL, NULL, NULL, stuck, CCH_NAME_BUF), 0);
    assert_int_equal(cch_layer_new_channel(a, NULL, w.r, NULL, live, CCH_NAME_BUF), 0);
    assert_int_equal(cch_layer_group_add(a, "gu", stuck), 0);
    assert_int_equal(cch_layer_group_add(a, "gu", live), 0);
    synced(a);
    cch_msg *m = msg("t", "{}");
    cch_delivery d[4];
    for (int i = 0; i < 3; i++) { /* the third waits for room in `stuck`, then is dropped */
        assert_int_equal(cch_layer_group_send(a, "gu", m, NULL, NULL), 0);
        assert_int_equal(fx_collect(&w, d, 1, FX_WAIT_MS), 1);
        fx_drop(d, 1);
    }
    struct timespec ts = {2, 300000000}; /* past RL_FULL_PATIENCE_MS */
    nanosleep(&ts, NULL);
    for (int i = 0; i < 3; i++) /* `stuck` still full: `live` gets each of them at once */
        assert_int_equal(cch_layer_group_send(a, "gu", m, NULL, NULL), 0);
    assert_int_equal(fx_collect(&w, d, 3, 500), 3);
    fx_drop(d, 3);
    synced(a);
    cch_layer_stats st;
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.full, 1 + 3);
    assert_int_equal(st.dropped, 0);
    cch_msg_unref(m);
    fx_recv_free(&w);
    cch_layer_unref(a);
}

/* ---- expiry and group_expiry ------------------------------------------------------------------------- */

static void test_expiry(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    cch_redis_layer_options o = {.expiry_s = 1, .group_expiry_s = 1};
    cch_layer *a = layer_on(1, &o);
    fx_recv wa, wq;
    fx_recv_init(&wa, a);
    fx_recv_init(&wq, a);
    char ca[CCH_NAME_BUF], cq[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(a, NULL, wa.r, NULL, ca, sizeof ca), 0);
    assert_int_equal(cch_layer_new_channel(a, NULL, wq.r, NULL, cq, sizeof cq), 0);
    assert_int_equal(cch_layer_group_add(a, "ge", ca), 0); /* ours: refreshed */
    redisContext *c = fx_raw(&srv[0]);
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    /* entries older than expiry / group_expiry, as another process left them */
    freeReplyObject(raw(c, "ZADD asgiexpq2 %ld old-message", (long)t0.tv_sec - 10));
    freeReplyObject(raw(c, "ZADD asgi:group:ge %ld specific.fake!old", (long)t0.tv_sec - 10));
    cch_msg *m1 = msg("t", "{\"n\":1}"), *m2 = msg("t", "{\"n\":2}");
    assert_int_equal(cch_layer_send(a, "expq", m1), 0);      /* its key lives 1 s */
    assert_int_equal(cch_layer_send(a, "expq2", m1), 0);     /* removes old-message */
    assert_int_equal(cch_layer_group_send(a, "ge", m1, NULL, NULL), 0); /* removes fake!old */
    assert_int_equal(cch_layer_send(a, cq, m1), 0);          /* in-process, never polled */
    synced(a);
    cch_layer_stats st;
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.groups_expired, 1);
    assert_int_equal(raw_int(0, "ZCARD asgiexpq2"), 1);
    assert_int_equal(raw_int(0, "ZCARD asgi:group:ge"), 1);
    long long ttl = raw_int(0, "TTL asgiexpq");
    assert_true(ttl >= 0 && ttl <= 1);
    cch_delivery d[2];
    assert_int_equal(fx_collect(&wa, d, 1, FX_WAIT_MS), 1);
    fx_drop(d, 1);

    /* Redis time is wall-clock seconds: wait for the second after next (1-2 s) */
    struct timespec until = {t0.tv_sec + 2, 50000000};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
    assert_int_equal(raw_int(0, "EXISTS asgiexpq"), 0); /* the key's TTL ran out */
    /* our membership was refreshed (re-added every group_expiry / 3, at least every
     * 0.5 s), so it outlives group_expiry */
    assert_int_equal(cch_layer_group_send(a, "ge", m2, NULL, NULL), 0);
    synced(a);
    assert_int_equal(fx_collect(&wa, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].msg, m2);
    fx_drop(d, 1);
    redisReply *r = raw(c, "ZSCORE asgi:group:ge %s", ca);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_true(strtod(r->str, NULL) > (double)t0.tv_sec + 1);
    freeReplyObject(r);
    /* the in-process message expired too (expiry applies there as well) */
    assert_int_equal(cch_layer_poll(a, wq.r, d, 2), 0);
    cch_layer_stats_get(a, &st);
    assert_int_equal(st.expired, 2);
    redisFree(c);
    cch_msg_unref(m1);
    cch_msg_unref(m2);
    cch_layer_release_channel(a, ca);
    cch_layer_release_channel(a, cq);
    fx_recv_free(&wa);
    fx_recv_free(&wq);
    cch_layer_unref(a);
}

/* ---- sharding ------------------------------------------------------------------------------------------ */

static void test_sharding(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(2);
    cch_layer *a = layer_on(2, NULL), *b = layer_on(2, NULL);
    fx_recv wb;
    fx_recv_init(&wb, b);
    char cb[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(b, NULL, wb.r, NULL, cb, sizeof cb), 0);
    /* groups on each shard */
    char names[16][8];
    const char *groups[2] = {NULL, NULL};
    for (int i = 0; i < 16; i++) {
        snprintf(names[i], sizeof names[i], "grp%d", i);
        uint32_t h = rl_hash(names[i], strlen(names[i]), 2);
        if (!groups[h]) groups[h] = names[i];
    }
    assert_non_null(groups[0]);
    assert_non_null(groups[1]);
    for (int i = 0; i < 2; i++) assert_int_equal(cch_layer_group_add(b, groups[i], cb), 0);
    synced(a);
    synced(b);
    /* each group's set lives on its shard only */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(raw_int(i, "EXISTS asgi:group:%s", groups[i]), 1);
        assert_int_equal(raw_int(1 - i, "EXISTS asgi:group:%s", groups[i]), 0);
    }
    cch_msg *m = msg("t", "{\"x\":1}");
    cch_delivery d[4];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cch_layer_group_send(a, groups[i], m, NULL, NULL), 0);
        assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1);
        fx_drop(d, 1);
    }
    /* direct sends: hashed on the non-local name, where B pops */
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(a, cb, m), 0);
    assert_int_equal(fx_collect(&wb, d, 3, FX_WAIT_MS), 3);
    fx_drop(d, 3);
    /* a foreign process's queue: on the shard of its non-local name */
    uint32_t qs = rl_hash("specific.fake!", 14, 2);
    redisContext *c = fx_raw(&srv[0]);
    redisContext *c1 = fx_raw(&srv[1]);
    redisContext *gc = rl_hash(groups[0], strlen(groups[0]), 2) == 0 ? c : c1;
    freeReplyObject(raw(gc, "ZADD asgi:group:%s %f specific.fake!a", groups[0], (double)time(NULL)));
    assert_int_equal(cch_layer_group_send(a, groups[0], m, NULL, NULL), 0);
    assert_int_equal(cch_layer_send(a, "specific.fake!b", m), 0);
    synced(a);
    assert_int_equal(raw_int((int)qs, "ZCARD asgispecific.fake!"), 2);
    assert_int_equal(raw_int(1 - (int)qs, "EXISTS asgispecific.fake!"), 0);
    assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1); /* B is in groups[0] too */
    fx_drop(d, 1);
    redisFree(c);
    redisFree(c1);
    cch_msg_unref(m);
    fx_recv_free(&wb);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* ---- a server restart in the middle of traffic ---------------------------------------------------------- */

static int count_bodies(cch_delivery *d, int n, const char *body) {
    int k = 0;
    for (int i = 0; i < n; i++) k += !strcmp(cch_msg_body(d[i].msg), body);
    return k;
}

/* Counts "lost the connection" log lines, to wait for a layer to notice. */
typedef struct losses {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} losses;

static void loss_log(void *ud, int level, const char *line) {
    losses *x = ud;
    (void)level;
    if (!strstr(line, "lost the connection")) return;
    pthread_mutex_lock(&x->mu);
    x->n++;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void wait_losses(losses *x, int n) {
    struct timespec dl;
    fx_deadline(&dl, FX_WAIT_MS);
    pthread_mutex_lock(&x->mu);
    while (x->n < n && pthread_cond_timedwait(&x->cv, &x->mu, &dl) == 0) {
    }
    int got = x->n;
    pthread_mutex_unlock(&x->mu);
    assert_true(got >= n);
}

static void test_restart(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    static losses lost = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    cch_redis_layer_options o = {.log = loss_log, .log_ud = &lost};
    cch_layer *a = layer_on(1, &o), *b = layer_on(1, &o);
    fx_recv wa, wb, wd;
    fx_recv_init(&wa, a);
    fx_recv_init(&wb, b);
    fx_recv_init(&wd, b);
    char ca[CCH_NAME_BUF], cb[CCH_NAME_BUF], cd[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(a, NULL, wa.r, NULL, ca, sizeof ca), 0);
    assert_int_equal(cch_layer_new_channel(b, NULL, wb.r, NULL, cb, sizeof cb), 0);
    assert_int_equal(cch_layer_new_channel(b, NULL, wd.r, NULL, cd, sizeof cd), 0); /* directs */
    assert_int_equal(cch_layer_group_add(a, "r", ca), 0);
    assert_int_equal(cch_layer_group_add(b, "r", cb), 0);
    synced(a);
    synced(b);
    cch_msg *before = msg("t", "{\"when\":\"before\"}"), *during = msg("t", "{\"when\":\"during\"}"),
            *after = msg("t", "{\"when\":\"after\"}");
    static cch_delivery d[64];
    for (int i = 0; i < 20; i++) assert_int_equal(cch_layer_group_send(a, "r", before, NULL, NULL), 0);
    assert_int_equal(fx_collect(&wb, d, 20, FX_WAIT_MS), 20);
    fx_drop(d, 20);

    /* the server goes away with traffic in flight */
    for (int i = 0; i < 10; i++) assert_int_equal(cch_layer_group_send(a, "r", before, NULL, NULL), 0);
    fx_redis_stop(&srv[0]);
    wait_losses(&lost, 2); /* both layers noticed */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cch_layer_group_send(a, "r", during, NULL, NULL), 0);
        assert_int_equal(cch_layer_send(a, cd, during), 0);
    }
    /* A's own member is served at once, from memory */
    int n = fx_collect(&wa, d, 64, 300);
    assert_true(n >= 25 && n <= 35);
    assert_int_equal(count_bodies(d, n, "{\"when\":\"during\"}"), 5);
    fx_drop(d, n);
    assert_int_equal(cch_redis_layer_sync(a, 50), CCH_ETRANSPORT);

    /* back, empty (no persistence): both reconnect, replay, re-add their members */
    assert_int_equal(fx_redis_start(&srv[0]), 0);
    synced(b);
    synced(a);
    redisContext *c = fx_raw(&srv[0]);
    redisReply *r = raw(c, "ZRANGE asgi:group:r 0 -1");
    assert_int_equal(r->elements, 2);
    assert_true((!strcmp(r->element[0]->str, ca) && !strcmp(r->element[1]->str, cb)) ||
                (!strcmp(r->element[0]->str, cb) && !strcmp(r->element[1]->str, ca)));
    freeReplyObject(r);
    redisFree(c);
    /* the direct sends made while it was down were kept and sent */
    assert_int_equal(fx_collect(&wd, d, 5, FX_WAIT_MS), 5);
    assert_int_equal(count_bodies(d, 5, "{\"when\":\"during\"}"), 5);
    fx_drop(d, 5);
    /* and traffic flows again */
    assert_int_equal(cch_layer_group_send(a, "r", after, NULL, NULL), 0);
    int seen_after = 0;
    while (!seen_after) {
        n = fx_collect(&wb, d, 1, FX_WAIT_MS);
        assert_int_equal(n, 1);
        seen_after = count_bodies(d, 1, "{\"when\":\"after\"}");
        fx_drop(d, 1);
    }
    cch_layer_stats st;
    cch_layer_stats_get(a, &st);
    assert_true(st.sent >= 20);

    cch_msg_unref(before);
    cch_msg_unref(during);
    cch_msg_unref(after);
    fx_recv_free(&wa);
    fx_recv_free(&wb);
    fx_recv_free(&wd);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* ---- the pub/sub format ---------------------------------------------------------------------------------- */

/* Pub/sub keeps nothing for a subscriber that is not there yet: a group_send made
 * right after a group_add is published only once the group's SUBSCRIBE is confirmed,
 * so that whoever sees the message (and answers it at once, as a Django consumer
 * answers a join notice) reaches us. Checked where it shows: when a listener gets our
 * publication, Redis already counts our subscription. */
static void test_pubsub_publishes_after_subscribing(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    char url[80];
    snprintf(url, sizeof url, "redis+pubsub://127.0.0.1:%d", srv[0].port);
    redisContext *listen = fx_raw(&srv[0]);
    for (int round = 0; round < 20; round++) {
        char group[16], chan[40];
        snprintf(group, sizeof group, "order%d", round);
        snprintf(chan, sizeof chan, "asgi__group__%s", group);
        freeReplyObject(raw(listen, "SUBSCRIBE %s", chan));
        cch_layer *a = NULL;
        assert_int_equal(cch_redis_layer_new_url(url, &a), 0);
        synced(a);
        fx_recv w;
        fx_recv_init(&w, a);
        char ca[CCH_NAME_BUF];
        assert_int_equal(cch_layer_new_channel(a, NULL, w.r, NULL, ca, sizeof ca), 0);
        cch_msg *m = msg("chat_message", "{\"message\":\"joined\"}");
        assert_int_equal(cch_layer_group_add(a, group, ca), 0);
        assert_int_equal(cch_layer_group_send(a, group, m, NULL, NULL), 0); /* no wait */
        cch_msg_unref(m);
        redisReply *pub = NULL;
        assert_int_equal(redisGetReply(listen, (void **)&pub), REDIS_OK);
        assert_int_equal(pub->type, REDIS_REPLY_ARRAY);
        assert_string_equal(pub->element[0]->str, "message");
        freeReplyObject(pub);
        redisContext *c = fx_raw(&srv[0]);
        redisReply *r = raw(c, "PUBSUB NUMSUB %s", chan);
        assert_int_equal(r->element[1]->integer, 2); /* the listener and us */
        freeReplyObject(r);
        redisFree(c);
        freeReplyObject(raw(listen, "UNSUBSCRIBE %s", chan));
        cch_delivery d[1];
        assert_int_equal(fx_collect(&w, d, 1, FX_WAIT_MS), 1); /* our own member too */
        fx_drop(d, 1);
        fx_recv_free(&w);
        cch_layer_unref(a);
    }
    redisFree(listen);
}

static void test_pubsub(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    char url[80];
    snprintf(url, sizeof url, "redis+pubsub://127.0.0.1:%d", srv[0].port);
    cch_layer *a = NULL, *b = NULL;
    assert_int_equal(cch_redis_layer_new_url(url, &a), 0);
    assert_int_equal(cch_redis_layer_new_url(url, &b), 0);
    fx_recv wa, wb;
    fx_recv_init(&wa, a);
    fx_recv_init(&wb, b);
    char ca[2][CCH_NAME_BUF], cb[CCH_NAME_BUF];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cch_layer_new_channel(a, NULL, wa.r, (void *)(intptr_t)(i + 1), ca[i],
                                               CCH_NAME_BUF), 0);
        assert_int_equal(cch_layer_group_add(a, "ps", ca[i]), 0);
    }
    assert_int_equal(cch_layer_new_channel(b, NULL, wb.r, NULL, cb, sizeof cb), 0);
    assert_int_equal(cch_layer_group_add(b, "ps", cb), 0);
    assert_int_equal(cch_layer_group_add(b, "ps", "specific.foreign!x"), CCH_ENOTSUP);
    synced(a);
    synced(b);
    /* one subscription per process, none per member; one pattern per process */
    redisContext *c = fx_raw(&srv[0]);
    redisReply *r = raw(c, "PUBSUB NUMSUB asgi__group__ps");
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[1]->integer, 2);
    freeReplyObject(r);
    assert_int_equal(raw_int(0, "PUBSUB NUMPAT"), 2);
    redisFree(c);
    cch_msg *m = msg("chat_message", "{\"message\":\"ps\"}");
    assert_int_equal(cch_layer_group_send(b, "ps", m, NULL, NULL), 0);
    cch_delivery d[4];
    assert_int_equal(fx_collect(&wa, d, 2, FX_WAIT_MS), 2);
    assert_string_equal(cch_msg_body(d[0].msg), "{\"message\":\"ps\"}");
    fx_drop(d, 2);
    assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1); /* B's own member: the echo */
    fx_drop(d, 1);
    /* exclude: A's first channel does not get its own message */
    assert_int_equal(cch_layer_group_send(a, "ps", m, ca[0], NULL), 0);
    assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1);
    fx_drop(d, 1);
    assert_int_equal(fx_collect(&wa, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].channel_ud, (void *)2);
    fx_drop(d, 1);
    assert_int_equal(cch_layer_poll(a, wa.r, d, 4), 0);
    /* direct send from A to B: PUBLISH on the channel's name */
    assert_int_equal(cch_layer_send(a, cb, m), 0);
    assert_int_equal(fx_collect(&wb, d, 1, FX_WAIT_MS), 1);
    fx_drop(d, 1);
    /* presence: this process's members only */
    members pm;
    assert_int_equal(members_of(a, "ps", &pm), 2);
    /* leaving: the last local member unsubscribes the process */
    assert_int_equal(cch_layer_group_discard(b, "ps", cb), 0);
    synced(b);
    assert_int_equal(cch_layer_group_send(a, "ps", m, NULL, NULL), 0);
    assert_int_equal(fx_collect(&wa, d, 2, FX_WAIT_MS), 2);
    fx_drop(d, 2);
    synced(a);
    assert_int_equal(cch_layer_poll(b, wb.r, d, 4), 0);
    cch_msg_unref(m);
    fx_recv_free(&wa);
    fx_recv_free(&wb);
    cch_layer_unref(a);
    cch_layer_unref(b);
}

/* ---- password and database ------------------------------------------------------------------------ */

static void test_auth_and_db(void **state) {
    (void)state;
    SKIP_WITHOUT_REDIS();
    flushall(1);
    redisContext *c = fx_raw(&srv[0]);
    freeReplyObject(raw(c, "CONFIG SET requirepass s3cret"));
    char good[96], bad[96];
    snprintf(good, sizeof good, "redis://:s3cret@127.0.0.1:%d/3", srv[0].port);
    snprintf(bad, sizeof bad, "redis://:wrong@127.0.0.1:%d/3", srv[0].port);
    const char *gu[1] = {good}, *bu[1] = {bad};
    cch_redis_layer_options o = {.urls = gu, .n_urls = 1, .reconnect_min_ms = 20,
                                 .reconnect_max_ms = 50};
    cch_layer *a = NULL, *b = NULL;
    assert_int_equal(cch_redis_layer_new(&o, &a), 0);
    o.urls = bu;
    assert_int_equal(cch_redis_layer_new(&o, &b), 0);
    synced(a);
    assert_int_equal(cch_layer_group_add(a, "authed", "specific.x!y"), 0);
    synced(a);
    assert_int_equal(cch_redis_layer_sync(b, 300), CCH_ETRANSPORT); /* refused, retrying */
    assert_false(cch_redis_layer_connected(b));
    cch_layer_stats st;
    cch_layer_stats_get(b, &st);
    assert_true(st.errors >= 1);
    freeReplyObject(raw(c, "AUTH s3cret"));
    freeReplyObject(raw(c, "SELECT 3"));
    redisReply *r = raw(c, "ZRANGE asgi:group:authed 0 -1");
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
    freeReplyObject(raw(c, "SELECT 0"));
    r = raw(c, "EXISTS asgi:group:authed");
    assert_int_equal(r->integer, 0); /* db 3, not 0 */
    freeReplyObject(r);
    cch_layer_unref(a);
    cch_layer_unref(b);
    freeReplyObject(raw(c, "CONFIG SET requirepass %s", "")); /* no password again */
    redisFree(c);
}

int main(void) {
    if (!fx_redis_available()) {
        printf("SKIP: /usr/bin/redis-server is not installed\n");
        return 77;
    }
    const struct CMUnitTest one[] = {
        cmocka_unit_test(test_send_receive),
        cmocka_unit_test(test_group_send_two_instances),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_congested_follows_local_channels),
        cmocka_unit_test(test_group_send_backpressure),
        cmocka_unit_test(test_full_channel_given_up),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_pubsub),
        cmocka_unit_test(test_pubsub_publishes_after_subscribing),
        cmocka_unit_test(test_auth_and_db),
    };
    const struct CMUnitTest two[] = {
        cmocka_unit_test(test_sharding),
    };
    int rc = cmocka_run_group_tests_name("one server", one, setup_one, teardown);
    rc += cmocka_run_group_tests_name("two servers", two, setup_two, teardown);
    return rc;
}
