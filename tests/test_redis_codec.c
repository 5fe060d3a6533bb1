/* tests/test_redis_codec.c - the Redis layer's encoding, without a Redis server:
 * {type, JSON body} to channels_redis's msgpack and back (byte-for-byte against what
 * Python's msgpack produces), the values JSON cannot hold, the consistent hash against
 * channels_redis's, URLs and options, and out-of-memory paths. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "redis_internal.h"
#include "redis_fixture.h"
#include "alloc_fixture.h"

/* ---- helpers ------------------------------------------------------------------------- */

static size_t unhex(const char *hex, char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

static cch_msg *msg(const char *type, const char *body) {
    cch_msg *m = NULL;
    assert_int_equal(cch_msg_create(&m, type, body, strlen(body)), 0);
    return m;
}

/* Encodes m without prefix or channel; returns the bytes in b. */
static void encode(cch_msg *m, rl_buf *b) {
    const rl_body *body;
    assert_int_equal(rl_body_get(m, &body), 0);
    assert_true(rl_encode(b, 0, cch_msg_type(m), body, NULL, NULL, 0, false));
}

/* Decodes data and checks the type and JSON body text. */
static void decodes_to(const char *data, size_t len, const char *type, const char *body) {
    rl_incoming in;
    char err[160];
    int rc = rl_decode(&in, data, len, err, sizeof err);
    if (rc != 0) fail_msg("decode: %d %s", rc, err);
    assert_string_equal(cch_msg_type(in.msg), type);
    assert_string_equal(cch_msg_body(in.msg), body);
    rl_incoming_done(&in);
}

static int decode_err(const char *data, size_t len, char *err, size_t cap) {
    rl_incoming in;
    int rc = rl_decode(&in, data, len, err, cap);
    rl_incoming_done(&in);
    return rc;
}

/* A small msgpack writer for hand-made inputs. */
static int w_buf(void *data, const char *buf, size_t len) {
    return rl_buf_put(data, buf, len) ? 0 : -1;
}

/* ---- encoding ---------------------------------------------------------------------- */

/* What msgpack.packb({'type': 'chat_message', 'message': 'hi', 'n': 1, 'f': 1.5,
 * 'neg': -5, 'big': 2**40, 'l': [1, None, True, False], 'd': {'a': 'b'}},
 * use_bin_type=True) gives (python3-msgpack 1.0.3). */
static const char python_bytes[] =
    "88a474797065ac636861745f6d657373616765a76d657373616765a26869a16e01a166cb3ff8000000000000"
    "a36e6567fba3626967cf0000010000000000a16c9401c0c3c2a16481a161a162";
static const char our_body[] =
    "{\"message\":\"hi\",\"n\":1,\"f\":1.5,\"neg\":-5,\"big\":1099511627776,"
    "\"l\":[1,null,true,false],\"d\":{\"a\":\"b\"}}";

static void test_encode_matches_python(void **state) {
    (void)state;
    cch_msg *m = msg("chat_message", our_body);
    rl_buf b = {0};
    encode(m, &b);
    char want[256];
    size_t n = unhex(python_bytes, want);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.p, want, n);
    /* the encoded body is attached: a second call returns the same one */
    const rl_body *b1, *b2;
    assert_int_equal(rl_body_get(m, &b1), 0);
    assert_int_equal(rl_body_get(m, &b2), 0);
    assert_ptr_equal(b1, b2);
    rl_buf_free(&b);
    cch_msg_unref(m);
}

static void test_decode_python_bytes(void **state) {
    (void)state;
    char data[256];
    size_t n = unhex(python_bytes, data);
    decodes_to(data, n, "chat_message", our_body);
}

