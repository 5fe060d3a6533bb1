/* tests/test_msg.c - messages: creation and validation, reference counting, type
 * matching, field access and attachments (cchannels/msg.h, lib/core/msg_internal.h). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cchannels/alloc.h"
#include "cchannels/error.h"
#include "cchannels/msg.h"
#include "msg_internal.h"

#include "alloc_fixture.h"

/* ---- creation ------------------------------------------------------------------- */

static void test_create_basic(void **state) {
    (void)state;
    cch_msg *m = NULL;
    const char *body = "{\"text\":\"hi\"}";
    assert_int_equal(cch_msg_create(&m, "chat.message", body, strlen(body)), 0);
    assert_non_null(m);
    assert_string_equal(cch_msg_type(m), "chat.message");
    assert_string_equal(cch_msg_body(m), body);
    assert_int_equal(cch_msg_body_len(m), strlen(body));
    assert_true(cch_msg_body(m) != body); /* copied */
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);

    /* NULL body with len 0 is "{}" */
    m = cch_msg_new("x", NULL, 0);
    assert_non_null(m);
    assert_string_equal(cch_msg_body(m), "{}");
    assert_int_equal(cch_msg_body_len(m), 2);
    cch_msg_unref(m);

    /* the body need not be NUL-terminated: exactly len bytes are copied */
    const char buf[] = "{\"a\":1}GARBAGE";
    m = cch_msg_new("t", buf, 7);
    assert_non_null(m);
    assert_string_equal(cch_msg_body(m), "{\"a\":1}");
    assert_int_equal(cch_msg_body_len(m), 7);
    cch_msg_unref(m);

    /* whitespace around the object is allowed and kept */
    m = cch_msg_new("t", " \n{ }\t", 6);
    assert_non_null(m);
    assert_int_equal(cch_msg_body_len(m), 6);
    assert_string_equal(cch_msg_body(m), " \n{ }\t");
    cch_msg_unref(m);

    /* a large body */
    size_t big = 1 << 20;
    char *b = malloc(big);
    assert_non_null(b);
    memset(b, 'x', big);
    memcpy(b, "{\"s\":\"", 6);
    memcpy(b + big - 2, "\"}", 2);
    m = cch_msg_new("t", b, big);
    assert_non_null(m);
    assert_int_equal(cch_msg_body_len(m), big);
    assert_memory_equal(cch_msg_body(m), b, big);
    assert_int_equal(cch_msg_body(m)[big], '\0');
    cch_msg_unref(m);
    free(b);
}

static void test_create_type_validation(void **state) {
    (void)state;
    cch_msg *m = (cch_msg *)&m; /* must be reset to NULL on failure */
    assert_int_equal(cch_msg_create(&m, NULL, NULL, 0), CCH_ENAME);
    assert_null(m);
    assert_int_equal(cch_msg_create(&m, "", NULL, 0), CCH_ENAME);
    assert_int_equal(cch_msg_create(&m, "chat message", NULL, 0), CCH_ENAME);
    assert_int_equal(cch_msg_create(&m, "chat\tmessage", NULL, 0), CCH_ENAME);
    assert_int_equal(cch_msg_create(&m, "chat\x7f", NULL, 0), CCH_ENAME);
    assert_int_equal(cch_msg_create(&m, "caf\xc3\xa9", NULL, 0), CCH_ENAME);
    assert_int_equal(cch_msg_create(&m, "a\n", NULL, 0), CCH_ENAME);
    assert_null(cch_msg_new("bad type", NULL, 0));

    char type[CCH_MSG_TYPE_MAX + 2];
    memset(type, 'a', sizeof type);
    type[CCH_MSG_TYPE_MAX] = '\0'; /* 99 bytes: the longest */
    assert_int_equal(cch_msg_create(&m, type, NULL, 0), 0);
    assert_string_equal(cch_msg_type(m), type);
    cch_msg_unref(m);
    type[CCH_MSG_TYPE_MAX] = 'a';
    type[CCH_MSG_TYPE_MAX + 1] = '\0'; /* 100 bytes */
    assert_int_equal(cch_msg_create(&m, type, NULL, 0), CCH_ENAME);
    assert_null(m);

    /* every printable, non-space ASCII character is allowed */
    char all[0x7f - 0x21 + 1];
    for (int c = 0x21; c < 0x7f; c++) all[c - 0x21] = (char)c;
    all[sizeof all - 1] = '\0';
    assert_int_equal(cch_msg_create(&m, all, NULL, 0), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_msg_create(&m, "!", NULL, 0), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_msg_create(&m, "~", NULL, 0), 0);
    cch_msg_unref(m);
}

