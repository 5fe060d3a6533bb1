/* tests/test_layer_memory.c - the channel-layer API (cchannels/layer.h, lib/core/layer.c)
 * and the in-memory layer (cchannels/memory_layer.h, lib/core/memory.c).
 *
 * Time is an injected clock; nothing sleeps. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cchannels/alloc.h"
#include "cchannels/layer.h"
#include "cchannels/layer_impl.h"
#include "cchannels/memory_layer.h"
#include "cchannels/msg.h"
#include "memory_internal.h"
#include "msg_internal.h"
#include "slab.h"

#include "alloc_fixture.h"

/* ---- helpers -------------------------------------------------------------------- */

static uint64_t now_ms;
static uint64_t fake_clock(void *ud) { return *(uint64_t *)ud; }

static cch_layer *new_layer(size_t capacity, uint64_t expiry, uint64_t gexpiry) {
    now_ms = 1000;
    cch_memory_layer_options o = {
        .capacity = capacity, .expiry_ms = expiry, .group_expiry_ms = gexpiry,
        .clock = fake_clock, .clock_ud = &now_ms,
    };
    cch_layer *l = cch_memory_layer_new(&o);
    assert_non_null(l);
    return l;
}

static cch_msg *msg(const char *type) {
    cch_msg *m = cch_msg_new(type, NULL, 0);
    assert_non_null(m);
    return m;
}

static cch_msg *msg_n(int n) {
    char body[64];
    int len = snprintf(body, sizeof body, "{\"n\":%d}", n);
    cch_msg *m = cch_msg_new("t", body, (size_t)len);
    assert_non_null(m);
    return m;
}

static int64_t msg_num(const cch_msg *m) {
    int64_t v = -1;
    assert_int_equal(cch_msg_field_int(m, "n", &v), 0);
    return v;
}

static void chan(cch_layer *l, cch_receiver *r, void *ud, char name[CCH_NAME_BUF]) {
    assert_int_equal(cch_layer_new_channel(l, NULL, r, ud, name, CCH_NAME_BUF), 0);
}

static cch_layer_stats stats(cch_layer *l) {
    cch_layer_stats s;
    cch_layer_stats_get(l, &s);
    return s;
}

static void expect_receive(cch_layer *l, const char *ch, const cch_msg *want) {
    cch_msg *got = NULL;
    assert_int_equal(cch_layer_receive(l, ch, &got), 0);
    assert_ptr_equal(got, want);
    cch_msg_unref(got);
}

static void expect_empty(cch_layer *l, const char *ch) {
    cch_msg *got = (cch_msg *)1;
    assert_int_equal(cch_layer_receive(l, ch, &got), CCH_EAGAIN);
    assert_null(got);
}

/* wakeup counters */
typedef struct waker {
    atomic_int calls;
} waker;
static void wake_fn(void *ud) { atomic_fetch_add(&((waker *)ud)->calls, 1); }

/* group_members collector */
typedef struct members {
    int calls;
    int status;
    size_t n;
    char names[64][CCH_NAME_BUF];
} members;
static void members_fn(void *ud, int status, const char *const *names, size_t n) {
    members *m = ud;
    m->calls++;
    m->status = status;
    m->n = n;
    assert_non_null(names);
    for (size_t i = 0; i < n && i < 64; i++) snprintf(m->names[i], CCH_NAME_BUF, "%s", names[i]);
}
static bool members_has(const members *m, const char *name) {
    for (size_t i = 0; i < m->n && i < 64; i++)
        if (strcmp(m->names[i], name) == 0) return true;
    return false;
}
static size_t member_count(cch_layer *l, const char *group) {
    members m = {0};
    assert_int_equal(cch_layer_group_members(l, group, members_fn, &m), 0);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.status, 0);
    return m.n;
}

static void name_of_len(char *buf, size_t len, char c) {
    memset(buf, c, len);
    buf[len] = '\0';
}

/* ---- names ------------------------------------------------------------------------- */

static void test_name_rules(void **state) {
    (void)state;
    char n99[128], n100[128];
    name_of_len(n99, 99, 'a');
    name_of_len(n100, 100, 'a');
    assert_true(cch_valid_group_name("chat_room-1.x"));
    assert_true(cch_valid_group_name("A"));
    assert_true(cch_valid_group_name("0123456789"));
    assert_true(cch_valid_group_name(n99));
    assert_false(cch_valid_group_name(n100));
    assert_false(cch_valid_group_name(NULL));
    assert_false(cch_valid_group_name(""));
    assert_false(cch_valid_group_name("a b"));
    assert_false(cch_valid_group_name("a!b"));
    assert_false(cch_valid_group_name("room/1"));
    assert_false(cch_valid_group_name("caf\xc3\xa9"));
    assert_false(cch_valid_group_name("a\n"));
    assert_false(cch_valid_group_name("a:b"));

    assert_true(cch_valid_channel_name("specific.abc!def"));
    assert_true(cch_valid_channel_name("specific.abc!"));
    assert_true(cch_valid_channel_name("plain-name_1.x"));
    assert_true(cch_valid_channel_name("a!b.c-d_e"));
    assert_true(cch_valid_channel_name(n99));
    n99[50] = '!';
    assert_true(cch_valid_channel_name(n99));
    n100[50] = '!';
    assert_false(cch_valid_channel_name(n100));
    assert_false(cch_valid_channel_name(NULL));
    assert_false(cch_valid_channel_name(""));
    assert_false(cch_valid_channel_name("!abc"));
    assert_false(cch_valid_channel_name("!"));
    assert_false(cch_valid_channel_name("a!b!c"));
    assert_false(cch_valid_channel_name("a b!c"));
    assert_false(cch_valid_channel_name("a!b c"));
    assert_false(cch_valid_channel_name("a!b\n"));
    assert_false(cch_valid_channel_name("a!\xc3\xa9"));
}

/* ---- the layer base and argument checks ---------------------------------------- */

static int log_calls;
static int log_level;
static char log_line[1024];
static void log_fn(void *ud, int level, const char *line) {
    (void)ud;
    log_calls++;
    log_level = level;
    snprintf(log_line, sizeof log_line, "%s", line);
}

static void test_layer_base(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    assert_string_equal(cch_layer_kind(l), "memory");
    assert_string_equal(cch_layer_kind(NULL), "");
    assert_ptr_equal(cch_layer_ref(l), l);
    cch_layer_unref(l); /* back to one */
    assert_null(cch_layer_ref(NULL));
    cch_layer_unref(NULL);

    log_calls = 0;
    cch_layer_log(l, CCH_LOG_INFO, "silent %d", 1); /* no sink: nothing */
    assert_int_equal(log_calls, 0);
    cch_layer_set_log(l, log_fn, NULL);
    cch_layer_log(l, CCH_LOG_WARN, "value %d and %s", 42, "text");
    assert_int_equal(log_calls, 1);
    assert_int_equal(log_level, CCH_LOG_WARN);
    assert_string_equal(log_line, "value 42 and text");
    char big[2000];
    name_of_len(big, sizeof big - 1, 'x');
    cch_layer_log(l, CCH_LOG_ERROR, "%s", big); /* truncated, not overflowed */
    assert_int_equal(log_calls, 2);
    assert_true(strlen(log_line) > 100 && strlen(log_line) < sizeof big - 1);
    cch_layer_log(NULL, CCH_LOG_ERROR, "x");
    cch_layer_set_log(l, NULL, NULL);
    cch_layer_log(l, CCH_LOG_ERROR, "x");
    assert_int_equal(log_calls, 2);
    cch_layer_set_log(NULL, log_fn, NULL);

    cch_layer_stats s;
    memset(&s, 0xff, sizeof s);
    cch_layer_stats_get(l, &s);
    assert_int_equal(s.sent + s.delivered + s.full + s.expired + s.groups_expired + s.dropped +
                         s.errors, 0);
    memset(&s, 0xff, sizeof s);
    cch_layer_stats_get(NULL, &s);
    assert_int_equal(s.sent, 0);
    cch_layer_stats_get(l, NULL);
    cch_layer_unref(l);
}