static void test_prefix_and_channels(void **state) {
    (void)state;
    cch_msg *m = msg("chat.message", "{\"message\":\"x\"}");
    const rl_body *body;
    assert_int_equal(rl_body_get(m, &body), 0);
    const char *names[2] = {"specific.P!a", "specific.P!bb"};
    size_t lens[2] = {12, 13};
    rl_buf one = {0}, list = {0}, one2 = {0};
    assert_true(rl_encode(&one, RL_RANDOM_PREFIX, "chat.message", body, names, lens, 1, false));
    assert_true(rl_encode(&one2, RL_RANDOM_PREFIX, "chat.message", body, names, lens, 1, false));
    assert_true(rl_encode(&list, RL_RANDOM_PREFIX, "chat.message", body, names, lens, 2, true));
    /* two encodings differ only in their random 12 bytes */
    assert_int_equal(one.len, one2.len);
    assert_memory_equal(one.p + 12, one2.p + 12, one.len - 12);
    assert_memory_not_equal(one.p, one2.p, 12);
    rl_incoming in;
    char err[160];
    assert_int_equal(rl_decode(&in, one.p + 12, one.len - 12, err, sizeof err), 0);
    assert_non_null(in.chan);
    assert_int_equal(in.chan->type, MSGPACK_OBJECT_STR);
    assert_int_equal(in.chan->via.str.size, 12);
    assert_memory_equal(in.chan->via.str.ptr, "specific.P!a", 12);
    assert_string_equal(cch_msg_body(in.msg), "{\"message\":\"x\"}"); /* channel stripped */
    rl_incoming_done(&in);
    assert_int_equal(rl_decode(&in, list.p + 12, list.len - 12, err, sizeof err), 0);
    assert_int_equal(in.chan->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(in.chan->via.array.size, 2);
    assert_memory_equal(in.chan->via.array.ptr[1].via.str.ptr, "specific.P!bb", 13);
    rl_incoming_done(&in);
    rl_buf_free(&one);
    rl_buf_free(&one2);
    rl_buf_free(&list);
    cch_msg_unref(m);
}

/* JSON -> msgpack -> JSON keeps every value exactly. */
static void roundtrip(const char *body, const char *expect) {
    cch_msg *m = msg("t", body);
    rl_buf b = {0};
    encode(m, &b);
    decodes_to(b.p, b.len, "t", expect ? expect : body);
    rl_buf_free(&b);
    cch_msg_unref(m);
}

static void test_roundtrip_values(void **state) {
    (void)state;
    roundtrip("{}", NULL);
    roundtrip("{\"i\":0,\"neg\":-1,\"min\":-9223372036854775808,\"max\":9223372036854775807}",
              NULL);
    roundtrip("{\"f\":0.1,\"g\":-2.5e-300,\"h\":1e+300,\"z\":-0.0,\"one\":1.0,\"third\":0.3333333333333333}",
              NULL);
    roundtrip("{\"s\":\"\\u0000 \\\" \\\\ \\n \\t \\u001f \\u00e9\\u20ac\\ud83d\\ude00\"}",
              "{\"s\":\"\\u0000 \\\" \\\\ \\n \\t \\u001f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
    roundtrip("{\"a\":[[],{},[{\"b\":[null,true,false]}]],\"e\":\"\"}", NULL);
    roundtrip(" { \"spaced\" : [ 1 , 2 ] } ", "{\"spaced\":[1,2]}");
}

static void test_body_reserved_fields(void **state) {
    (void)state;
    const rl_body *body;
    cch_msg *m = msg("t", "{\"type\":\"x\"}");
    assert_int_equal(rl_body_get(m, &body), CCH_EBODY);
    cch_msg_unref(m);
    m = msg("t", "{\"__asgi_channel__\":\"x\"}");
    assert_int_equal(rl_body_get(m, &body), CCH_EBODY);
    cch_msg_unref(m);
    m = msg("t", "{\"nested\":{\"type\":\"fine below the top\"}}");
    assert_int_equal(rl_body_get(m, &body), 0);
    cch_msg_unref(m);
}

/* ---- decoding errors --------------------------------------------------------------------- */

static void test_values_json_cannot_hold(void **state) {
    (void)state;
    char err[160];
    rl_buf b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, w_buf);
    /* {"type": "t", "data": bin} */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "data", 4);
    msgpack_pack_bin_with_body(&pk, "\x01\x02", 2);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    assert_non_null(strstr(err, "bin"));
    assert_non_null(strstr(err, "data"));
    b.len = 0;
    /* ext */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_ext_with_body(&pk, "abcd", 4, 5);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    assert_non_null(strstr(err, "ext"));
    b.len = 0;
    /* NaN and infinity */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "f", 1);
    msgpack_pack_double(&pk, NAN);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    assert_non_null(strstr(err, "NaN"));
    b.len = 0;
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "f", 1);
    msgpack_pack_float(&pk, INFINITY);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    b.len = 0;
    /* a nested map with an integer key */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "m", 1);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_nil(&pk);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    assert_non_null(strstr(err, "key"));
    b.len = 0;
    /* an integer above int64 (Python packs 2**63 as uint64) */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "u", 1);
    msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX + 1);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    assert_non_null(strstr(err, "int64"));
    b.len = 0;
    /* a bin "type" (what Python sends for bytes) */
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_bin_with_body(&pk, "t", 1);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    b.len = 0;
    /* no type; a type cchannels refuses; not a map; channel of the wrong kind */
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_nil(&pk);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    b.len = 0;
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "has space", 9);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_ENAME);
    b.len = 0;
    msgpack_pack_array(&pk, 0);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    b.len = 0;
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, RL_ASGI_CHANNEL, strlen(RL_ASGI_CHANNEL));
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 1);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    b.len = 0;
    /* invalid UTF-8 in a string */
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "s", 1);
    msgpack_pack_str_with_body(&pk, "\xff\xfe", 2);
    assert_int_equal(decode_err(b.p, b.len, err, sizeof err), CCH_EBODY);
    rl_buf_free(&b);
}