static void test_create_body_validation(void **state) {
    (void)state;
    cch_msg *m = (cch_msg *)&m;
    assert_int_equal(cch_msg_create(NULL, "t", "{}", 2), CCH_EINVAL);
    assert_int_equal(cch_msg_create(&m, "t", NULL, 5), CCH_EINVAL);
    assert_null(m);
    static const char *bad[] = {
        "", "[]", "1", "\"s\"", "null", "{", "{}}", "{} {}", "{\"a\":}", "{\"a\":01}",
        "{\"a\":\"\xc0\x80\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"x\x01\"}", "{\"a\":\"\xff\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        m = (cch_msg *)&m;
        if (cch_msg_create(&m, "t", bad[i], strlen(bad[i])) != CCH_EBODY)
            fail_msg("accepted body #%zu", i);
        assert_null(m);
        assert_null(cch_msg_new("t", bad[i], strlen(bad[i])));
    }
    /* an embedded NUL makes the body invalid */
    assert_int_equal(cch_msg_create(&m, "t", "{}\0", 3), CCH_EBODY);
    /* the type is checked first */
    assert_int_equal(cch_msg_create(&m, "", "[", 1), CCH_ENAME);

    /* nesting: CCH_MSG_BODY_MAX_DEPTH levels are fine, one more is not */
    char deep[8 * CCH_MSG_BODY_MAX_DEPTH + 16];
    size_t n = 0;
    for (int i = 0; i < CCH_MSG_BODY_MAX_DEPTH; i++) n += (size_t)sprintf(deep + n, "{\"a\":");
    deep[n++] = '1';
    for (int i = 0; i < CCH_MSG_BODY_MAX_DEPTH; i++) deep[n++] = '}';
    assert_int_equal(cch_msg_create(&m, "t", deep, n), 0);
    cch_msg_unref(m);
    n = 0;
    for (int i = 0; i <= CCH_MSG_BODY_MAX_DEPTH; i++) n += (size_t)sprintf(deep + n, "{\"a\":");
    deep[n++] = '1';
    for (int i = 0; i <= CCH_MSG_BODY_MAX_DEPTH; i++) deep[n++] = '}';
    assert_int_equal(cch_msg_create(&m, "t", deep, n), CCH_EBODY);
    assert_null(m);
}

static void test_create_enomem(void **state) {
    (void)state;
    cch_msg *m = (cch_msg *)&m;
    fail_after(0);
    assert_int_equal(cch_msg_create(&m, "t", "{}", 2), CCH_ENOMEM);
    assert_null(m);
    assert_null(cch_msg_new("t", NULL, 0));
    alloc_restore();
    /* one allocation per message */
    fail_after(-1);
    assert_int_equal(cch_msg_create(&m, "t", "{\"a\":[1,2,3]}", 13), 0);
    assert_int_equal(alloc_calls, 1);
    cch_msg_unref(m);
    alloc_restore();
}

/* ---- references ----------------------------------------------------------------- */

static int freed_count;
static void count_free(void *p) {
    freed_count++;
    free(p);
}