static void test_defaults(void **state) {
    (void)state;
    /* NULL options: capacity 100, real clock */
    cch_layer *l = cch_memory_layer_new(NULL);
    assert_non_null(l);
    char ch[CCH_NAME_BUF];
    chan(l, NULL, NULL, ch);
    cch_msg *m = msg("t");
    for (int i = 0; i < CCH_MEMORY_DEFAULT_CAPACITY; i++)
        assert_int_equal(cch_layer_send(l, ch, m), 0);
    assert_int_equal(cch_layer_send(l, ch, m), CCH_ECHANFULL);
    expect_receive(l, ch, m); /* not expired: the real clock barely moved */
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_argument_checks(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    cch_msg *m = msg("t");
    char name[CCH_NAME_BUF], n100[128];
    name_of_len(n100, 100, 'a');
    chan(l, NULL, NULL, name);
    cch_msg *out;
    cch_delivery d[2];
    cch_group_send_result res;
    members mem = {0};

    assert_null(cch_layer_receiver_new(NULL, NULL, NULL));
    cch_layer_receiver_free(NULL, NULL);
    cch_layer_receiver_free(l, NULL);

    assert_int_equal(cch_layer_new_channel(NULL, NULL, NULL, NULL, name, sizeof name), CCH_EINVAL);
    assert_int_equal(cch_layer_new_channel(l, NULL, NULL, NULL, NULL, 100), CCH_EINVAL);

    assert_int_equal(cch_layer_release_channel(NULL, name), CCH_EINVAL);
    assert_int_equal(cch_layer_release_channel(l, NULL), CCH_EINVAL);
    assert_int_equal(cch_layer_release_channel(l, ""), CCH_ENAME);
    assert_int_equal(cch_layer_release_channel(l, n100), CCH_ENAME);
    assert_int_equal(cch_layer_release_channel(l, "bad name"), CCH_ENAME);

    assert_int_equal(cch_layer_send(NULL, name, m), CCH_EINVAL);
    assert_int_equal(cch_layer_send(l, NULL, m), CCH_EINVAL);
    assert_int_equal(cch_layer_send(l, name, NULL), CCH_EINVAL);
    assert_int_equal(cch_layer_send(l, "", m), CCH_ENAME);
    assert_int_equal(cch_layer_send(l, n100, m), CCH_ENAME);
    assert_int_equal(cch_layer_send(l, "a b", m), CCH_ENAME);
    assert_int_equal(cch_layer_send(l, "a!b!c", m), CCH_ENAME);

    out = (cch_msg *)1;
    assert_int_equal(cch_layer_receive(NULL, name, &out), CCH_EINVAL);
    assert_null(out);
    assert_int_equal(cch_layer_receive(l, NULL, &out), CCH_EINVAL);
    assert_int_equal(cch_layer_receive(l, name, NULL), CCH_EINVAL);
    out = (cch_msg *)1;
    assert_int_equal(cch_layer_receive(l, "", &out), CCH_ENAME);
    assert_null(out);
    assert_int_equal(cch_layer_receive(l, n100, &out), CCH_ENAME);

    cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
    assert_non_null(r);
    assert_int_equal(cch_layer_poll(NULL, r, d, 2), CCH_EINVAL);
    assert_int_equal(cch_layer_poll(l, NULL, d, 2), CCH_EINVAL);
    assert_int_equal(cch_layer_poll(l, r, NULL, 2), CCH_EINVAL);
    assert_int_equal(cch_layer_poll(l, r, NULL, 0), 0);
    assert_int_equal(cch_layer_poll(l, r, d, 0), 0);
    assert_int_equal(cch_layer_poll(l, r, d, 2), 0);

    assert_int_equal(cch_layer_group_add(NULL, "g", name), CCH_EINVAL);
    assert_int_equal(cch_layer_group_add(l, NULL, name), CCH_EINVAL);
    assert_int_equal(cch_layer_group_add(l, "g", NULL), CCH_EINVAL);
    assert_int_equal(cch_layer_group_add(l, "", name), CCH_ENAME);
    assert_int_equal(cch_layer_group_add(l, n100, name), CCH_ENAME);
    assert_int_equal(cch_layer_group_add(l, "g!x", name), CCH_ENAME);
    assert_int_equal(cch_layer_group_add(l, "g", ""), CCH_ENAME);
    assert_int_equal(cch_layer_group_add(l, "g", n100), CCH_ENAME);
    assert_int_equal(cch_layer_group_add(l, "g", "bad name"), CCH_ENAME);

    assert_int_equal(cch_layer_group_discard(NULL, "g", name), CCH_EINVAL);
    assert_int_equal(cch_layer_group_discard(l, NULL, name), CCH_EINVAL);
    assert_int_equal(cch_layer_group_discard(l, "g", NULL), CCH_EINVAL);
    assert_int_equal(cch_layer_group_discard(l, "", name), CCH_ENAME);
    assert_int_equal(cch_layer_group_discard(l, n100, name), CCH_ENAME);
    assert_int_equal(cch_layer_group_discard(l, "g", "x y"), CCH_ENAME);

    memset(&res, 0xff, sizeof res);
    assert_int_equal(cch_layer_group_send(NULL, "g", m, NULL, &res), CCH_EINVAL);
    assert_int_equal(res.delivered + res.full + res.expired, 0);
    assert_int_equal(cch_layer_group_send(l, NULL, m, NULL, &res), CCH_EINVAL);
    assert_int_equal(cch_layer_group_send(l, "g", NULL, NULL, &res), CCH_EINVAL);
    assert_int_equal(cch_layer_group_send(l, "", m, NULL, &res), CCH_ENAME);
    assert_int_equal(cch_layer_group_send(l, n100, m, NULL, &res), CCH_ENAME);
    assert_int_equal(cch_layer_group_send(l, "g", m, "", &res), CCH_ENAME);
    assert_int_equal(cch_layer_group_send(l, "g", m, "bad name", NULL), CCH_ENAME);

    assert_int_equal(cch_layer_group_members(NULL, "g", members_fn, &mem), CCH_EINVAL);
    assert_int_equal(cch_layer_group_members(l, NULL, members_fn, &mem), CCH_EINVAL);
    assert_int_equal(cch_layer_group_members(l, "g", NULL, &mem), CCH_EINVAL);
    assert_int_equal(cch_layer_group_members(l, "", members_fn, &mem), CCH_ENAME);
    assert_int_equal(cch_layer_group_members(l, n100, members_fn, &mem), CCH_ENAME);
    assert_int_equal(mem.calls, 0); /* never called on error */

    /* nothing reached the layer */
    cch_layer_stats s = stats(l);
    assert_int_equal(s.sent, 0);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    cch_msg_unref(m);
}

/* A stub layer: checks that the wrappers pass valid arguments through. */
static int stub_calls;
static const char *stub_prefix;
static size_t stub_max;
static cch_group_send_result *stub_result;
static cch_receiver *stub_receiver_new(cch_layer *l, cch_wakeup_fn w, void *ud) {
    (void)l, (void)w, (void)ud;
    stub_calls++;
    return (cch_receiver *)&stub_calls;
}
static void stub_receiver_free(cch_layer *l, cch_receiver *r) { (void)l, (void)r, stub_calls++; }
static int stub_new_channel(cch_layer *l, const char *prefix, cch_receiver *r, void *ud, char *name,
                            size_t cap) {
    (void)l, (void)r, (void)ud, (void)name, (void)cap;
    stub_calls++;
    stub_prefix = prefix;
    return 0;
}
static int stub_name(cch_layer *l, const char *c) { (void)l, (void)c; return ++stub_calls, 0; }
static int stub_send(cch_layer *l, const char *c, const cch_msg *m) {
    (void)l, (void)c, (void)m;
    return ++stub_calls, 0;
}
static int stub_receive(cch_layer *l, const char *c, cch_msg **out) {
    (void)l, (void)c, (void)out;
    return ++stub_calls, CCH_EAGAIN;
}
static int stub_poll(cch_layer *l, cch_receiver *r, cch_delivery *out, size_t max) {
    (void)l, (void)r, (void)out;
    stub_calls++;
    stub_max = max;
    return 0;
}
static int stub_group(cch_layer *l, const char *g, const char *c) {
    (void)l, (void)g, (void)c;
    return ++stub_calls, 0;
}
static int stub_group_send(cch_layer *l, const char *g, const cch_msg *m, const char *ex,
                           cch_group_send_result *res) {
    (void)l, (void)g, (void)m, (void)ex;
    stub_calls++;
    stub_result = res;
    res->delivered = 7;
    return 0;
}
static int stub_members(cch_layer *l, const char *g, cch_members_fn cb, void *ud) {
    (void)l, (void)g, (void)cb, (void)ud;
    return ++stub_calls, 0;
}
static void stub_stats(cch_layer *l, cch_layer_stats *out) {
    (void)l;
    stub_calls++;
    out->sent = 5;
}
static int stub_destroyed;
static void stub_destroy(cch_layer *l) {
    (void)l;
    stub_destroyed++;
}
static bool stub_congested_now;
static bool stub_congested(cch_layer *l) {
    (void)l;
    return stub_congested_now;
}
static const cch_layer_ops stub_ops = {
    "stub", stub_receiver_new, stub_receiver_free, stub_new_channel, stub_name, stub_send,
    stub_receive, stub_poll, stub_group, stub_group, stub_group_send, stub_members, stub_stats,
    stub_destroy, stub_congested,
};
/* A table written before the optional `congested` operation existed. */
static const cch_layer_ops stub_old_ops = {
    "old", stub_receiver_new, stub_receiver_free, stub_new_channel, stub_name, stub_send,
    stub_receive, stub_poll, stub_group, stub_group, stub_group_send, stub_members, stub_stats,
    stub_destroy, NULL,
};

static void test_wrappers_pass_through(void **state) {
    (void)state;
    cch_layer l;
    cch_layer_init(&l, &stub_ops);
    cch_layer_init(NULL, &stub_ops);
    assert_string_equal(cch_layer_kind(&l), "stub");
    assert_null(l.log);
    stub_calls = 0;
    char name[CCH_NAME_BUF];
    assert_non_null(cch_layer_receiver_new(&l, NULL, NULL));
    assert_int_equal(cch_layer_new_channel(&l, NULL, NULL, NULL, name, sizeof name), 0);
    assert_string_equal(stub_prefix, "specific"); /* the default prefix */
    assert_int_equal(cch_layer_new_channel(&l, "chat", NULL, NULL, name, sizeof name), 0);
    assert_string_equal(stub_prefix, "chat");
    int before = stub_calls;
    assert_int_equal(cch_layer_new_channel(&l, "bad prefix", NULL, NULL, name, sizeof name),
                     CCH_ENAME);
    assert_int_equal(cch_layer_new_channel(&l, "a!b", NULL, NULL, name, sizeof name), CCH_ENAME);
    assert_int_equal(cch_layer_new_channel(&l, "", NULL, NULL, name, sizeof name), CCH_ENAME);
    assert_int_equal(stub_calls, before);
    cch_delivery d[1];
    assert_int_equal(cch_layer_poll(&l, (cch_receiver *)&l, d, SIZE_MAX), 0);
    assert_int_equal(stub_max, INT32_MAX); /* the count fits the int return */
    cch_msg *m = msg("t");
    assert_int_equal(cch_layer_group_send(&l, "g", m, NULL, NULL), 0);
    assert_non_null(stub_result); /* implementations always get a result struct */
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(&l, "g", m, "x!y", &res), 0);
    assert_ptr_equal(stub_result, &res);
    assert_int_equal(res.delivered, 7);
    cch_msg_unref(m);
    cch_layer_stats s;
    cch_layer_stats_get(&l, &s);
    assert_int_equal(s.sent, 5);
    assert_int_equal(s.delivered, 0); /* zeroed before the layer fills it */
    stub_congested_now = true;
    assert_true(cch_layer_congested(&l));
    stub_congested_now = false;
    assert_false(cch_layer_congested(&l));
    assert_false(cch_layer_congested(NULL));
    cch_layer old;
    cch_layer_init(&old, &stub_old_ops);
    assert_false(cch_layer_congested(&old)); /* no operation: never congested */
    stub_destroyed = 0;
    cch_layer_ref(&l);
    cch_layer_unref(&l);
    assert_int_equal(stub_destroyed, 0);
    cch_layer_unref(&l);
    assert_int_equal(stub_destroyed, 1);
}

/* ---- channels ------------------------------------------------------------------------ */