static void test_malformed_msgpack(void **state) {
    (void)state;
    char err[160];
    /* truncated, a huge declared array, trailing bytes, the reserved 0xc1, deep nesting */
    static const char *const cases[] = {
        "82a474797065", "dfffffffff", "81a474797065a174c0", "c1", "",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char data[64];
        size_t n = unhex(cases[i], data);
        assert_int_equal(decode_err(data, n, err, sizeof err), CCH_EBODY);
    }
    char deep[80];
    memcpy(deep, "\x82\xa4type\xa1t\xa1x", 10);
    memset(deep + 10, 0x91, 40); /* 40 nested arrays */
    deep[50] = (char)0xc0;
    assert_int_equal(decode_err(deep, 51, err, sizeof err), CCH_EBODY);
    /* every prefix of a valid message fails cleanly */
    char data[256];
    size_t n = unhex(python_bytes, data);
    for (size_t i = 0; i < n; i++) assert_int_equal(decode_err(data, i, err, sizeof err), CCH_EBODY);
}

/* Empty strings as keys and values: msgpack-c gives them a NULL pointer, which must
 * not reach memcpy or pointer arithmetic (UBSan; found by fuzz/fuzz_redis_msgpack). */
static void test_empty_strings(void **state) {
    (void)state;
    char data[64];
    /* {"": "", "type": "a", "k": ""} */
    size_t n = unhex("83a0a0a474797065a161a16ba0", data);
    rl_incoming in;
    char err[160];
    assert_int_equal(rl_decode(&in, data, n, err, sizeof err), 0);
    assert_string_equal(cch_msg_type(in.msg), "a");
    assert_string_equal(cch_msg_body(in.msg), "{\"\":\"\",\"k\":\"\"}");
    rl_incoming_done(&in);
}

/* ---- hash, time, urls ---------------------------------------------------------------------- */