static void test_refcount(void **state) {
    (void)state;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    assert_non_null(m);
    assert_ptr_equal(cch_msg_ref(m), m);
    assert_ptr_equal(cch_msg_ref(m), m);
    assert_int_equal(cch__msg_refs(m), 3);
    static int key;
    freed_count = 0;
    assert_non_null(cch_msg_attach(m, &key, malloc(4), count_free));
    cch_msg_unref(m);
    cch_msg_unref(m);
    assert_int_equal(cch__msg_refs(m), 1);
    assert_int_equal(freed_count, 0); /* still alive */
    cch_msg_unref(m);
    assert_int_equal(freed_count, 1); /* the last reference freed the attachment */

    assert_null(cch_msg_ref(NULL));
    cch_msg_unref(NULL);
    assert_int_equal(cch__msg_refs(NULL), 0);
    /* accessors on NULL do not crash */
    assert_string_equal(cch_msg_type(NULL), "");
    assert_string_equal(cch_msg_body(NULL), "");
    assert_int_equal(cch_msg_body_len(NULL), 0);
}

static void test_ref_n_and_deferred(void **state) {
    (void)state;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    cch__msg_ref_n(m, 0);
    assert_int_equal(cch__msg_refs(m), 1);
    cch__msg_ref_n(m, 10000);
    assert_int_equal(cch__msg_refs(m), 10001);
    cch__msg_ref_n(NULL, 3);

    static int key;
    freed_count = 0;
    assert_non_null(cch_msg_attach(m, &key, malloc(1), count_free));
    cch_msg *list = NULL;
    for (int i = 0; i < 10000; i++) cch__msg_unref_deferred(m, &list);
    assert_null(list);
    cch__msg_unref_deferred(m, &list); /* the last: deferred, not freed */
    assert_ptr_equal(list, m);
    assert_int_equal(freed_count, 0);
    cch_msg *m2 = cch_msg_new("u", NULL, 0);
    cch__msg_unref_deferred(m2, &list);
    cch__msg_unref_deferred(NULL, &list);
    assert_ptr_equal(list, m2);
    cch__msg_free_list(list); /* frees both */
    assert_int_equal(freed_count, 1);
    cch__msg_free_list(NULL);
}

#define REF_THREADS 4
#define REF_ITERS 200000

static void *ref_worker(void *arg) {
    cch_msg *m = arg;
    for (int i = 0; i < REF_ITERS; i++) {
        cch_msg_ref(m);
        cch_msg_unref(m);
    }
    for (int i = 0; i < 1000; i++) cch_msg_ref(m);
    return NULL;
}

static void test_refcount_threads(void **state) {
    (void)state;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    pthread_t th[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++) pthread_create(&th[i], NULL, ref_worker, m);
    for (int i = 0; i < REF_THREADS; i++) pthread_join(th[i], NULL);
    assert_int_equal(cch__msg_refs(m), 1 + REF_THREADS * 1000);
    for (int i = 0; i < REF_THREADS * 1000; i++) cch_msg_unref(m);
    assert_int_equal(cch__msg_refs(m), 1);
    cch_msg_unref(m);
}

/* ---- type matching ---------------------------------------------------------------- */

static void test_type_is(void **state) {
    (void)state;
    cch_msg *m = cch_msg_new("chat.message", NULL, 0);
    assert_true(cch_msg_type_is(m, "chat.message"));
    assert_true(cch_msg_type_is(m, "chat_message"));
    assert_false(cch_msg_type_is(m, "chat-message"));
    assert_false(cch_msg_type_is(m, "chat.messag"));
    assert_false(cch_msg_type_is(m, "chat.messages"));
    assert_false(cch_msg_type_is(m, "Chat.message"));
    assert_false(cch_msg_type_is(m, ""));
    assert_false(cch_msg_type_is(m, NULL));
    assert_false(cch_msg_type_is(NULL, "chat.message"));
    cch_msg_unref(m);
    m = cch_msg_new("a_b.c", NULL, 0);
    assert_true(cch_msg_type_is(m, "a.b_c"));
    assert_true(cch_msg_type_is(m, "a.b.c"));
    assert_true(cch_msg_type_is(m, "a_b_c"));
    assert_false(cch_msg_type_is(m, "a_bc"));
    cch_msg_unref(m);
}

/* ---- fields ------------------------------------------------------------------------- */

static cch_msg *body_msg(const char *body) {
    cch_msg *m = cch_msg_new("t", body, strlen(body));
    assert_non_null(m);
    return m;
}

