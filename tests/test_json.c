/* tests/test_json.c - the jansson helpers (cchannels/json.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "cchannels/cchannels.h"
#include "cchannels/json.h"

#include "alloc_fixture.h" /* cchannels' allocations only; jansson uses malloc */

/* Test scaffolding only: a test cannot continue without its buffers. */
static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) abort();
    return p;
}

static cch_msg *msg(const char *type, const char *body) {
    cch_msg *m = cch_msg_new(type, body, strlen(body));
    assert_non_null(m);
    return m;
}

/* Text nested `depth` arrays deep: "[[...]]". */
static char *nested(int depth, const char *open, const char *close, const char *inner) {
    size_t lo = strlen(open), lc = strlen(close), li = strlen(inner);
    char *s = xmalloc(li + (size_t)depth * (lo + lc) + 1), *p = s;
    for (int i = 0; i < depth; i++, p += lo) memcpy(p, open, lo);
    memcpy(p, inner, li);
    p += li;
    for (int i = 0; i < depth; i++, p += lc) memcpy(p, close, lc);
    *p = '\0';
    return s;
}

/* ---- cch_msg_json ------------------------------------------------------------- */

static void msg_json_parses_and_caches(void **state) {
    (void)state;
    cch_msg *m = msg("chat.message", " {\"a\": 1, \"b\": [1, 2], \"s\": \"h\\u00e9\"} ");
    const json_t *tree = cch_msg_json(m);
    assert_non_null(tree);
    assert_true(json_is_object(tree));
    assert_int_equal(json_integer_value(json_object_get(tree, "a")), 1);
    assert_int_equal(json_array_size(json_object_get(tree, "b")), 2);
    assert_string_equal(json_string_value(json_object_get(tree, "s")), "h\xc3\xa9");
    /* Parsed once: the same tree every time. */
    assert_ptr_equal(cch_msg_json(m), tree);
    assert_ptr_equal(cch_msg_json(cch_msg_ref(m)), tree);
    cch_msg_unref(m);
    cch_msg_unref(m);
}

static void msg_json_empty_body(void **state) {
    (void)state;
    cch_msg *m = cch_msg_new("x", NULL, 0);
    assert_non_null(m);
    const json_t *tree = cch_msg_json(m);
    assert_non_null(tree);
    assert_true(json_is_object(tree));
    assert_int_equal(json_object_size(tree), 0);
    cch_msg_unref(m);
    assert_null(cch_msg_json(NULL));
}

static void msg_json_nul_and_surrogates(void **state) {
    (void)state;
    cch_msg *m = msg("x", "{\"z\":\"a\\u0000b\",\"e\":\"\\ud83d\\ude00\"}");
    const json_t *tree = cch_msg_json(m);
    assert_non_null(tree);
    const json_t *z = json_object_get(tree, "z");
    assert_int_equal(json_string_length(z), 3);
    assert_memory_equal(json_string_value(z), "a\0b", 3);
    assert_string_equal(json_string_value(json_object_get(tree, "e")), "\xf0\x9f\x98\x80");
    cch_msg_unref(m);
}

/* What jansson cannot hold (an integer beyond int64, a number beyond a double, a key
 * with \u0000) is refused when the message is created, so cch_msg_json never fails on
 * a message that exists; the limits themselves parse (found by fuzz/fuzz_json). */
static void msg_json_every_message_parses(void **state) {
    (void)state;
    static const char *refused[] = {
        "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775809}", "{\"a\":1e309}",
        "{\"a\":-2e308}", "{\"k\\u0000\":1}", "{\"a\":[{\"\\u0000\":0}]}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        cch_msg *m = NULL;
        assert_int_equal(cch_msg_create(&m, "x", refused[i], strlen(refused[i])), CCH_EBODY);
        assert_null(m);
        json_error_t err;
        json_t *j = json_loads(refused[i], JSON_ALLOW_NUL, &err);
        assert_null(j); /* jansson refuses each of them too */
    }
    cch_msg *m = msg("x", "{\"max\":9223372036854775807,\"min\":-9223372036854775808,"
                          "\"big\":1.7976931348623157e308,\"tiny\":1e-400}");
    const json_t *tree = cch_msg_json(m);
    assert_non_null(tree);
    assert_true(json_integer_value(json_object_get(tree, "max")) == INT64_MAX);
    assert_true(json_integer_value(json_object_get(tree, "min")) == INT64_MIN);
    assert_true(json_real_value(json_object_get(tree, "big")) > 1.79e308);
    assert_true(json_real_value(json_object_get(tree, "tiny")) == 0.0);
    cch_msg_unref(m);
}