static void test_hash_matches_channels_redis(void **state) {
    (void)state;
    assert_int_equal(rl_crc32("123456789", 9), 0xcbf43926u);
    /* channels_redis.utils._consistent_hash(name, n) for n in (1, 2, 3, 7, 186, 246) */
    static const struct {
        const char *name;
        uint32_t want[6];
    } cases[] = {
        {"g", {0, 1, 2, 5, 133, 176}},
        {"chat_lobby", {0, 1, 1, 3, 97, 129}},
        {"specific.abc!", {0, 1, 2, 6, 165, 219}},
        {"asgi__group__chat_lobby", {0, 0, 0, 0, 13, 18}},
        {"specific.10742309a311!", {0, 0, 0, 0, 10, 13}},
    };
    static const uint32_t ns[6] = {1, 2, 3, 7, 186, 246};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (size_t j = 0; j < 6; j++)
            assert_int_equal(rl_hash(cases[i].name, strlen(cases[i].name), ns[j]),
                             cases[i].want[j]);
}

static void test_scores(void **state) {
    (void)state;
    atomic_uint_fast64_t last;
    atomic_init(&last, 0);
    uint64_t a = rl_now_us(&last), b = rl_now_us(&last);
    assert_true(b > a); /* strictly increasing */
    char buf[40];
    rl_fmt_score(buf, sizeof buf, 1795646153453321ull);
    assert_string_equal(buf, "1795646153.453321");
    rl_fmt_score(buf, sizeof buf, 1795646153000001ull);
    assert_string_equal(buf, "1795646153.000001");
    rl_fmt_cutoff(buf, sizeof buf, 1795646153999999ull, 60);
    assert_string_equal(buf, "1795646093");
    assert_int_equal(rl_nonlocal_len("specific.P!x", 12), 11);
    assert_int_equal(rl_nonlocal_len("plain", 5), 5);
}