static bool is_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static void test_new_channel_names(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF];
    chan(l, NULL, NULL, a);
    /* "specific." + 12 hex + "!" + a counter in hex (no leading zeros: short names
     * keep idle channels small) */
    assert_in_range(strlen(a), 9 + 12 + 1 + 1, 9 + 12 + 1 + 16);
    assert_memory_equal(a, "specific.", 9);
    assert_true(is_hex(a + 9, 12));
    assert_int_equal(a[21], '!');
    assert_true(is_hex(a + 22, strlen(a) - 22));
    assert_true(strlen(a) == 23 || a[22] != '0');
    assert_true(cch_valid_channel_name(a));
    chan(l, NULL, NULL, b);
    assert_string_not_equal(a, b);
    assert_memory_equal(a, b, 22); /* same process part */

    /* unique over many */
    static char names[2000][CCH_NAME_BUF];
    for (int i = 0; i < 2000; i++) {
        chan(l, NULL, NULL, names[i]);
        for (int j = 0; j < i; j += 97) assert_string_not_equal(names[i], names[j]);
        if (i) assert_string_not_equal(names[i], names[i - 1]);
    }
    for (int i = 0; i < 2000; i++) assert_int_equal(cch_layer_release_channel(l, names[i]), 0);

    /* another layer has another process part */
    cch_layer *l2 = new_layer(0, 0, 0);
    chan(l2, NULL, NULL, b);
    assert_memory_not_equal(a + 9, b + 9, 12);
    cch_layer_unref(l2);

    /* prefixes */
    assert_int_equal(cch_layer_new_channel(l, "chat.room-1_x", NULL, NULL, b, sizeof b), 0);
    assert_memory_equal(b, "chat.room-1_x.", 14);
    char p69[80], p70[80];
    name_of_len(p69, 69, 'p');
    name_of_len(p70, 70, 'p');
    /* a prefix is refused when the longest name it could make is too long */
    assert_int_equal(cch_layer_new_channel(l, p69, NULL, NULL, b, sizeof b), 0);
    assert_in_range(strlen(b), 69 + 1 + 12 + 1 + 1, CCH_NAME_MAX);
    assert_true(cch_valid_channel_name(b));
    assert_int_equal(cch_layer_new_channel(l, p70, NULL, NULL, b, sizeof b), CCH_ENAME);
    assert_int_equal(cch_layer_new_channel(l, "bad prefix", NULL, NULL, b, sizeof b), CCH_ENAME);
    assert_int_equal(cch_layer_new_channel(l, "x!y", NULL, NULL, b, sizeof b), CCH_ENAME);
    /* the buffer must hold the longest name and its NUL */
    memset(b, 'Z', sizeof b);
    assert_int_equal(cch_layer_new_channel(l, "ab", NULL, NULL, b, 2 + 30), CCH_ETOOBIG);
    assert_int_equal(b[0], '\0');
    assert_int_equal(cch_layer_new_channel(l, "ab", NULL, NULL, b, 2 + 31), 0);
    assert_in_range(strlen(b), 2 + 1 + 12 + 1 + 1, 32);
    assert_int_equal(cch_layer_new_channel(l, "ab", NULL, NULL, b, 0), CCH_ETOOBIG);
    cch_layer_unref(l);
}

static void test_send_receive(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    char ch[CCH_NAME_BUF];
    chan(l, NULL, NULL, ch);
    cch_msg *m1 = msg_n(1), *m2 = msg_n(2), *m3 = msg_n(3);
    expect_empty(l, ch);
    assert_int_equal(cch_layer_send(l, ch, m1), 0);
    assert_int_equal(cch__msg_refs(m1), 2); /* the layer holds its own reference */
    assert_int_equal(cch_layer_send(l, ch, m2), 0);
    assert_int_equal(cch_layer_send(l, ch, m3), 0);
    assert_int_equal(cch_layer_send(l, ch, m1), 0); /* the same message twice */
    expect_receive(l, ch, m1); /* FIFO, shared (no copy) */
    expect_receive(l, ch, m2);
    expect_receive(l, ch, m3);
    expect_receive(l, ch, m1);
    expect_empty(l, ch);
    assert_int_equal(cch__msg_refs(m1), 1);
    /* many messages: the ring grows and keeps the order, across wrap-around */
    for (int round = 0; round < 3; round++) {
        cch_msg *ms[60];
        for (int i = 0; i < 60; i++) {
            ms[i] = msg_n(i);
            assert_int_equal(cch_layer_send(l, ch, ms[i]), 0);
            if (i % 7 == 6) { /* interleave receives to wrap the ring */
                cch_msg *got;
                assert_int_equal(cch_layer_receive(l, ch, &got), 0);
                cch_msg_unref(got);
            }
        }
        int64_t last = -1;
        cch_msg *got;
        while (cch_layer_receive(l, ch, &got) == 0) {
            assert_true(msg_num(got) > last);
            last = msg_num(got);
            cch_msg_unref(got);
        }
        assert_int_equal(last, 59);
        for (int i = 0; i < 60; i++) {
            assert_int_equal(cch__msg_refs(ms[i]), 1);
            cch_msg_unref(ms[i]);
        }
    }
    /* unknown channels: receive finds nothing; send creates the channel, as Channels'
     * in-memory layer does, and the message can be received */
    expect_empty(l, "nobody.here!x");
    assert_int_equal(cch_layer_send(l, "some.name", m2), 0);
    expect_receive(l, "some.name", m2);
    expect_empty(l, "some.name");
    assert_int_equal(cch_layer_release_channel(l, "some.name"), CCH_ENOTFOUND); /* gone */

    cch_layer_stats s = stats(l);
    assert_int_equal(s.sent, 5 + 180);
    assert_int_equal(s.delivered, 5 + 180);
    assert_int_equal(s.full + s.expired + s.dropped, 0);
    cch_layer_unref(l);
    cch_msg_unref(m1);
    cch_msg_unref(m2);
    cch_msg_unref(m3);
}

static void test_channel_full(void **state) {
    (void)state;
    cch_layer *l = new_layer(3, 0, 0);
    char ch[CCH_NAME_BUF];
    chan(l, NULL, NULL, ch);
    cch_msg *m = msg("t");
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(l, ch, m), 0);
    assert_int_equal(cch_layer_send(l, ch, m), CCH_ECHANFULL);
    assert_int_equal(cch_layer_send(l, ch, m), CCH_ECHANFULL);
    assert_int_equal(cch__msg_refs(m), 4); /* nothing queued for the refused sends */
    cch_layer_stats s = stats(l);
    assert_int_equal(s.full, 2);
    assert_int_equal(s.sent, 3);
    expect_receive(l, ch, m);
    assert_int_equal(cch_layer_send(l, ch, m), 0); /* room again */
    assert_int_equal(cch_layer_send(l, ch, m), CCH_ECHANFULL);
    /* full applies to unknown (unbound) channels too */
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(l, "other", m), 0);
    assert_int_equal(cch_layer_send(l, "other", m), CCH_ECHANFULL);
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_message_expiry(void **state) {
    (void)state;
    cch_layer *l = new_layer(3, 100, 0);
    char ch[CCH_NAME_BUF];
    chan(l, NULL, NULL, ch);
    cch_msg *a = msg_n(1), *b = msg_n(2);
    assert_int_equal(cch_layer_send(l, ch, a), 0); /* expires at 1100 */
    now_ms = 1050;
    assert_int_equal(cch_layer_send(l, ch, b), 0); /* expires at 1150 */
    now_ms = 1099;
    expect_receive(l, ch, a); /* not yet expired */
    assert_int_equal(cch_layer_send(l, ch, a), 0); /* expires at 1199 */
    now_ms = 1150;
    expect_receive(l, ch, a); /* b expired and was skipped */
    cch_layer_stats s = stats(l);
    assert_int_equal(s.expired, 1);
    assert_int_equal(cch__msg_refs(b), 1);
    /* a full channel whose messages expired accepts new ones */
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(l, ch, a), 0);
    assert_int_equal(cch_layer_send(l, ch, b), CCH_ECHANFULL);
    now_ms = 1250;
    assert_int_equal(cch_layer_send(l, ch, b), 0);
    s = stats(l);
    assert_int_equal(s.expired, 4);
    expect_receive(l, ch, b);
    expect_empty(l, ch);
    assert_int_equal(cch__msg_refs(a), 1);
    /* expiry on receive for everything pending */
    assert_int_equal(cch_layer_send(l, ch, a), 0);
    assert_int_equal(cch_layer_send(l, ch, b), 0);
    now_ms += 100;
    expect_empty(l, ch);
    s = stats(l);
    assert_int_equal(s.expired, 6);
    assert_int_equal(s.delivered, 3);
    cch_layer_unref(l);
    cch_msg_unref(a);
    cch_msg_unref(b);
}

static void test_release_channel(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    waker w = {0};
    cch_receiver *r = cch_layer_receiver_new(l, wake_fn, &w);
    char ch[CCH_NAME_BUF], other[CCH_NAME_BUF];
    int ud = 0;
    chan(l, r, &ud, ch);
    chan(l, r, &ud, other);
    cch_msg *m = msg("t");
    assert_int_equal(cch_layer_send(l, ch, m), 0);
    assert_int_equal(cch_layer_send(l, ch, m), 0);
    assert_int_equal(cch_layer_release_channel(l, ch), 0);
    assert_int_equal(cch__msg_refs(m), 1); /* pending messages dropped */
    cch_layer_stats s = stats(l);
    assert_int_equal(s.dropped, 2);
    cch_delivery d[4];
    assert_int_equal(cch_layer_poll(l, r, d, 4), 0); /* no longer reported */
    assert_int_equal(cch_layer_release_channel(l, ch), CCH_ENOTFOUND);
    assert_int_equal(cch_layer_release_channel(l, "never.made!x"), CCH_ENOTFOUND);
    /* the receiver's other channel still works */
    assert_int_equal(cch_layer_send(l, other, m), 0);
    assert_int_equal(cch_layer_poll(l, r, d, 4), 1);
    assert_ptr_equal(d[0].msg, m);
    assert_ptr_equal(d[0].channel_ud, &ud);
    cch_msg_unref(d[0].msg);

    /* a released channel that is still in a group stays a member (Channels: the
     * caller discards, group_expiry cleans up), now unbound */
    chan(l, r, &ud, ch);
    assert_int_equal(cch_layer_group_add(l, "room", ch), 0);
    assert_int_equal(cch_layer_send(l, ch, m), 0);
    int before = atomic_load(&w.calls);
    assert_int_equal(cch_layer_release_channel(l, ch), 0);
    assert_int_equal(member_count(l, "room"), 1);
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 1);
    assert_int_equal(atomic_load(&w.calls), before); /* unbound: no wakeup */
    assert_int_equal(cch_layer_poll(l, r, d, 4), 0);
    expect_receive(l, ch, m); /* readable as an unbound channel */
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(cch_layer_group_discard(l, "room", ch), 0);
    assert_int_equal(member_count(l, "room"), 0);
    assert_int_equal(cch_layer_release_channel(l, ch), 0); /* held only by its message */
    assert_int_equal(cch_layer_release_channel(l, ch), CCH_ENOTFOUND);
    assert_int_equal(cch__msg_refs(m), 1);
    /* a channel created by a send can be released too */
    assert_int_equal(cch_layer_send(l, "made.by.send", m), 0);
    assert_int_equal(cch_layer_release_channel(l, "made.by.send"), 0);
    expect_empty(l, "made.by.send");
    assert_int_equal(cch__msg_refs(m), 1);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    cch_msg_unref(m);
}