static void msg_json_max_depth_body(void **state) {
    (void)state;
    char *inner = nested(CCH_MSG_BODY_MAX_DEPTH - 1, "[", "]", "");
    char *body = xmalloc(strlen(inner) + 8);
    sprintf(body, "{\"a\":%s}", inner);
    cch_msg *m = msg("x", body);
    const json_t *tree = cch_msg_json(m);
    assert_non_null(tree);
    const json_t *v = json_object_get(tree, "a");
    int depth = 1;
    while (json_array_size(v) == 1) {
        v = json_array_get(v, 0);
        depth++;
    }
    assert_int_equal(depth + 1, CCH_MSG_BODY_MAX_DEPTH); /* + the outer object */
    cch_msg_unref(m);
    free(inner);
    free(body);
}

struct race {
    const cch_msg *m;
    const json_t *seen;
    pthread_barrier_t *barrier;
};

static void *race_thread(void *arg) {
    struct race *r = arg;
    pthread_barrier_wait(r->barrier);
    r->seen = cch_msg_json(r->m);
    return NULL;
}

static void msg_json_threads_share_one_tree(void **state) {
    (void)state;
    enum { THREADS = 8, ROUNDS = 50 };
    for (int round = 0; round < ROUNDS; round++) {
        cch_msg *m = msg("x", "{\"users\":[12,13],\"message\":\"hi\"}");
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, THREADS);
        pthread_t th[THREADS];
        struct race r[THREADS];
        for (int i = 0; i < THREADS; i++) {
            r[i] = (struct race){.m = m, .barrier = &barrier};
            assert_int_equal(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
        }
        for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&barrier);
        /* Every thread got the same tree: the one attached to the message. */
        assert_non_null(r[0].seen);
        for (int i = 1; i < THREADS; i++) assert_ptr_equal(r[i].seen, r[0].seen);
        assert_ptr_equal(cch_msg_json(m), r[0].seen);
        cch_msg_unref(m);  /* losers' trees were freed; the winner's goes with m */
    }
}

static void msg_json_out_of_memory(void **state) {
    (void)state;
    cch_msg *m = msg("x", "{\"a\":1}");
    fail_after(0);  /* attaching the tree to the message needs memory */
    const json_t *tree = cch_msg_json(m);
    alloc_restore();
    assert_null(tree);
    tree = cch_msg_json(m);  /* works once memory is back */
    assert_non_null(tree);
    assert_int_equal(json_integer_value(json_object_get(tree, "a")), 1);
    cch_msg_unref(m);
}

/* ---- cch_msg_from_json -------------------------------------------------------- */

static void from_json_compact(void **state) {
    (void)state;
    json_t *obj = json_pack("{s:s, s:i, s:[i,i], s:{}}", "message", "hi there", "n", 1,
                            "users", 12, 13, "o");
    assert_non_null(obj);
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_from_json(&m, "chat.message", obj), 0);
    assert_non_null(m);
    assert_string_equal(cch_msg_type(m), "chat.message");
    assert_string_equal(cch_msg_body(m),
                        "{\"message\":\"hi there\",\"n\":1,\"users\":[12,13],\"o\":{}}");
    int64_t n;
    assert_int_equal(cch_msg_field_int(m, "n", &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(obj->refcount, 1);  /* borrowed, not decref'd */
    cch_msg_unref(m);

    json_t *empty = json_object();
    assert_int_equal(cch_msg_from_json(&m, "x", empty), 0);
    assert_string_equal(cch_msg_body(m), "{}");
    cch_msg_unref(m);
    json_decref(empty);
    json_decref(obj);
}

static void from_json_large_object(void **state) {
    (void)state;
    json_t *obj = json_object();
    char key[16];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "k%d", i);
        json_object_set_new(obj, key, json_integer(i));
    }
    char *expect = json_dumps(obj, JSON_COMPACT);
    assert_true(strlen(expect) > 1000);
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_from_json(&m, "big", obj), 0);
    assert_string_equal(cch_msg_body(m), expect);
    assert_int_equal(cch_msg_body_len(m), strlen(expect));
    cch_msg_unref(m);

    /* The serialisation buffer cannot be allocated. */
    fail_from_size(strlen(expect));
    m = (cch_msg *)1;
    int rc = cch_msg_from_json(&m, "big", obj);
    alloc_restore();
    assert_int_equal(rc, CCH_ENOMEM);
    assert_null(m);
    free(expect);
    json_decref(obj);
}