static void test_urls(void **state) {
    (void)state;
    rl_url u;
    assert_int_equal(rl_url_parse("redis://127.0.0.1:6380/2", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_null(u.password);
    assert_false(u.pubsub);
    rl_url_free(&u);
    assert_int_equal(rl_url_parse("redis+pubsub://:s%40cret@[::1]", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6379);
    assert_string_equal(u.password, "s@cret");
    assert_null(u.user);
    assert_true(u.pubsub);
    rl_url_free(&u);
    assert_int_equal(rl_url_parse("redis://bob:pw@localhost/?db=3&socket_timeout=1", &u), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 3);
    rl_url_free(&u);
    static const char *const bad[] = {
        "http://x", "redis://", "redis://:6379", "redis://h:0", "redis://h:70000",
        "redis://h:12x", "redis://h/abc", "redis://[::1", "redis://:%4@h", "redis://:%00@h",
        "redis://h:1/2/3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(rl_url_parse(bad[i], &u), CCH_EINVAL);
        assert_null(u.host);
    }
    assert_int_equal(rl_url_parse("rediss://h", &u), CCH_ENOTSUP);
    assert_int_equal(rl_url_parse("unix:///tmp/redis.sock", &u), CCH_ENOTSUP);
}

static void test_options_refused(void **state) {
    (void)state;
    cch_layer *l = (cch_layer *)1;
    assert_int_equal(cch_redis_layer_new(NULL, NULL), CCH_EINVAL);
    const char *mixed[2] = {"redis://127.0.0.1:1", "redis+pubsub://127.0.0.1:2"};
    cch_redis_layer_options o = {.urls = mixed, .n_urls = 2};
    assert_int_equal(cch_redis_layer_new(&o, &l), CCH_EINVAL);
    assert_null(l);
    o = (cch_redis_layer_options){.prefix = "bad prefix"};
    assert_int_equal(cch_redis_layer_new(&o, &l), CCH_EINVAL);
    o = (cch_redis_layer_options){.prefix = "0123456789012345678901234567890123"};
    assert_int_equal(cch_redis_layer_new(&o, &l), CCH_EINVAL);
    o = (cch_redis_layer_options){.reconnect_min_ms = 500, .reconnect_max_ms = 100};
    assert_int_equal(cch_redis_layer_new(&o, &l), CCH_EINVAL);
    cch_redis_capacity caps[1] = {{NULL, 3}};
    o = (cch_redis_layer_options){.channel_capacity = caps, .n_channel_capacity = 1};
    assert_int_equal(cch_redis_layer_new(&o, &l), CCH_EINVAL);
    assert_int_equal(cch_redis_layer_new_url("rediss://h", &l), CCH_ENOTSUP);
    assert_int_equal(cch_redis_layer_new_url(NULL, &l), CCH_EINVAL);
    /* not a Redis layer */
    cch_layer *mem = cch_memory_layer_new(NULL);
    assert_int_equal(cch_redis_layer_sync(mem, 0), CCH_EINVAL);
    assert_false(cch_redis_layer_connected(mem));
    assert_null(cch_redis_layer_process(mem));
    cch_layer_unref(mem);
}

/* A layer whose server is not there: everything local still works; remote work waits
 * (bounded) and the layer stops cleanly. Capacity patterns apply. */
static void test_no_server(void **state) {
    (void)state;
    const char *url[1] = {"redis://127.0.0.1:1"}; /* nothing listens on port 1 */
    cch_redis_capacity caps[2] = {{"specific.*!x*", 7}, {"*", 9}};
    cch_redis_layer_options o = {.urls = url, .n_urls = 1, .max_pending = 2,
                                 .channel_capacity = caps, .n_channel_capacity = 2,
                                 .reconnect_min_ms = 10, .reconnect_max_ms = 20};
    cch_layer *l = NULL;
    assert_int_equal(cch_redis_layer_new(&o, &l), 0);
    assert_string_equal(cch_layer_kind(l), "redis");
    assert_int_equal(strlen(cch_redis_layer_process(l)), 12);
    assert_int_equal(rl_capacity_for(RL(l), "specific.P!xyz"), 7);
    assert_int_equal(rl_capacity_for(RL(l), "plain"), 9);
    char ch[CCH_NAME_BUF], ub[CCH_NAME_BUF], small[10];
    fx_recv w;
    fx_recv_init(&w, l);
    assert_int_equal(cch_layer_new_channel(l, NULL, w.r, &w, ch, sizeof ch), 0);
    assert_int_equal(cch_layer_new_channel(l, NULL, NULL, NULL, ub, sizeof ub), 0);
    assert_int_equal(cch_layer_new_channel(l, NULL, NULL, NULL, small, sizeof small), CCH_ETOOBIG);
    cch_msg *m = msg("t", "{\"a\":1}");
    /* our own channels: in-process at once */
    cch_delivery d[4];
    assert_int_equal(cch_layer_send(l, ch, m), 0);
    assert_int_equal(cch_layer_poll(l, w.r, d, 4), 1);
    assert_ptr_equal(d[0].msg, m);
    assert_ptr_equal(d[0].channel_ud, &w);
    fx_drop(d, 1);
    cch_msg *got = NULL;
    assert_int_equal(cch_layer_send(l, ub, m), 0);
    assert_int_equal(cch_layer_receive(l, ub, &got), 0);
    assert_ptr_equal(got, m);
    cch_msg_unref(got);
    assert_int_equal(cch_layer_receive(l, ub, &got), CCH_EAGAIN);
    assert_int_equal(cch_layer_receive(l, ch, &got), CCH_EINVAL); /* bound: poll it */
    assert_int_equal(cch_layer_receive(l, "specific.other!x", &got), CCH_EINVAL);
    /* membership of our channel: recorded, not queued while down */
    assert_int_equal(cch_layer_group_add(l, "g", ch), 0);
    /* a group_send is served in-process by the I/O thread, Redis or not */
    assert_int_equal(cch_layer_group_send(l, "g", m, NULL, NULL), 0);
    assert_int_equal(fx_collect(&w, d, 1, FX_WAIT_MS), 1);
    assert_ptr_equal(d[0].msg, m);
    fx_drop(d, 1);
    /* remote work: max_pending = 2, and the group_send above holds one */
    assert_int_equal(cch_layer_send(l, "specific.other!x", m), 0);
    assert_int_equal(cch_layer_send(l, "plain", m), CCH_ELIMIT);
    cch_msg *typed = msg("t", "{\"type\":1}");
    assert_int_equal(cch_layer_send(l, "plain", typed), CCH_EBODY);
    assert_int_equal(cch_layer_group_send(l, "g", typed, NULL, NULL), CCH_EBODY);
    cch_msg_unref(typed);
    assert_int_equal(cch_redis_layer_sync(l, 50), CCH_ETRANSPORT);
    assert_false(cch_redis_layer_connected(l));
    cch_layer_stats st;
    cch_layer_stats_get(l, &st);
    assert_int_equal(st.dropped, 1); /* the refused send */
    assert_int_equal(cch_layer_group_discard(l, "g", ch), 0);
    assert_int_equal(cch_layer_release_channel(l, ch), 0);
    assert_int_equal(cch_layer_release_channel(l, ch), CCH_ENOTFOUND);
    assert_int_equal(cch_layer_release_channel(l, ub), 0);
    /* a send to one of our released channels is dropped and counted */
    assert_int_equal(cch_layer_send(l, ch, m), 0);
    cch_layer_stats st2;
    cch_layer_stats_get(l, &st2);
    assert_int_equal(st2.dropped, st.dropped + 1);
    fx_recv_free(&w);
    cch_msg_unref(m);
    cch_layer_unref(l); /* pending operations are dropped, nothing leaks */
}

/* ---- out of memory ------------------------------------------------------------------------------ */

static void test_codec_out_of_memory(void **state) {
    (void)state;
    char data[256];
    size_t n = unhex(python_bytes, data);
    bool enc_ok = false, dec_ok = false;
    for (long k = 0; k < 200 && !(enc_ok && dec_ok); k++) {
        cch_msg *m = msg("chat_message", our_body); /* made before fail_after() */
        fail_after(k);
        const rl_body *body;
        int rc = rl_body_get(m, &body);
        rl_buf b = {0};
        if (rc == 0) {
            bool ok = rl_encode(&b, 12, "t", body, NULL, NULL, 0, false);
            enc_ok = enc_ok || ok;
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
        }
        rl_incoming in;
        char err[160];
        rc = rl_decode(&in, data, n, err, sizeof err);
        if (rc == 0) dec_ok = true;
        else assert_int_equal(rc, CCH_ENOMEM);
        rl_incoming_done(&in);
        alloc_restore();
        rl_buf_free(&b);
        cch_msg_unref(m);
    }
    assert_true(enc_ok && dec_ok);
}

static void test_layer_new_out_of_memory(void **state) {
    (void)state;
    const char *url[1] = {"redis://127.0.0.1:1"};
    cch_redis_layer_options o = {.urls = url, .n_urls = 1, .reconnect_min_ms = 10,
                                 .reconnect_max_ms = 10};
    bool made = false;
    for (long k = 0; k < 100 && !made; k++) {
        cch_layer *l = NULL;
        fail_after(k);
        int rc = cch_redis_layer_new(&o, &l);
        alloc_restore();
        if (rc == 0) {
            made = true;
            cch_layer_unref(l);
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
            assert_null(l);
        }
    }
    assert_true(made);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_matches_python),
        cmocka_unit_test(test_decode_python_bytes),
        cmocka_unit_test(test_prefix_and_channels),
        cmocka_unit_test(test_roundtrip_values),
        cmocka_unit_test(test_body_reserved_fields),
        cmocka_unit_test(test_values_json_cannot_hold),
        cmocka_unit_test(test_malformed_msgpack),
        cmocka_unit_test(test_empty_strings),
        cmocka_unit_test(test_hash_matches_channels_redis),
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_urls),
        cmocka_unit_test(test_options_refused),
        cmocka_unit_test(test_no_server),
        cmocka_unit_test(test_codec_out_of_memory),
        cmocka_unit_test(test_layer_new_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