/* ---- receivers and poll ------------------------------------------------------------ */

static void test_poll_and_wakeup(void **state) {
    (void)state;
    cch_layer *l = new_layer(10, 100, 0);
    waker w = {0};
    cch_receiver *r = cch_layer_receiver_new(l, wake_fn, &w);
    assert_non_null(r);
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF];
    int ua, ub;
    chan(l, r, &ua, a);
    chan(l, r, &ub, b);
    cch_msg *m[6];
    for (int i = 0; i < 6; i++) m[i] = msg_n(i);
    cch_delivery d[8];

    assert_int_equal(cch_layer_send(l, a, m[0]), 0);
    assert_int_equal(atomic_load(&w.calls), 1); /* empty -> non-empty */
    assert_int_equal(cch_layer_send(l, a, m[1]), 0);
    assert_int_equal(cch_layer_send(l, b, m[2]), 0);
    assert_int_equal(atomic_load(&w.calls), 1); /* still pending: no new wakeup */
    /* a bound channel is read with poll, not receive */
    cch_msg *out = (cch_msg *)1;
    assert_int_equal(cch_layer_receive(l, a, &out), CCH_EINVAL);
    assert_null(out);

    assert_int_equal(cch_layer_poll(l, r, d, 8), 3);
    assert_ptr_equal(d[0].msg, m[0]); /* per channel, in arrival order */
    assert_ptr_equal(d[0].channel_ud, &ua);
    assert_ptr_equal(d[1].msg, m[1]);
    assert_ptr_equal(d[1].channel_ud, &ua);
    assert_ptr_equal(d[2].msg, m[2]);
    assert_ptr_equal(d[2].channel_ud, &ub);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cch__msg_refs(d[i].msg), 2); /* the poller's reference */
        cch_msg_unref(d[i].msg);
    }
    assert_int_equal(cch_layer_poll(l, r, d, 8), 0);
    assert_int_equal(cch_layer_send(l, b, m[3]), 0);
    assert_int_equal(atomic_load(&w.calls), 2); /* empty again -> non-empty */

    /* max limits a poll; what is left stays pending without a new wakeup */
    for (int i = 0; i < 5; i++) assert_int_equal(cch_layer_send(l, a, m[i]), 0);
    assert_int_equal(atomic_load(&w.calls), 2);
    int got = 0;
    int64_t last_a = -1;
    for (;;) {
        int n = cch_layer_poll(l, r, d, 2);
        assert_true(n >= 0 && n <= 2);
        for (int i = 0; i < n; i++) {
            if (d[i].channel_ud == &ua) {
                assert_true(msg_num(d[i].msg) > last_a);
                last_a = msg_num(d[i].msg);
            }
            cch_msg_unref(d[i].msg);
        }
        got += n;
        if (n < 2) break;
    }
    assert_int_equal(got, 6);
    assert_int_equal(atomic_load(&w.calls), 2);

    /* expired messages are dropped by poll and counted */
    assert_int_equal(cch_layer_send(l, a, m[0]), 0);
    assert_int_equal(atomic_load(&w.calls), 3);
    now_ms += 50;
    assert_int_equal(cch_layer_send(l, a, m[1]), 0);
    assert_int_equal(cch_layer_send(l, b, m[2]), 0);
    now_ms += 60; /* m[0] is expired, m[1] and m[2] are not */
    cch_layer_stats s0 = stats(l);
    assert_int_equal(cch_layer_poll(l, r, d, 8), 2);
    assert_ptr_equal(d[0].msg, m[1]);
    assert_ptr_equal(d[1].msg, m[2]);
    cch_msg_unref(d[0].msg);
    cch_msg_unref(d[1].msg);
    cch_layer_stats s1 = stats(l);
    assert_int_equal(s1.expired - s0.expired, 1);
    assert_int_equal(s1.delivered - s0.delivered, 2);
    /* a poll that finds only expired messages empties the ready list */
    assert_int_equal(cch_layer_send(l, a, m[0]), 0);
    assert_int_equal(atomic_load(&w.calls), 4);
    now_ms += 200;
    assert_int_equal(cch_layer_poll(l, r, d, 8), 0);
    assert_int_equal(cch_layer_send(l, a, m[0]), 0);
    assert_int_equal(atomic_load(&w.calls), 5);
    assert_int_equal(cch_layer_poll(l, r, d, 8), 1);
    cch_msg_unref(d[0].msg);

    /* a receiver without a wakeup works too */
    cch_receiver *quiet = cch_layer_receiver_new(l, NULL, NULL);
    char q[CCH_NAME_BUF];
    chan(l, quiet, NULL, q);
    assert_int_equal(cch_layer_send(l, q, m[5]), 0);
    assert_int_equal(cch_layer_poll(l, quiet, d, 8), 1);
    assert_null(d[0].channel_ud);
    cch_msg_unref(d[0].msg);
    assert_int_equal(cch_layer_poll(l, r, d, 8), 0); /* not r's */

    assert_int_equal(cch_layer_release_channel(l, a), 0);
    assert_int_equal(cch_layer_release_channel(l, b), 0);
    assert_int_equal(cch_layer_release_channel(l, q), 0);
    cch_layer_receiver_free(l, quiet);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(cch__msg_refs(m[i]), 1);
        cch_msg_unref(m[i]);
    }
}

static void test_receiver_free_unbinds(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    waker w = {0};
    cch_receiver *r = cch_layer_receiver_new(l, wake_fn, &w);
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF];
    chan(l, r, NULL, a);
    chan(l, r, NULL, b);
    cch_msg *m = msg("t");
    assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_int_equal(cch_layer_group_add(l, "g", b), 0);
    cch_layer_receiver_free(l, r);
    /* the channels remain, unbound: pending messages are read with receive */
    expect_receive(l, a, m);
    expect_empty(l, a);
    assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, NULL), 0);
    assert_int_equal(atomic_load(&w.calls), 1); /* only the first send woke it */
    expect_receive(l, b, m);
    assert_int_equal(cch_layer_release_channel(l, a), 0);
    assert_int_equal(cch_layer_release_channel(l, b), 0);
    cch_layer_unref(l);
    cch_msg_unref(m);
}

/* ---- groups -------------------------------------------------------------------------- */

/* A channel in many groups: the first membership is kept inline, the others in an
 * array that grows and shrinks; discards in every position (first, middle, last) and
 * the swap-removes in the groups' member arrays keep every index right. */
static void test_many_memberships(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    enum { NG = 9, NC = 4 };
    char c[NC][CCH_NAME_BUF], g[NG][8];
    for (int i = 0; i < NC; i++) chan(l, NULL, NULL, c[i]);
    for (int j = 0; j < NG; j++) {
        snprintf(g[j], sizeof g[j], "g%d", j);
        for (int i = 0; i < NC; i++) assert_int_equal(cch_layer_group_add(l, g[j], c[i]), 0);
        assert_int_equal(cch_layer_group_add(l, g[j], c[0]), 0); /* renew: still one */
    }
    bool in[NC][NG];
    for (int i = 0; i < NC; i++)
        for (int j = 0; j < NG; j++) in[i][j] = true;
    /* c[0] leaves its first group, then a middle one, then its last; c[1] the
     * others' way round; c[2] everything but g4 */
    static const int drops[][2] = {{0, 0}, {0, 4}, {0, 8}, {1, 8}, {1, 7}, {1, 0},
                                   {2, 0}, {2, 1}, {2, 2}, {2, 3}, {2, 5}, {2, 6},
                                   {2, 7}, {2, 8}, {0, 4}};
    cch_msg *m = msg("x");
    for (size_t d = 0; d < sizeof drops / sizeof drops[0]; d++) {
        int i = drops[d][0], j = drops[d][1];
        assert_int_equal(cch_layer_group_discard(l, g[j], c[i]), 0);
        in[i][j] = false;
        for (int jj = 0; jj < NG; jj++) {
            members mem = {0};
            assert_int_equal(cch_layer_group_members(l, g[jj], members_fn, &mem), 0);
            for (int ii = 0; ii < NC; ii++)
                assert_int_equal(members_has(&mem, c[ii]), in[ii][jj]);
        }
    }
    /* every group still reaches exactly its members */
    for (int j = 0; j < NG; j++) {
        cch_group_send_result res;
        assert_int_equal(cch_layer_group_send(l, g[j], m, NULL, &res), 0);
        size_t want = 0;
        for (int i = 0; i < NC; i++) want += in[i][j];
        assert_int_equal(res.delivered, want);
        for (int i = 0; i < NC; i++)
            if (in[i][j]) expect_receive(l, c[i], m);
        for (int i = 0; i < NC; i++) expect_empty(l, c[i]);
    }
    /* a released channel that is still in groups lives on; the last discard frees it */
    assert_int_equal(cch_layer_release_channel(l, c[2]), 0);
    assert_int_equal(cch_layer_group_discard(l, g[4], c[2]), 0);
    for (int i = 0; i < NC; i++)
        if (i != 2) assert_int_equal(cch_layer_release_channel(l, c[i]), 0);
    cch_msg_unref(m);
    cch_layer_unref(l);
}