static void from_json_round_trip(void **state) {
    (void)state;
    json_t *obj = json_pack("{s:s, s:b, s:n, s:f}", "s", "\"quoted\"\n\xc3\xa9", "b", 1, "z",
                            "f", 1.5);
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_from_json(&m, "x", obj), 0);
    const json_t *back = cch_msg_json(m);
    assert_true(json_equal((json_t *)back, obj));
    char text[64];
    assert_int_equal(cch_msg_field_string(m, "s", text, sizeof text), 11);
    assert_string_equal(text, "\"quoted\"\n\xc3\xa9");
    cch_msg_unref(m);
    json_decref(obj);
}

static void from_json_errors(void **state) {
    (void)state;
    json_t *obj = json_pack("{s:i}", "a", 1);
    cch_msg *m = (cch_msg *)1;
    assert_int_equal(cch_msg_from_json(NULL, "x", obj), CCH_EINVAL);
    assert_int_equal(cch_msg_from_json(&m, NULL, obj), CCH_EINVAL);
    assert_null(m);
    m = (cch_msg *)1;
    assert_int_equal(cch_msg_from_json(&m, "x", NULL), CCH_EINVAL);
    assert_null(m);
    assert_int_equal(cch_msg_from_json(&m, "", obj), CCH_ENAME);
    assert_int_equal(cch_msg_from_json(&m, "bad type", obj), CCH_ENAME);
    assert_null(m);

    json_t *arr = json_pack("[i]", 1);
    json_t *str = json_string("x");
    assert_int_equal(cch_msg_from_json(&m, "x", arr), CCH_EBODY);
    assert_int_equal(cch_msg_from_json(&m, "x", str), CCH_EBODY);
    assert_null(m);

    /* Deeper than a body may be. */
    json_t *deep = json_object();
    json_t *cur = deep;
    for (int i = 0; i < CCH_MSG_BODY_MAX_DEPTH; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "d", next);
        cur = next;
    }
    assert_int_equal(cch_msg_from_json(&m, "x", deep), CCH_EBODY);
    assert_null(m);
    json_decref(deep);

    json_decref(arr);
    json_decref(str);
    json_decref(obj);
}

/* ---- cch_send_json and cch_json_parse with a consumer ------------------------- */

/* Replies {"echo": <what the client sent>}; invalid JSON gets {"error":"bad json"}. */
static void json_receive(cch_conn *c, const char *data, size_t len, bool binary) {
    (void)binary;
    json_t *v = cch_json_parse(data, len);
    json_t *reply = v ? json_pack("{s:o}", "echo", v) : json_pack("{s:s}", "error", "bad json");
    assert_int_equal(cch_send_json(c, reply), 0);
    json_decref(reply);
}

static int later_connect(cch_conn *c) {
    json_t *v = json_integer(1);
    int rc = cch_send_json(c, v);  /* not accepted yet */
    json_decref(v);
    assert_int_equal(rc, CCH_ESTATE);
    return cch_accept(c, NULL);
}

static const cch_consumer_class json_consumer = {.receive = json_receive,
                                                 .connect = later_connect};

static cch_app *json_app(void) {
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/json/", &json_consumer, NULL), 0);
    return app;
}

static void expect_reply(cch_communicator *t, const char *send, const char *reply) {
    assert_int_equal(cch_communicator_send_text(t, send, strlen(send)), 0);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_false(bin);
    assert_string_equal(d, reply);
    assert_int_equal(len, strlen(reply));
}