static void test_field_raw(void **state) {
    (void)state;
    cch_msg *m = body_msg("{\"text\":\"hi\",\"n\": 12 ,\"users\":[12, 13],\"o\":{\"x\":1}}");
    const char *v;
    size_t len;
    assert_int_equal(cch_msg_field_raw(m, "text", &v, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(v, "\"hi\"", 4);
    assert_true(v > cch_msg_body(m) && v < cch_msg_body(m) + cch_msg_body_len(m));
    assert_int_equal(cch_msg_field_raw(m, "n", &v, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(v, "12", 2);
    assert_int_equal(cch_msg_field_raw(m, "users", &v, &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(v, "[12, 13]", 8);
    assert_int_equal(cch_msg_field_raw(m, "x", &v, &len), CCH_ENOTFOUND);
    assert_int_equal(cch_msg_field_raw(m, "missing", &v, &len), CCH_ENOTFOUND);
    assert_int_equal(cch_msg_field_raw(NULL, "text", &v, &len), CCH_EINVAL);
    assert_int_equal(cch_msg_field_raw(m, NULL, &v, &len), CCH_EINVAL);
    cch_msg_unref(m);
}

/* cch_json_field_raw: the same lookup on a text that is not a message yet. */
static void test_json_field_raw(void **state) {
    (void)state;
    const char *text = " {\"message\": \"hi\", \"n\":1, \"n\":[2] }\n";
    size_t tlen = strlen(text);
    const char *v;
    size_t len;
    assert_int_equal(cch_json_field_raw(text, tlen, "message", &v, &len), 0);
    assert_int_equal(len, 4);
    assert_ptr_equal(v, strstr(text, "\"hi\""));
    assert_int_equal(cch_json_field_raw(text, tlen, "n", &v, &len), 0); /* the last one */
    assert_int_equal(len, 3);
    assert_memory_equal(v, "[2]", 3);
    assert_int_equal(cch_json_field_raw(text, tlen, "missing", &v, &len), CCH_ENOTFOUND);
    /* Only part of the text, not NUL-terminated: the object is cut, so invalid. */
    assert_int_equal(cch_json_field_raw(text, 10, "message", &v, &len), CCH_EBODY);
    const char *bad[] = {"", "[]", "\"s\"", "{\"a\":1} x", "{\"a\":01}", "{\"a\":\"\xff\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cch_json_field_raw(bad[i], strlen(bad[i]), "a", &v, &len), CCH_EBODY);
    assert_int_equal(cch_json_field_raw(NULL, 0, "a", &v, &len), CCH_EINVAL);
    assert_int_equal(cch_json_field_raw(text, tlen, NULL, &v, &len), CCH_EINVAL);
    assert_int_equal(cch_json_field_raw(text, tlen, "n", NULL, &len), CCH_EINVAL);
    assert_int_equal(cch_json_field_raw(text, tlen, "n", &v, NULL), CCH_EINVAL);
}

static void test_field_string(void **state) {
    (void)state;
    cch_msg *m = body_msg("{\"text\":\"h\\u00e9llo \\\"w\\\"\",\"n\":1,\"e\":\"\",\"te\\u0078t2\":\"x\","
                          "\"z\":\"a\\u0000b\"}");
    char buf[64];
    assert_int_equal(cch_msg_field_string(m, "text", buf, sizeof buf), 10);
    assert_string_equal(buf, "h\xc3\xa9llo \"w\"");
    assert_int_equal(cch_msg_field_string(m, "e", buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    assert_int_equal(cch_msg_field_string(m, "text2", buf, sizeof buf), 1);
    assert_string_equal(buf, "x");
    assert_int_equal(cch_msg_field_string(m, "z", buf, sizeof buf), 3);
    assert_memory_equal(buf, "a\0b", 4);
    assert_int_equal(cch_msg_field_string(m, "n", buf, sizeof buf), CCH_EBODY);
    assert_int_equal(cch_msg_field_string(m, "nope", buf, sizeof buf), CCH_ENOTFOUND);
    /* too small: a truncated prefix of whole characters */
    memset(buf, 'X', sizeof buf);
    assert_int_equal(cch_msg_field_string(m, "text", buf, 3), CCH_ETOOBIG);
    assert_string_equal(buf, "h"); /* "é" (2 bytes) does not fit beside the NUL */
    assert_int_equal(cch_msg_field_string(m, "text", buf, 4), CCH_ETOOBIG);
    assert_string_equal(buf, "h\xc3\xa9");
    assert_int_equal(cch_msg_field_string(m, "text", buf, 11), 10); /* exact fit */
    assert_int_equal(cch_msg_field_string(m, "text", buf, 10), CCH_ETOOBIG);
    assert_string_equal(buf, "h\xc3\xa9llo \"w");
    assert_int_equal(cch_msg_field_string(m, "text", NULL, 0), CCH_ETOOBIG);
    assert_int_equal(cch_msg_field_string(m, "text", NULL, 4), CCH_EINVAL);
    assert_int_equal(cch_msg_field_string(NULL, "text", buf, 4), CCH_EINVAL);
    assert_int_equal(cch_msg_field_string(m, NULL, buf, 4), CCH_EINVAL);
    cch_msg_unref(m);
}

static void test_field_int(void **state) {
    (void)state;
    cch_msg *m = body_msg("{\"code\":4000,\"neg\":-5,\"big\":9223372036854775807,"
                          "\"small\":-9223372036854775808,\"over\":9223372036854775808.0,"
                          "\"f\":1.5,\"e\":1e3,\"s\":\"12\",\"b\":true,\"z\":0}");
    int64_t v = 0;
    assert_int_equal(cch_msg_field_int(m, "code", &v), 0);
    assert_int_equal(v, 4000);
    assert_int_equal(cch_msg_field_int(m, "neg", &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(cch_msg_field_int(m, "big", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(cch_msg_field_int(m, "small", &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(cch_msg_field_int(m, "z", &v), 0);
    assert_int_equal(v, 0);
    v = 77;
    assert_int_equal(cch_msg_field_int(m, "over", &v), CCH_EBODY);
    assert_int_equal(cch_msg_field_int(m, "f", &v), CCH_EBODY);
    assert_int_equal(cch_msg_field_int(m, "e", &v), CCH_EBODY);
    assert_int_equal(cch_msg_field_int(m, "s", &v), CCH_EBODY);
    assert_int_equal(cch_msg_field_int(m, "b", &v), CCH_EBODY);
    assert_int_equal(v, 77);
    assert_int_equal(cch_msg_field_int(m, "nope", &v), CCH_ENOTFOUND);
    assert_int_equal(cch_msg_field_int(m, "code", NULL), CCH_EINVAL);
    assert_int_equal(cch_msg_field_int(NULL, "code", &v), CCH_EINVAL);
    assert_int_equal(cch_msg_field_int(m, NULL, &v), CCH_EINVAL);
    cch_msg_unref(m);
    /* an integer outside int64 cannot be in a body at all (jansson could not hold it) */
    static const char over[] = "{\"over\":9223372036854775808}";
    assert_int_equal(cch_msg_create(&m, "t", over, sizeof over - 1), CCH_EBODY);
}

/* ---- attachments ------------------------------------------------------------------- */

static void test_attach(void **state) {
    (void)state;
    static int key_a, key_b, key_c;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    freed_count = 0;
    assert_null(cch_msg_attachment(m, &key_a));
    int *a = malloc(sizeof *a), *a2 = malloc(sizeof *a2), *b = malloc(sizeof *b);
    assert_ptr_equal(cch_msg_attach(m, &key_a, a, count_free), a);
    assert_ptr_equal(cch_msg_attachment(m, &key_a), a);
    /* a second attach under the same key returns the first; the caller keeps its data */
    assert_ptr_equal(cch_msg_attach(m, &key_a, a2, count_free), a);
    free(a2);
    assert_ptr_equal(cch_msg_attach(m, &key_b, b, count_free), b);
    assert_ptr_equal(cch_msg_attachment(m, &key_b), b);
    assert_ptr_equal(cch_msg_attachment(m, &key_a), a);
    /* free_data may be NULL; the data is then never freed by the message */
    static int stat;
    assert_ptr_equal(cch_msg_attach(m, &key_c, &stat, NULL), &stat);
    assert_ptr_equal(cch_msg_attachment(m, &key_c), &stat);
    /* NULL data can be attached too */
    static int key_d;
    assert_null(cch_msg_attach(m, &key_d, NULL, NULL));
    assert_null(cch_msg_attachment(NULL, &key_a));
    assert_null(cch_msg_attach(NULL, &key_a, a, NULL));
    cch_msg_unref(m);
    assert_int_equal(freed_count, 2); /* a and b */
}

static void test_attach_enomem(void **state) {
    (void)state;
    static int key;
    cch_msg *m = cch_msg_new("t", NULL, 0);
    int data = 5;
    fail_after(0);
    assert_null(cch_msg_attach(m, &key, &data, NULL));
    alloc_restore();
    assert_null(cch_msg_attachment(m, &key));
    assert_ptr_equal(cch_msg_attach(m, &key, &data, NULL), &data);
    /* an existing attachment is found without allocating */
    fail_after(0);
    int other = 6;
    assert_ptr_equal(cch_msg_attach(m, &key, &other, NULL), &data);
    alloc_restore();
    cch_msg_unref(m);
}

#define RACE_THREADS 8
#define RACE_ROUNDS 300

static pthread_barrier_t race_barrier;
static cch_msg *race_msg;
static void *race_result[RACE_THREADS];
static void *race_mine[RACE_THREADS];
static int race_keys[4];

static void *race_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(&race_barrier); /* the message is ready */
        int *mine = malloc(sizeof *mine);
        *mine = id;
        race_mine[id] = mine;
        /* everyone attaches under the shared key and under a key of its own group */
        void *got = cch_msg_attach(race_msg, &race_keys[0], mine, count_free);
        race_result[id] = got;
        if (got != mine) free(mine);
        int *own = malloc(sizeof *own);
        void *got2 = cch_msg_attach(race_msg, &race_keys[1 + id % 3], own, count_free);
        if (got2 != own) free(own);
        pthread_barrier_wait(&race_barrier); /* everyone attached */
        pthread_barrier_wait(&race_barrier); /* the main thread checked */
    }
    return NULL;
}

static void test_attach_race(void **state) {
    (void)state;
    pthread_t th[RACE_THREADS];
    pthread_barrier_init(&race_barrier, NULL, RACE_THREADS + 1);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_create(&th[i], NULL, race_worker, (void *)(intptr_t)i);
    for (int round = 0; round < RACE_ROUNDS; round++) {
        race_msg = cch_msg_new("t", NULL, 0);
        freed_count = 0;
        pthread_barrier_wait(&race_barrier);
        pthread_barrier_wait(&race_barrier);
        void *winner = race_result[0];
        assert_non_null(winner);
        int owners = 0;
        for (int i = 0; i < RACE_THREADS; i++) {
            assert_ptr_equal(race_result[i], winner); /* all see the same data */
            if (race_mine[i] == winner) owners++;
        }
        assert_int_equal(owners, 1);
        assert_ptr_equal(cch_msg_attachment(race_msg, &race_keys[0]), winner);
        for (int k = 1; k <= 3; k++) assert_non_null(cch_msg_attachment(race_msg, &race_keys[k]));
        cch_msg_unref(race_msg);
        assert_int_equal(freed_count, 4); /* one winner per key */
        pthread_barrier_wait(&race_barrier);
    }
    for (int i = 0; i < RACE_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race_barrier);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_basic),
        cmocka_unit_test(test_create_type_validation),
        cmocka_unit_test(test_create_body_validation),
        cmocka_unit_test(test_create_enomem),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_ref_n_and_deferred),
        cmocka_unit_test(test_refcount_threads),
        cmocka_unit_test(test_type_is),
        cmocka_unit_test(test_field_raw),
        cmocka_unit_test(test_json_field_raw),
        cmocka_unit_test(test_field_string),
        cmocka_unit_test(test_field_int),
        cmocka_unit_test(test_attach),
        cmocka_unit_test(test_attach_enomem),
        cmocka_unit_test(test_attach_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