static void test_group_send_basic(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    char c[3][CCH_NAME_BUF];
    for (int i = 0; i < 3; i++) {
        chan(l, NULL, NULL, c[i]);
        assert_int_equal(cch_layer_group_add(l, "room", c[i]), 0);
    }
    assert_int_equal(cch_layer_group_add(l, "room", c[0]), 0); /* again: still one */
    assert_int_equal(member_count(l, "room"), 3);
    members mem = {0};
    assert_int_equal(cch_layer_group_members(l, "room", members_fn, &mem), 0);
    for (int i = 0; i < 3; i++) assert_true(members_has(&mem, c[i]));

    cch_msg *m = msg("chat.message");
    cch_group_send_result res;
    memset(&res, 0xff, sizeof res);
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(res.full, 0);
    assert_int_equal(res.expired, 0);
    assert_int_equal(cch__msg_refs(m), 4); /* one shared message, three references */
    for (int i = 0; i < 3; i++) expect_receive(l, c[i], m);

    assert_int_equal(cch_layer_group_discard(l, "room", c[1]), 0);
    assert_int_equal(cch_layer_group_discard(l, "room", c[1]), 0); /* non-member: fine */
    assert_int_equal(cch_layer_group_discard(l, "nogroup", c[1]), 0);
    assert_int_equal(cch_layer_group_discard(l, "room", "unknown.chan!1"), 0);
    assert_int_equal(member_count(l, "room"), 2);
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 2);
    expect_receive(l, c[0], m);
    expect_empty(l, c[1]);
    expect_receive(l, c[2], m);

    /* unknown or empty groups: not an error */
    memset(&res, 0xff, sizeof res);
    assert_int_equal(cch_layer_group_send(l, "nobody", m, NULL, &res), 0);
    assert_int_equal(res.delivered + res.full + res.expired, 0);
    assert_int_equal(cch_layer_group_send(l, "nobody", m, NULL, NULL), 0);
    memset(&mem, 0, sizeof mem);
    assert_int_equal(cch_layer_group_members(l, "nobody", members_fn, &mem), 0);
    assert_int_equal(mem.calls, 1);
    assert_int_equal(mem.status, 0);
    assert_int_equal(mem.n, 0);
    /* a group emptied by discards behaves like an unknown one */
    assert_int_equal(cch_layer_group_discard(l, "room", c[0]), 0);
    assert_int_equal(cch_layer_group_discard(l, "room", c[2]), 0);
    assert_int_equal(member_count(l, "room"), 0);
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 0);
    /* group_add creates an unknown channel, which then receives */
    assert_int_equal(cch_layer_group_add(l, "room", "made.by.add"), 0);
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 1);
    expect_receive(l, "made.by.add", m);
    assert_int_equal(cch_layer_group_discard(l, "room", "made.by.add"), 0);
    assert_int_equal(cch_layer_release_channel(l, "made.by.add"), CCH_ENOTFOUND); /* freed */

    cch_layer_stats s = stats(l);
    assert_int_equal(s.sent, 6);
    assert_int_equal(s.delivered, 6);
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_release_channel(l, c[i]), 0);
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_group_exclude(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    char c[3][CCH_NAME_BUF], outsider[CCH_NAME_BUF];
    for (int i = 0; i < 3; i++) {
        chan(l, NULL, NULL, c[i]);
        assert_int_equal(cch_layer_group_add(l, "g", c[i]), 0);
    }
    chan(l, NULL, NULL, outsider);
    cch_msg *m = msg("t");
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "g", m, c[1], &res), 0);
    assert_int_equal(res.delivered, 2);
    expect_receive(l, c[0], m);
    expect_empty(l, c[1]);
    expect_receive(l, c[2], m);
    /* excluding a non-member or an unknown channel excludes nobody */
    assert_int_equal(cch_layer_group_send(l, "g", m, outsider, &res), 0);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(cch_layer_group_send(l, "g", m, "not.a.channel!x", &res), 0);
    assert_int_equal(res.delivered, 3);
    expect_empty(l, outsider);
    for (int i = 0; i < 3; i++) {
        expect_receive(l, c[i], m);
        expect_receive(l, c[i], m);
    }
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_group_full_members(void **state) {
    (void)state;
    cch_layer *l = new_layer(2, 0, 0);
    char c[4][CCH_NAME_BUF];
    for (int i = 0; i < 4; i++) {
        chan(l, NULL, NULL, c[i]);
        assert_int_equal(cch_layer_group_add(l, "g", c[i]), 0);
    }
    cch_msg *m = msg("t");
    /* fill c[1] and c[3] */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cch_layer_send(l, c[1], m), 0);
        assert_int_equal(cch_layer_send(l, c[3], m), 0);
    }
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 2);
    assert_int_equal(res.full, 2);
    assert_int_equal(res.expired, 0);
    cch_layer_stats s = stats(l);
    assert_int_equal(s.full, 2);
    assert_int_equal(s.sent, 6);
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 2);
    assert_int_equal(res.full, 2);
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 0); /* now everyone is full */
    assert_int_equal(res.full, 4);
    s = stats(l);
    assert_int_equal(s.full, 8);
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_group_expiry(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 1000000, 1000);
    char c[4][CCH_NAME_BUF];
    for (int i = 0; i < 4; i++) chan(l, NULL, NULL, c[i]);
    assert_int_equal(cch_layer_group_add(l, "g", c[0]), 0); /* t=1000, until 2000 */
    assert_int_equal(cch_layer_group_add(l, "g", c[1]), 0);
    now_ms = 1500;
    assert_int_equal(cch_layer_group_add(l, "g", c[2]), 0); /* until 2500 */
    assert_int_equal(cch_layer_group_add(l, "g", c[3]), 0);
    now_ms = 1800;
    assert_int_equal(cch_layer_group_add(l, "g", c[1]), 0); /* renewed until 2800 */
    now_ms = 1999;
    assert_int_equal(member_count(l, "g"), 4);
    cch_msg *m = msg("t");
    now_ms = 2000;
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(res.expired, 1);
    expect_empty(l, c[0]);
    for (int i = 1; i < 4; i++) expect_receive(l, c[i], m);
    cch_layer_stats s = stats(l);
    assert_int_equal(s.groups_expired, 1);
    /* presence drops expired members too */
    now_ms = 2600;
    members mem = {0};
    assert_int_equal(cch_layer_group_members(l, "g", members_fn, &mem), 0);
    assert_int_equal(mem.n, 1);
    assert_string_equal(mem.names[0], c[1]);
    s = stats(l);
    assert_int_equal(s.groups_expired, 3);
    /* re-adding after expiry makes a new membership */
    assert_int_equal(cch_layer_group_add(l, "g", c[0]), 0);
    assert_int_equal(member_count(l, "g"), 2);
    /* everything expired: the group is empty */
    now_ms = 10000;
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 0);
    assert_int_equal(res.expired, 2);
    assert_int_equal(member_count(l, "g"), 0);
    /* an expired membership of an excluded channel is still removed */
    now_ms = 20000;
    assert_int_equal(cch_layer_group_add(l, "g", c[0]), 0);
    assert_int_equal(cch_layer_group_add(l, "g", "tmp.chan"), 0);
    now_ms = 21000;
    assert_int_equal(cch_layer_group_send(l, "g", m, "tmp.chan", &res), 0);
    assert_int_equal(res.expired, 2);
    assert_int_equal(cch_layer_release_channel(l, "tmp.chan"), CCH_ENOTFOUND); /* freed */
    /* presence of a group whose members all expired: empty, and the group is gone */
    uint64_t before = stats(l).groups_expired;
    assert_int_equal(cch_layer_group_add(l, "short", c[0]), 0);
    assert_int_equal(cch_layer_group_add(l, "short", c[1]), 0);
    now_ms += 5000;
    assert_int_equal(member_count(l, "short"), 0);
    assert_int_equal(stats(l).groups_expired, before + 2);
    assert_int_equal(member_count(l, "short"), 0);
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_group_wakeups(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    enum { NR = 40, PER = 3 }; /* more receivers than the layer's on-stack wake list */
    waker w[NR];
    cch_receiver *r[NR];
    char names[NR][PER][CCH_NAME_BUF];
    int uds[NR][PER];
    memset(w, 0, sizeof w);
    for (int i = 0; i < NR; i++) {
        r[i] = cch_layer_receiver_new(l, wake_fn, &w[i]);
        for (int j = 0; j < PER; j++) {
            chan(l, r[i], &uds[i][j], names[i][j]);
            assert_int_equal(cch_layer_group_add(l, "g", names[i][j]), 0);
        }
    }
    cch_msg *m = msg("t");
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(res.delivered, NR * PER);
    for (int i = 0; i < NR; i++) assert_int_equal(atomic_load(&w[i].calls), 1); /* once each */
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    for (int i = 0; i < NR; i++) assert_int_equal(atomic_load(&w[i].calls), 1);
    /* receiver 0 drains everything, receiver 1 only part */
    cch_delivery d[16];
    assert_int_equal(cch_layer_poll(l, r[0], d, 16), 2 * PER);
    for (int k = 0; k < 2 * PER; k++) {
        assert_ptr_equal(d[k].msg, m);
        assert_true(d[k].channel_ud >= (void *)&uds[0][0] &&
                    d[k].channel_ud <= (void *)&uds[0][PER - 1]);
        cch_msg_unref(d[k].msg);
    }
    assert_int_equal(cch_layer_poll(l, r[1], d, 1), 1);
    cch_msg_unref(d[0].msg);
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), 0);
    assert_int_equal(atomic_load(&w[0].calls), 2); /* went empty -> non-empty */
    assert_int_equal(atomic_load(&w[1].calls), 1); /* never went empty */
    assert_int_equal(atomic_load(&w[2].calls), 1);
    for (int i = 0; i < NR; i++) {
        for (int j = 0; j < PER; j++)
            assert_int_equal(cch_layer_release_channel(l, names[i][j]), 0);
        cch_layer_receiver_free(l, r[i]);
    }
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

/* cch__memory_send_many: one message to many names in one call, per-name results,
 * one wakeup per receiver, and channel handles cached until a channel is freed. */