static void send_json_values(void **state) {
    (void)state;
    cch_app *app = json_app();
    cch_communicator *t = cch_communicator_new(app, "/ws/json/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    expect_reply(t, "{ \"message\" : \"hi\" }", "{\"echo\":{\"message\":\"hi\"}}");
    expect_reply(t, "[1, 2]", "{\"echo\":[1,2]}");
    expect_reply(t, "12", "{\"echo\":12}");
    expect_reply(t, "\"s\"", "{\"echo\":\"s\"}");
    expect_reply(t, "null", "{\"echo\":null}");
    expect_reply(t, "{", "{\"error\":\"bad json\"}");
    expect_reply(t, "{} x", "{\"error\":\"bad json\"}");
    expect_reply(t, "", "{\"error\":\"bad json\"}");

    /* Larger than the helper's stack buffer. */
    char big[3000];
    memset(big, 'b', sizeof big);
    big[0] = '"';
    big[sizeof big - 2] = '"';
    big[sizeof big - 1] = '\0';
    char *want = xmalloc(sizeof big + 16);
    sprintf(want, "{\"echo\":%s}", big);
    expect_reply(t, big, want);
    free(want);

    cch_communicator_free(t);
    assert_int_equal(cch_app_free(app), 0);
}

static int sent_rc;
static void send_scalar(cch_conn *c, const char *data, size_t len, bool binary) {
    (void)data;
    (void)len;
    (void)binary;
    json_t *v = json_real(2.5);
    sent_rc = cch_send_json(c, v);
    json_decref(v);
    /* A value jansson cannot serialise at all. */
    json_t *s = json_stringn_nocheck("\xff", 1);
    json_t *o = json_pack("{s:o}", "bad", s);
    int rc = cch_send_json(c, o);
    json_decref(o);
    assert_int_equal(rc, CCH_EINVAL);
}
static const cch_consumer_class scalar_consumer = {.receive = send_scalar};

static void send_json_errors(void **state) {
    (void)state;
    json_t *v = json_integer(1);
    assert_int_equal(cch_send_json(NULL, v), CCH_EINVAL);
    json_decref(v);

    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_int_equal(cch_app_route(app, "/", &scalar_consumer, NULL), 0);
    cch_communicator *t = cch_communicator_new(app, "/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    assert_int_equal(cch_send_json(cch_communicator_conn(t), NULL), CCH_EINVAL);
    assert_int_equal(cch_communicator_send_text(t, "go", 2), 0);
    assert_int_equal(sent_rc, 0);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_string_equal(d, "2.5");

    /* After the connection is closed, cch_send_text's error comes back. */
    cch_conn *c = cch_communicator_conn(t);
    assert_int_equal(cch_close(c, 1000, NULL), 0);
    json_t *x = json_integer(3);
    /* The connection is closing (the communicator ends it at its next call):
     * cch_send_text refuses. */
    assert_int_equal(cch_send_json(c, x), CCH_ECLOSED);
    json_decref(x);
    cch_communicator_free(t);
    assert_int_equal(cch_app_free(app), 0);
}

static void send_json_out_of_memory(void **state) {
    (void)state;
    cch_app *app = json_app();
    cch_communicator *t = cch_communicator_new(app, "/ws/json/", NULL, 0);
    assert_int_equal(cch_communicator_connect(t), 0);
    json_t *arr = json_array();
    for (int i = 0; i < 500; i++) json_array_append_new(arr, json_integer(i));
    fail_from_size(1000);
    int rc = cch_send_json(cch_communicator_conn(t), arr);
    alloc_restore();
    assert_int_equal(rc, CCH_ENOMEM);
    assert_int_equal(cch_send_json(cch_communicator_conn(t), arr), 0);
    json_decref(arr);
    const char *d;
    size_t len;
    bool bin;
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), 0);
    assert_int_equal(strncmp(d, "[0,1,2,", 7), 0);
    assert_int_equal(cch_communicator_receive(t, &d, &len, &bin), CCH_EAGAIN);
    cch_communicator_free(t);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- cch_json_parse ----------------------------------------------------------- */

static void parse_values(void **state) {
    (void)state;
    json_t *v = cch_json_parse("{\"a\":[1,{\"b\":null}]}", 20);
    assert_non_null(v);
    assert_true(json_is_object(v));
    json_decref(v);
    v = cch_json_parse("42", 2);
    assert_true(json_is_integer(v));
    json_decref(v);
    v = cch_json_parse(" \"s\" ", 5);
    assert_string_equal(json_string_value(v), "s");
    json_decref(v);
    v = cch_json_parse("\"a\\u0000b\"", 10);
    assert_non_null(v);
    assert_int_equal(json_string_length(v), 3);
    json_decref(v);
    /* Only `len` bytes are read: the rest is not part of the text. */
    v = cch_json_parse("[1]garbage", 3);
    assert_true(json_is_array(v));
    json_decref(v);
}

static void parse_rejects(void **state) {
    (void)state;
    assert_null(cch_json_parse(NULL, 0));
    assert_null(cch_json_parse(NULL, 5));
    assert_null(cch_json_parse("", 0));
    assert_null(cch_json_parse("{", 1));
    assert_null(cch_json_parse("[1,]", 4));
    assert_null(cch_json_parse("{} {}", 5));
    assert_null(cch_json_parse("nul", 3));
    assert_null(cch_json_parse("\"\xff\"", 3));          /* invalid UTF-8 */
    assert_null(cch_json_parse("\"\\ud800\"", 8));       /* lone surrogate */
    assert_null(cch_json_parse("[1]garbage", 10));
    /* raw NUL bytes, which jansson skips after a number or a literal (found by
     * fuzz/fuzz_json); an escaped one is fine */
    assert_null(cch_json_parse("{\"c\":5.5\0}", 10));
    assert_null(cch_json_parse("[true\0]", 7));
    assert_null(cch_json_parse("1\0", 2));
    assert_null(cch_json_parse("\"a\0b\"", 5));
    json_t *v = cch_json_parse("[\"a\\u0000\"]", 11);
    assert_non_null(v);
    json_decref(v);
}

static void parse_depth_limit(void **state) {
    (void)state;
    char *ok = nested(CCH_MSG_BODY_MAX_DEPTH, "[", "]", "1");
    json_t *v = cch_json_parse(ok, strlen(ok));
    assert_non_null(v);
    json_decref(v);
    char *deep = nested(CCH_MSG_BODY_MAX_DEPTH + 1, "[", "]", "1");
    assert_null(cch_json_parse(deep, strlen(deep)));
    char *deep_obj = nested(CCH_MSG_BODY_MAX_DEPTH + 1, "{\"k\":", "}", "1");
    assert_null(cch_json_parse(deep_obj, strlen(deep_obj)));
    char *ok_obj = nested(CCH_MSG_BODY_MAX_DEPTH, "{\"k\":", "}", "1");
    v = cch_json_parse(ok_obj, strlen(ok_obj));
    assert_non_null(v);
    json_decref(v);
    /* Very deep input is refused without recursing into it. */
    char *huge = nested(100000, "[", "]", "");
    assert_null(cch_json_parse(huge, strlen(huge)));
    /* Siblings do not add up. */
    char *wide = xmalloc(64 * 4 + 3);
    char *p = wide;
    *p++ = '[';
    for (int i = 0; i < 64; i++) p += sprintf(p, "%s[1]", i ? "," : "");
    *p++ = ']';
    *p = '\0';
    v = cch_json_parse(wide, strlen(wide));
    assert_int_equal(json_array_size(v), 64);
    json_decref(v);
    free(ok);
    free(deep);
    free(deep_obj);
    free(ok_obj);
    free(huge);
    free(wide);
}

static void parse_brackets_in_strings_do_not_count(void **state) {
    (void)state;
    char *brackets = nested(200, "[", "", "");
    char *text = xmalloc(strlen(brackets) + 16);
    sprintf(text, "[\"%s\\\"]\"]", brackets);  /* an escaped quote inside too */
    json_t *v = cch_json_parse(text, strlen(text));
    assert_non_null(v);
    assert_int_equal(json_array_size(v), 1);
    assert_int_equal(strlen(json_string_value(json_array_get(v, 0))), 202);
    json_decref(v);
    free(brackets);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(msg_json_parses_and_caches),
        cmocka_unit_test(msg_json_empty_body),
        cmocka_unit_test(msg_json_nul_and_surrogates),
        cmocka_unit_test(msg_json_every_message_parses),
        cmocka_unit_test(msg_json_max_depth_body),
        cmocka_unit_test(msg_json_threads_share_one_tree),
        cmocka_unit_test(msg_json_out_of_memory),
        cmocka_unit_test(from_json_compact),
        cmocka_unit_test(from_json_large_object),
        cmocka_unit_test(from_json_round_trip),
        cmocka_unit_test(from_json_errors),
        cmocka_unit_test(send_json_values),
        cmocka_unit_test(send_json_errors),
        cmocka_unit_test(send_json_out_of_memory),
        cmocka_unit_test(parse_values),
        cmocka_unit_test(parse_rejects),
        cmocka_unit_test(parse_depth_limit),
        cmocka_unit_test(parse_brackets_in_strings_do_not_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