static void test_send_many(void **state) {
    (void)state;
    cch_layer *l = new_layer(2, 0, 0);
    enum { NR = 40 }; /* more receivers than the layer's on-stack wake list */
    waker w[NR];
    cch_receiver *r[NR];
    char names[NR + 1][CCH_NAME_BUF];
    const char *np[NR + 1];
    size_t lens[NR + 1];
    int rcs[NR + 1], uds[NR];
    memset(w, 0, sizeof w);
    for (int i = 0; i < NR; i++) {
        r[i] = cch_layer_receiver_new(l, wake_fn, &w[i]);
        chan(l, r[i], &uds[i], names[i]);
    }
    snprintf(names[NR], CCH_NAME_BUF, "plain");           /* made on first send */
    for (int i = 0; i <= NR; i++) {
        np[i] = names[i];
        lens[i] = strlen(names[i]);
    }
    cch__mem_handles h = {0};
    cch_msg *m = msg("t");
    assert_int_equal(cch_layer_send(l, names[3], m), 0);    /* names[3]: one left */
    for (int round = 0; round < 3; round++) {
        assert_int_equal(cch__memory_send_many(l, m, np, lens, NR + 1, &h, rcs), 0);
        assert_int_equal(h.n, NR + 1); /* resolved once, then used */
        for (int i = 0; i <= NR; i++)
            assert_int_equal(rcs[i], round < (i == 3 ? 1 : 2) ? 0 : CCH_ECHANFULL);
        for (int i = 0; i < NR; i++) assert_int_equal(atomic_load(&w[i].calls), 1);
    }
    cch_layer_stats s = stats(l);
    assert_int_equal(s.sent, 1 + 2 * (NR + 1) - 1);
    assert_int_equal(s.full, NR + 1 + 1);
    /* drain and release names[0]: its channel is freed, so the handles are stale */
    cch_delivery d[4];
    assert_int_equal(cch_layer_poll(l, r[0], d, 4), 2);
    for (int k = 0; k < 2; k++) cch_msg_unref(d[k].msg);
    assert_int_equal(cch_layer_release_channel(l, names[0]), 0);
    assert_int_equal(cch__memory_send_many(l, m, np, lens, NR + 1, &h, rcs), 0);
    assert_int_equal(rcs[0], 0); /* looked up again: a new, unbound channel */
    assert_int_equal(rcs[1], CCH_ECHANFULL);
    expect_receive(l, names[0], m);
    expect_empty(l, names[0]);
    cch__mem_handles_free(&h);
    assert_null(h.ch);
    for (int i = 0; i < NR; i++) {
        if (i) assert_int_equal(cch_layer_release_channel(l, names[i]), 0);
        cch_layer_receiver_free(l, r[i]);
    }
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

/* Random group operations checked against a simple model: exercises the dense arrays,
 * swap-remove and the per-channel membership indexes. */
static void test_group_model(void **state) {
    (void)state;
    enum { NG = 5, NC = 24, STEPS = 4000 };
    cch_layer *l = new_layer(1000000, 0, 0);
    char ch[NC][CCH_NAME_BUF];
    char groups[NG][8];
    bool in[NG][NC];
    memset(in, 0, sizeof in);
    for (int i = 0; i < NC; i++) chan(l, NULL, NULL, ch[i]);
    for (int g = 0; g < NG; g++) snprintf(groups[g], sizeof groups[g], "g%d", g);
    uint32_t seed = 42;
    cch_msg *m = msg("t");
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        int g = (int)((seed >> 8) % NG), c = (int)((seed >> 16) % NC), op = (int)((seed >> 24) % 3);
        if (op == 0) {
            assert_int_equal(cch_layer_group_add(l, groups[g], ch[c]), 0);
            in[g][c] = true;
        } else if (op == 1) {
            assert_int_equal(cch_layer_group_discard(l, groups[g], ch[c]), 0);
            in[g][c] = false;
        } else {
            cch_group_send_result res;
            assert_int_equal(cch_layer_group_send(l, groups[g], m, NULL, &res), 0);
            size_t want = 0;
            for (int i = 0; i < NC; i++) {
                if (!in[g][i]) {
                    expect_empty(l, ch[i]);
                    continue;
                }
                want++;
                expect_receive(l, ch[i], m);
            }
            assert_int_equal(res.delivered, want);
        }
        if (step % 500 == 0) {
            for (int gg = 0; gg < NG; gg++) {
                members mem = {0};
                assert_int_equal(cch_layer_group_members(l, groups[gg], members_fn, &mem), 0);
                size_t want = 0;
                for (int i = 0; i < NC; i++) {
                    if (in[gg][i]) {
                        want++;
                        assert_true(members_has(&mem, ch[i]));
                    }
                }
                assert_int_equal(mem.n, want);
            }
        }
    }
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

static void test_sweep_unread_channels(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 100, 0);
    cch_msg *m = msg("t");
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "nobody.reads.%d", i);
        assert_int_equal(cch_layer_send(l, name, m), 0);
    }
    assert_int_equal(cch__msg_refs(m), 51);
    now_ms += 200; /* all expired */
    /* later operations sweep a few unread channels each: messages and channels go */
    cch_msg *m2 = msg("u");
    for (int i = 0; i < 60; i++) {
        assert_int_equal(cch_layer_send(l, "reader", m2), 0);
        expect_receive(l, "reader", m2);
    }
    assert_int_equal(cch__msg_refs(m), 1);
    cch_layer_stats s = stats(l);
    assert_int_equal(s.expired, 50);
    /* owned channels are kept, only their expired messages go */
    char own[CCH_NAME_BUF];
    chan(l, NULL, NULL, own);
    assert_int_equal(cch_layer_send(l, own, m), 0);
    now_ms += 200;
    for (int i = 0; i < 10; i++) assert_int_equal(cch_layer_send(l, "x", m2), 0);
    assert_int_equal(cch__msg_refs(m), 1);
    assert_int_equal(cch_layer_send(l, own, m), 0);
    expect_receive(l, own, m);
    cch_layer_unref(l);
    cch_msg_unref(m);
    cch_msg_unref(m2);
}

/* A bound channel holds a ring only while it has messages: poll gives a drained ring
 * back to the layer's slabs, the channel's next burst takes one of the size it needed
 * from there (no allocation); the slabs a receiver's turn did not need are unmapped. */
static void test_ring_pool(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF], other[CCH_NAME_BUF];
    int ua, ub;
    chan(l, r, &ua, a);
    chan(l, r, &ub, b);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 0);   /* idle channels: no ring */
    cch_msg *m[12];
    for (int i = 0; i < 12; i++) m[i] = msg_n(i);
    cch_delivery d[32];
    for (int round = 0; round < 3; round++) {
        if (round > 0) fail_after(0); /* rings come from slabs, not the heap */
        for (int i = 0; i < 12; i++) assert_int_equal(cch_layer_send(l, a, m[i]), 0);
        alloc_restore();
        assert_int_equal(cch_layer_poll(l, r, d, 32), 12);
        for (int i = 0; i < 12; i++) {
            assert_ptr_equal(d[i].msg, m[i]); /* in order, across the ring's growth */
            assert_ptr_equal(d[i].channel_ud, &ua);
            cch_msg_unref(d[i].msg);
        }
        /* the turn's slabs are kept for the next turn: in the first, those of the
         * 4- and 8-entry rings a outgrew too; then only the 16-entry ring's */
        assert_int_equal(cch__memory_layer_ring_slabs(l), round == 0 ? 3 : 1);
    }
    /* a turn with b's small ring only: a's slab was not needed, it is unmapped */
    assert_int_equal(cch_layer_send(l, b, m[0]), 0);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 2);
    assert_int_equal(cch_layer_poll(l, r, d, 32), 1);
    assert_ptr_equal(d[0].channel_ud, &ub);
    cch_msg_unref(d[0].msg);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 1);
    /* a poll that finds nothing right after a turn keeps the turn's slabs; one
     * RING_POOL_IDLE_MS later (the host's idle poll) gives them all back */
    assert_int_equal(cch_layer_poll(l, r, d, 32), 0);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 1);
    now_ms += 100;
    assert_int_equal(cch_layer_poll(l, r, d, 32), 0);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 0);
    assert_int_equal(cch_layer_send(l, a, m[1]), 0);
    chan(l, NULL, NULL, other);
    /* released channels drop their messages; their rings go back with them */
    assert_int_equal(cch_layer_release_channel(l, a), 0);
    assert_int_equal(cch_layer_release_channel(l, b), 0);
    assert_int_equal(cch__msg_refs(m[1]), 1);
    assert_int_equal(cch_layer_release_channel(l, other), 0);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(cch__msg_refs(m[i]), 1);
        cch_msg_unref(m[i]);
    }
}

/* A fanout storm (a room of 3000 members, each joining member announced to the room
 * several times per turn) takes rings from slabs shared by many channels; once the
 * receiver is idle, every slab is unmapped, and the layer works on. */
static void test_ring_slabs_storm(void **state) {
    (void)state;
    enum { N = 3000 };
    cch_layer *l = new_layer(0, 0, 0);
    cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
    static char names[N][CCH_NAME_BUF];
    static cch_delivery d[8 * N];
    cch_msg *m = msg("chat.notice");
    for (int i = 0; i < N; i++) {
        chan(l, r, NULL, names[i]);
        assert_int_equal(cch_layer_group_add(l, "room", names[i]), 0);
        if (i % 500 == 499) {
            for (int k = 0; k < 7; k++) assert_int_equal(cch_layer_group_send(l, "room", m, NULL, NULL), 0);
            size_t got = 0;
            int n;
            while ((n = cch_layer_poll(l, r, d, 8 * N)) > 0) {
                for (int j = 0; j < n; j++) cch_msg_unref(d[j].msg);
                got += (size_t)n;
            }
            assert_int_equal(got, 7 * (size_t)(i + 1));
            assert_true(cch__memory_layer_ring_slabs(l) >= 1);
            /* (i+1) rings of 8 entries (128 B): at most 512 to a 64 KiB slab, plus one
             * partly used slab */
            assert_true(cch__memory_layer_ring_slabs(l) <= (size_t)(i + 1) / 511 + 2);
        }
    }
    now_ms += 100;
    assert_int_equal(cch_layer_poll(l, r, d, 8), 0);
    assert_int_equal(cch__memory_layer_ring_slabs(l), 0);
    assert_int_equal(cch_layer_group_send(l, "room", m, NULL, NULL), 0);
    assert_int_equal(cch_layer_poll(l, r, d, 8 * N), N);
    for (int j = 0; j < N; j++) cch_msg_unref(d[j].msg);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

/* The slab pool under the rings (lib/core/slab.h): objects are distinct and aligned,
 * a slab is unmapped only by a trim once none of its objects is in use, and a trim
 * keeps the slabs the last period needed at once. */
static void test_slab_pool(void **state) {
    (void)state;
    cch__slab_pool p;
    cch__slab_pool_init(&p, 100);               /* rounded up to 112 */
    assert_int_equal(p.obj_size, 112);
    enum { N = 2000 };
    static void *o[N];
    for (int i = 0; i < N; i++) {
        o[i] = cch__slab_take(&p);
        assert_non_null(o[i]);
        assert_int_equal((uintptr_t)o[i] % 16, 0);
        memset(o[i], 0xa5, 112);                /* ASan/UBSan: the whole object is ours */
    }
    size_t slabs = cch__slab_count(&p);
    assert_int_equal(slabs, (N + p.cap - p.first - 1) / (p.cap - p.first));
    for (int i = 0; i < N; i += 2) cch__slab_give(&p, o[i]);
    cch__slab_trim(&p, false);                  /* every slab still has objects in use */
    assert_int_equal(cch__slab_count(&p), slabs);
    for (int i = 1; i < N; i += 2) cch__slab_give(&p, o[i]);
    assert_int_equal(cch__slab_count(&p), slabs); /* empty, kept until a trim */
    cch__slab_trim(&p, false);                  /* the period needed them all: kept */
    assert_int_equal(cch__slab_count(&p), slabs);
    void *x = cch__slab_take(&p);               /* reuses a kept slab */
    assert_non_null(x);
    cch__slab_give(&p, x);
    cch__slab_trim(&p, false);                  /* this period needed one */
    assert_int_equal(cch__slab_count(&p), 1);
    cch__slab_trim(&p, true);
    assert_int_equal(cch__slab_count(&p), 0);
    x = cch__slab_take(&p);
    assert_non_null(x);
    cch__slab_give(&p, x);
    cch__slab_pool_free(&p);
    assert_int_equal(cch__slab_count(&p), 0);
}

static int attach_freed;
static void attach_free(void *p) {
    (void)p;
    attach_freed++;
}

static void test_destroy_with_everything(void **state) {
    (void)state;
    cch_layer *l = new_layer(0, 0, 0);
    cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
    cch_receiver *r2 = cch_layer_receiver_new(l, NULL, NULL);
    (void)r2;
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF];
    chan(l, r, NULL, a);
    chan(l, NULL, NULL, b);
    cch_msg *m = msg("t");
    static int key;
    attach_freed = 0;
    cch_msg_attach(m, &key, &key, attach_free);
    assert_int_equal(cch_layer_group_add(l, "g1", a), 0);
    assert_int_equal(cch_layer_group_add(l, "g1", b), 0);
    assert_int_equal(cch_layer_group_add(l, "g2", "x"), 0);
    assert_int_equal(cch_layer_group_send(l, "g1", m, NULL, NULL), 0);
    assert_int_equal(cch_layer_send(l, "y", m), 0);
    cch_msg_unref(m);
    assert_int_equal(attach_freed, 0);
    cch_layer_unref(l); /* frees receivers, channels, groups and the queued references */
    assert_int_equal(attach_freed, 1);
}

/* ---- flow control ------------------------------------------------------------------ */

static void drain(cch_layer *l, cch_receiver *r, size_t max) {
    cch_delivery d[64];
    int n = cch_layer_poll(l, r, d, max < 64 ? max : 64);
    assert_true(n >= 0);
    for (int i = 0; i < n; i++) cch_msg_unref(d[i].msg);
}

/* Congested while a bound channel holds more than half the capacity and is not full;
 * calm again (and every other receiver woken) when the last such channel goes back
 * under the mark, whichever way (poll, expiry, release, its receiver's end), or is
 * full. */
static void test_congestion(void **state) {
    (void)state;
    cch_layer *l = new_layer(8, 10000, 0); /* high-water mark: 4 */
    waker w1 = {0}, w2 = {0}, w3 = {0};
    cch_receiver *r1 = cch_layer_receiver_new(l, wake_fn, &w1);
    cch_receiver *r2 = cch_layer_receiver_new(l, wake_fn, &w2);
    cch_receiver *r3 = cch_layer_receiver_new(l, wake_fn, &w3);
    char a[CCH_NAME_BUF], b[CCH_NAME_BUF], u[CCH_NAME_BUF];
    chan(l, r1, NULL, a);
    chan(l, r2, NULL, b);
    chan(l, NULL, NULL, u); /* unbound: nobody polls it, it never counts */
    assert_int_equal(cch_layer_group_add(l, "g", a), 0);
    assert_int_equal(cch_layer_group_add(l, "g", b), 0);
    assert_int_equal(cch_layer_group_add(l, "g", u), 0);
    cch_msg *m = msg("t");
    assert_false(cch_layer_congested(l));
    for (int i = 0; i < 4; i++) assert_int_equal(cch_layer_group_send(l, "g", m, NULL, NULL), 0);
    assert_false(cch_layer_congested(l)); /* 4 each: at the mark, not above */
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, NULL), 0);
    assert_true(cch_layer_congested(l));
    assert_int_equal(stats(l).congested, 1);

    /* r1 drains part of its channel: 2 left, under the mark; b still holds 5 */
    drain(l, r1, 3);
    assert_true(cch_layer_congested(l));
    /* r2 drains: calm; r1 and r3 are woken, not r2 (its own poll did it) */
    int c1 = atomic_load(&w1.calls), c2 = atomic_load(&w2.calls), c3 = atomic_load(&w3.calls);
    drain(l, r2, 64);
    assert_false(cch_layer_congested(l));
    assert_int_equal(atomic_load(&w1.calls), c1 + 1);
    assert_int_equal(atomic_load(&w2.calls), c2);
    assert_int_equal(atomic_load(&w3.calls), c3 + 1);
    drain(l, r1, 64);
    for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(l, u, m), 0); /* 5 + 3 */
    assert_false(cch_layer_congested(l)); /* the unbound channel is full: no matter */

    /* a full channel is no congestion (its receiver stopped keeping up): calm */
    c3 = atomic_load(&w3.calls);
    for (int i = 0; i < 7; i++) assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_true(cch_layer_congested(l));
    assert_int_equal(stats(l).congested, 2);
    assert_int_equal(cch_layer_send(l, a, m), 0); /* 8: full */
    assert_false(cch_layer_congested(l));
    assert_int_equal(atomic_load(&w3.calls), c3 + 1);
    assert_int_equal(cch_layer_send(l, a, m), CCH_ECHANFULL);
    assert_false(cch_layer_congested(l));
    /* a send that purges a full channel's expired messages: back under the mark */
    now_ms += 20000;
    assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_false(cch_layer_congested(l));
    /* expiry seen by poll */
    for (int i = 0; i < 5; i++) assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_true(cch_layer_congested(l));
    now_ms += 20000;
    drain(l, r1, 64);
    assert_false(cch_layer_congested(l));

    /* release of a hot channel */
    for (int i = 0; i < 5; i++) assert_int_equal(cch_layer_send(l, b, m), 0);
    assert_true(cch_layer_congested(l));
    c1 = atomic_load(&w1.calls);
    assert_int_equal(cch_layer_release_channel(l, b), 0);
    assert_false(cch_layer_congested(l));
    assert_int_equal(atomic_load(&w1.calls), c1 + 1);

    /* the end of a receiver that never polls: its channels stop counting */
    for (int i = 0; i < 6; i++) assert_int_equal(cch_layer_send(l, a, m), 0);
    assert_true(cch_layer_congested(l));
    c3 = atomic_load(&w3.calls);
    cch_layer_receiver_free(l, r1);
    assert_false(cch_layer_congested(l));
    assert_int_equal(atomic_load(&w3.calls), c3 + 1);
    assert_int_equal(stats(l).congested, 5);
    assert_int_equal(stats(l).full, 1);

    /* capacity 2: nothing between the mark (1) and full; capacity 3: 2 messages */
    cch_layer_receiver_free(l, r2);
    cch_layer_receiver_free(l, r3);
    cch_layer_unref(l);
    for (size_t cap = 2; cap <= 3; cap++) {
        l = new_layer(cap, 0, 0);
        cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
        chan(l, r, NULL, a);
        assert_int_equal(cch_layer_send(l, a, m), 0);
        assert_int_equal(cch_layer_send(l, a, m), 0);
        assert_int_equal(cch_layer_congested(l), cap == 3);
        drain(l, r, 1);
        assert_false(cch_layer_congested(l));
        cch_layer_receiver_free(l, r);
        cch_layer_unref(l);
    }
    cch_msg_unref(m);
}

/* More receivers than the wakeup stack holds: all are woken from an allocated list;
 * without memory for it nobody is (the hosts bound their pauses), and nothing leaks. */
static void test_congestion_many_receivers(void **state) {
    (void)state;
    enum { N = 40 };
    cch_layer *l = new_layer(4, 0, 0); /* mark: 2 */
    waker w[N];
    cch_receiver *r[N];
    for (int i = 0; i < N; i++) {
        atomic_init(&w[i].calls, 0);
        r[i] = cch_layer_receiver_new(l, wake_fn, &w[i]);
    }
    char a[CCH_NAME_BUF];
    chan(l, r[0], NULL, a);
    cch_msg *m = msg("t");
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++) assert_int_equal(cch_layer_send(l, a, m), 0);
        assert_true(cch_layer_congested(l));
        int before[N];
        for (int i = 0; i < N; i++) before[i] = atomic_load(&w[i].calls);
        if (round == 1) fail_after(0);
        drain(l, r[0], 64);
        if (round == 1) alloc_restore();
        assert_false(cch_layer_congested(l));
        for (int i = 1; i < N; i++)
            assert_int_equal(atomic_load(&w[i].calls), before[i] + (round == 0));
    }
    for (int i = 0; i < N; i++) cch_layer_receiver_free(l, r[i]);
    cch_msg_unref(m);
    cch_layer_unref(l);
}

/* ---- out of memory ----------------------------------------------------------------- */

static void test_enomem(void **state) {
    (void)state;
    cch_msg *m = msg("t");
    /* the layer itself */
    fail_after(0);
    assert_null(cch_memory_layer_new(NULL));
    alloc_restore();

    cch_layer *l = new_layer(0, 0, 0);
    char a[CCH_NAME_BUF];
    /* receivers */
    fail_after(0);
    assert_null(cch_layer_receiver_new(l, NULL, NULL));
    alloc_restore();

    /* new_channel: every allocation it makes may fail; nothing is left behind */
    int k;
    for (k = 0;; k++) {
        fail_after(k);
        int rc = cch_layer_new_channel(l, NULL, NULL, NULL, a, sizeof a);
        alloc_restore();
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
        assert_int_equal(a[0], '\0');
    }
    assert_true(k > 0);

    /* send: creating the channel or its ring may fail */
    for (k = 0;; k++) {
        fail_after(k);
        int rc = cch_layer_send(l, "fresh", m);
        alloc_restore();
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
        assert_int_equal(cch__msg_refs(m), 1);
        assert_int_equal(cch_layer_release_channel(l, "fresh"), CCH_ENOTFOUND);
    }
    assert_true(k > 0);
    expect_receive(l, "fresh", m);
    /* ring growth of an existing channel */
    for (int i = 0; i < 4; i++) assert_int_equal(cch_layer_send(l, a, m), 0);
    fail_after(0);
    assert_int_equal(cch_layer_send(l, a, m), CCH_ENOMEM); /* the ring needs to double */
    alloc_restore();
    assert_int_equal(cch__msg_refs(m), 5);
    assert_int_equal(cch_layer_send(l, a, m), 0);
    for (int i = 0; i < 5; i++) expect_receive(l, a, m);
    fail_after(0); /* the ring is kept: no allocation now */
    assert_int_equal(cch_layer_send(l, a, m), 0);
    alloc_restore();
    expect_receive(l, a, m);

    /* group_add: the group, the channel, the member array, the membership list */
    for (k = 0;; k++) {
        fail_after(k);
        int rc = cch_layer_group_add(l, "g", "new.member");
        alloc_restore();
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
        assert_int_equal(member_count(l, "g"), 0);
        assert_int_equal(cch_layer_release_channel(l, "new.member"), CCH_ENOTFOUND);
    }
    assert_true(k >= 3);
    assert_int_equal(member_count(l, "g"), 1);
    /* growing an existing group's array: failure leaves it unchanged */
    char more[8][CCH_NAME_BUF];
    for (int i = 0; i < 3; i++) {
        chan(l, NULL, NULL, more[i]);
        assert_int_equal(cch_layer_group_add(l, "g", more[i]), 0);
    }
    chan(l, NULL, NULL, more[3]);
    fail_after(0);
    assert_int_equal(cch_layer_group_add(l, "g", more[3]), CCH_ENOMEM);
    alloc_restore();
    assert_int_equal(member_count(l, "g"), 4);
    /* the membership list of a channel in a second group */
    assert_int_equal(cch_layer_group_add(l, "h", more[3]), 0);
    assert_int_equal(cch_layer_group_add(l, "h2", more[3]), 0);
    fail_after(1); /* the group "h3" itself, then its member array fails */
    assert_int_equal(cch_layer_group_add(l, "h3", more[3]), CCH_ENOMEM);
    alloc_restore();
    assert_int_equal(member_count(l, "h3"), 0);
    for (k = 0;; k++) {
        fail_after(k);
        int rc = cch_layer_group_add(l, "h3", more[3]);
        alloc_restore();
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
    }
    assert_int_equal(member_count(l, "h3"), 1);
    assert_int_equal(member_count(l, "h"), 1);

    /* group_send: a member whose ring cannot grow is skipped, counted as dropped and
     * reported; the others get the message */
    cch_layer_set_log(l, log_fn, NULL);
    log_calls = 0;
    fail_after(1); /* one ring can be made, the next cannot */
    cch_group_send_result res;
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, &res), CCH_ENOMEM);
    alloc_restore();
    assert_int_equal(res.delivered, 1);
    assert_int_equal(log_calls, 1);
    assert_int_equal(log_level, CCH_LOG_ERROR);
    cch_layer_stats s = stats(l);
    assert_int_equal(s.dropped, 3);
    assert_int_equal(cch__msg_refs(m), 2);
    /* presence needs one allocation for the names */
    members mem = {0};
    fail_after(0);
    assert_int_equal(cch_layer_group_members(l, "g", members_fn, &mem), CCH_ENOMEM);
    alloc_restore();
    assert_int_equal(mem.calls, 0);
    /* with many receivers, group_send needs a wake list: failing it sends nothing */
    cch_receiver *rs[40];
    char rc_names[40][CCH_NAME_BUF];
    for (int i = 0; i < 40; i++) {
        rs[i] = cch_layer_receiver_new(l, NULL, NULL);
        chan(l, rs[i], NULL, rc_names[i]);
        assert_int_equal(cch_layer_group_add(l, "many", rc_names[i]), 0);
    }
    fail_after(0);
    assert_int_equal(cch_layer_group_send(l, "many", m, NULL, &res), CCH_ENOMEM);
    alloc_restore();
    assert_int_equal(res.delivered, 0);
    assert_int_equal(cch__msg_refs(m), 2);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(cch_layer_release_channel(l, rc_names[i]), 0);
        cch_layer_receiver_free(l, rs[i]);
    }
    cch_layer_unref(l);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

/* ---- threads ------------------------------------------------------------------------- */

#define TH_SENDERS 4
#define TH_MSGS 2500
#define TH_MEMBERS 8

typedef struct th_shared {
    cch_layer *l;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending; /* wakeups not yet seen */
    atomic_int wakeups;
} th_shared;

static void th_wake(void *ud) {
    th_shared *s = ud;
    atomic_fetch_add(&s->wakeups, 1);
    pthread_mutex_lock(&s->mu);
    s->pending = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

typedef struct th_sender {
    th_shared *s;
    int id;
} th_sender;

static void *th_send(void *arg) {
    th_sender *t = arg;
    for (int i = 0; i < TH_MSGS; i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "{\"t\":%d,\"n\":%d}", t->id, i);
        cch_msg *m = cch_msg_new("t", body, (size_t)n);
        cch_group_send_result res;
        int rc = cch_layer_group_send(t->s->l, "room", m, NULL, &res);
        if (rc != 0 || res.delivered != TH_MEMBERS) abort();
        cch_msg_unref(m);
    }
    return NULL;
}

static void test_threads_group_send(void **state) {
    (void)state;
    cch_memory_layer_options o = {.capacity = TH_SENDERS * TH_MSGS};
    th_shared sh = {.l = cch_memory_layer_new(&o)};
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    cch_layer *l = sh.l;
    cch_receiver *r = cch_layer_receiver_new(l, th_wake, &sh);
    char names[TH_MEMBERS][CCH_NAME_BUF];
    int idx[TH_MEMBERS];
    for (int i = 0; i < TH_MEMBERS; i++) {
        idx[i] = i;
        chan(l, r, &idx[i], names[i]);
        assert_int_equal(cch_layer_group_add(l, "room", names[i]), 0);
    }
    pthread_t th[TH_SENDERS];
    th_sender ts[TH_SENDERS];
    for (int i = 0; i < TH_SENDERS; i++) {
        ts[i] = (th_sender){&sh, i};
        pthread_create(&th[i], NULL, th_send, &ts[i]);
    }
    /* this thread is the receiver's loop: wait for a wakeup, then poll until empty */
    int last[TH_MEMBERS][TH_SENDERS];
    memset(last, 0xff, sizeof last); /* -1 */
    long total = 0, want = (long)TH_SENDERS * TH_MSGS * TH_MEMBERS;
    cch_delivery d[64];
    while (total < want) {
        pthread_mutex_lock(&sh.mu);
        while (!sh.pending) pthread_cond_wait(&sh.cv, &sh.mu);
        sh.pending = 0;
        pthread_mutex_unlock(&sh.mu);
        int n;
        while ((n = cch_layer_poll(l, r, d, 64)) > 0) {
            for (int i = 0; i < n; i++) {
                int member = *(int *)d[i].channel_ud;
                int64_t t = -1, seq = -1;
                assert_int_equal(cch_msg_field_int(d[i].msg, "t", &t), 0);
                assert_int_equal(cch_msg_field_int(d[i].msg, "n", &seq), 0);
                /* each sender's messages arrive in order on every member */
                assert_int_equal(seq, last[member][t] + 1);
                last[member][t] = (int)seq;
                cch_msg_unref(d[i].msg);
            }
            total += n;
        }
    }
    for (int i = 0; i < TH_SENDERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(total, want);
    assert_int_equal(cch_layer_poll(l, r, d, 64), 0);
    for (int mbr = 0; mbr < TH_MEMBERS; mbr++)
        for (int t = 0; t < TH_SENDERS; t++) assert_int_equal(last[mbr][t], TH_MSGS - 1);
    cch_layer_stats s = stats(l);
    assert_int_equal(s.sent, (uint64_t)want);
    assert_int_equal(s.delivered, (uint64_t)want);
    assert_int_equal(s.full + s.expired + s.dropped, 0);
    assert_true(atomic_load(&sh.wakeups) >= 1);
    for (int i = 0; i < TH_MEMBERS; i++) assert_int_equal(cch_layer_release_channel(l, names[i]), 0);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    pthread_mutex_destroy(&sh.mu);
    pthread_cond_destroy(&sh.cv);
}

/* Senders, group changes and pollers on several threads at once. */
typedef struct churn {
    cch_layer *l;
    atomic_int stop;
    atomic_long received;
} churn;

static void *churn_sender(void *arg) {
    churn *c = arg;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    for (int i = 0; i < 5000; i++) {
        cch_layer_group_send(c->l, (i & 1) ? "a" : "b", m, NULL, NULL);
        cch_layer_send(c->l, "direct", m);
    }
    cch_msg_unref(m);
    return NULL;
}

static void *churn_member(void *arg) {
    churn *c = arg;
    cch_receiver *r = cch_layer_receiver_new(c->l, NULL, NULL);
    cch_delivery d[16];
    for (int i = 0; i < 300; i++) {
        char name[CCH_NAME_BUF];
        if (cch_layer_new_channel(c->l, "churn", r, NULL, name, sizeof name) != 0) abort();
        cch_layer_group_add(c->l, "a", name);
        cch_layer_group_add(c->l, "b", name);
        for (int k = 0; k < 5; k++) {
            int n = cch_layer_poll(c->l, r, d, 16);
            for (int j = 0; j < n; j++) cch_msg_unref(d[j].msg);
            atomic_fetch_add(&c->received, n);
        }
        cch_layer_group_discard(c->l, "a", name);
        cch_layer_group_discard(c->l, "b", name);
        cch_layer_release_channel(c->l, name);
        cch_msg *got;
        while (cch_layer_receive(c->l, "direct", &got) == 0) cch_msg_unref(got);
    }
    cch_layer_receiver_free(c->l, r);
    return NULL;
}

static void test_threads_churn(void **state) {
    (void)state;
    churn c = {.l = cch_memory_layer_new(NULL)};
    pthread_t th[4];
    pthread_create(&th[0], NULL, churn_sender, &c);
    pthread_create(&th[1], NULL, churn_sender, &c);
    pthread_create(&th[2], NULL, churn_member, &c);
    pthread_create(&th[3], NULL, churn_member, &c);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    cch_layer_stats s = stats(c.l);
    /* every accepted message was handed out, expired, or dropped on release */
    cch_msg *got;
    while (cch_layer_receive(c.l, "direct", &got) == 0) cch_msg_unref(got);
    s = stats(c.l);
    assert_int_equal(s.sent, s.delivered + s.expired + s.dropped);
    assert_int_equal(member_count(c.l, "a"), 0);
    assert_int_equal(member_count(c.l, "b"), 0);
    cch_layer_unref(c.l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_layer_base),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_argument_checks),
        cmocka_unit_test(test_wrappers_pass_through),
        cmocka_unit_test(test_new_channel_names),
        cmocka_unit_test(test_send_receive),
        cmocka_unit_test(test_channel_full),
        cmocka_unit_test(test_message_expiry),
        cmocka_unit_test(test_release_channel),
        cmocka_unit_test(test_poll_and_wakeup),
        cmocka_unit_test(test_receiver_free_unbinds),
        cmocka_unit_test(test_many_memberships),
        cmocka_unit_test(test_group_send_basic),
        cmocka_unit_test(test_group_exclude),
        cmocka_unit_test(test_group_full_members),
        cmocka_unit_test(test_group_expiry),
        cmocka_unit_test(test_group_wakeups),
        cmocka_unit_test(test_group_model),
        cmocka_unit_test(test_send_many),
        cmocka_unit_test(test_sweep_unread_channels),
        cmocka_unit_test(test_ring_pool),
        cmocka_unit_test(test_ring_slabs_storm),
        cmocka_unit_test(test_slab_pool),
        cmocka_unit_test(test_destroy_with_everything),
        cmocka_unit_test(test_congestion),
        cmocka_unit_test(test_congestion_many_receivers),
        cmocka_unit_test(test_enomem),
        cmocka_unit_test(test_threads_group_send),
        cmocka_unit_test(test_threads_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
