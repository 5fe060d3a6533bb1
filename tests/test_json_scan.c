/* tests/test_json_scan.c - the allocation-free JSON scanner (lib/core/json_scan.h).
 *
 * Every input is copied into a heap buffer of exactly its length (no NUL after it),
 * so AddressSanitizer catches any read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cchannels/error.h"
#include "cchannels/msg.h"
#include "json_scan.h"

/* An exact-size heap copy of s[0..n). */
static char *dup_exact(const char *s, size_t n) {
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static int check_n(const char *s, size_t n) {
    char *p = dup_exact(s, n);
    int rc = cch__json_check_object(p, n);
    free(p);
    return rc;
}

static int check(const char *s) { return check_n(s, strlen(s)); }

/* find_field on an exact-size copy; on success *out holds the value text. */
static int find(const char *body, const char *name, char *out, size_t cap) {
    size_t n = strlen(body);
    char *p = dup_exact(body, n);
    const char *v = NULL;
    size_t vlen = 0;
    int rc = cch__json_find_field(p, n, name, strlen(name), &v, &vlen);
    if (rc == 0) {
        assert_true(v >= p && v + vlen <= p + n);
        assert_true(vlen < cap);
        memcpy(out, v, vlen);
        out[vlen] = '\0';
    }
    free(p);
    return rc;
}

static int decode_n(const char *lit, size_t n, char *buf, size_t cap, size_t *out_len) {
    char *p = dup_exact(lit, n);
    int rc = cch__json_decode_string(p, n, buf, cap, out_len);
    free(p);
    return rc;
}

static int decode(const char *lit, char *buf, size_t cap, size_t *out_len) {
    return decode_n(lit, strlen(lit), buf, cap, out_len);
}

static int parse_int(const char *s, int64_t *out) {
    size_t n = strlen(s);
    char *p = dup_exact(s, n);
    int rc = cch__json_parse_int(p, n, out);
    free(p);
    return rc;
}

/* ---- validation ----------------------------------------------------------------- */

static void test_valid_objects(void **state) {
    (void)state;
    static const char *ok[] = {
        "{}",
        " {} ",
        "\t\r\n{ }\n\t\r ",
        "{\"a\":1}",
        "{\"a\" : 1 , \"b\" :\t2}",
        "{\"\":\"\"}",
        "{\"a\":[]}",
        "{\"a\":[ ]}",
        "{\"a\":{}}",
        "{\"a\":[1,2,[3,{\"b\":null}]],\"c\":{\"d\":[true,false]}}",
        "{\"n\":[0,-0,1,-1,10,1.5,-0.25,1e10,1E10,1e+2,1E-2,-1.0e-3,0.0,123456789012345678901234567890.5]}",
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\u0000\"}",
        "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf \x7f\"}",
        "{\"s\":\"\xed\x9f\xbf\xee\x80\x80\"}", /* around the surrogate range */
        "{\"s\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xf0\x90\x80\x80\"}", /* smallest non-overlongs */
        "{\"s\":\"\xf1\x80\x80\x80\xf3\xbf\xbf\xbf\xe1\x80\x80\xec\xbf\xbf\"}", /* F1..F3, E1..EC */
        "{\"a\":true,\"b\":false,\"c\":null}",
        "{\"dup\":1,\"dup\":2}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (check(ok[i]) != 0) fail_msg("rejected valid input #%zu: %s", i, ok[i]);
    }
}

static void test_invalid_structure(void **state) {
    (void)state;
    static const char *bad[] = {
        "", " ", "\n", "[]", "1", "\"a\"", "null", "true",
        "{} {}", "{}x", "{}]", "{", "}", "{{}}", "{[]}",
        "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{,}", "{,\"a\":1}",
        "{\"a\":1 \"b\":2}", "{\"a\":1,,\"b\":2}", "{a:1}", "{'a':1}", "{\"a\":'b'}",
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":[}", "{\"a\":]}",
        "{\"a\":{]}", "{\"a\":[}]", "{\"a\":1]", "{\"a\":[1}",
        "{\"a\":tru}", "{\"a\":True}", "{\"a\":nul}", "{\"a\":falsey}", "{\"a\":nulll}",
        "{\"a\":undefined}", "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":-Infinity}",
        "{\"a\":01}", "{\"a\":-01}", "{\"a\":00}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}",
        "{\"a\":+1}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":1E-}", "{\"a\":0x10}", "{\"a\":1.e5}",
        "{\"a\":--1}", "{\"a\":1.5.5}",
        "\xef\xbb\xbf{}", /* a byte order mark is not whitespace */
        "\v{}", "{}\f", "\xc2\xa0{}", /* nor are these */
        "{\"a\":1}\x80", "{\x80}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (check(bad[i]) != CCH_EBODY) fail_msg("accepted invalid input #%zu: %s", i, bad[i]);
    }
}

static void test_invalid_strings(void **state) {
    (void)state;
    static const char *bad[] = {
        "{\"a\":\"unterminated}",
        "{\"a\":\"x\x01y\"}",      /* raw control characters */
        "{\"a\":\"x\ny\"}",
        "{\"a\":\"x\ty\"}",
        "{\"a\":\"x\x1fy\"}",
        "{\"a\\\":1}",             /* the escaped quote does not end the key */
        "{\"a\":\"\\x41\"}",       /* unknown escapes */
        "{\"a\":\"\\'\"}",
        "{\"a\":\"\\U0041\"}",
        "{\"a\":\"\\a\"}",
        "{\"a\":\"\\u12\"}",       /* short \u */
        "{\"a\":\"\\u12G4\"}",
        "{\"a\":\"\\u\"}",
        "{\"a\":\"\\",
        "{\"a\":\"\\ud800\"}",     /* lone high surrogate */
        "{\"a\":\"\\udbff\"}",
        "{\"a\":\"\\udc00\"}",     /* lone low surrogate */
        "{\"a\":\"\\udfff\\ud800\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\":\"\\ud800\\ud800\"}",
        "{\"a\":\"\\ud800x\"}",
        "{\"a\":\"\\ud800\\\"}",
        "{\"a\":\"\\ud800\\n\"}",
        "{\"a\":\"\\ud800\\udc0\"}",
        /* invalid UTF-8 */
        "{\"a\":\"\x80\"}",         /* stray continuation */
        "{\"a\":\"\xbf\"}",
        "{\"a\":\"\xc0\x80\"}",     /* overlong NUL */
        "{\"a\":\"\xc1\xbf\"}",     /* overlong 2-byte */
        "{\"a\":\"\xe0\x80\x80\"}", /* overlong 3-byte */
        "{\"a\":\"\xe0\x9f\xbf\"}",
        "{\"a\":\"\xf0\x80\x80\x80\"}", /* overlong 4-byte */
        "{\"a\":\"\xf0\x8f\xbf\xbf\"}",
        "{\"a\":\"\xed\xa0\x80\"}", /* UTF-16 surrogates encoded */
        "{\"a\":\"\xed\xbf\xbf\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"a\":\"\xf8\x88\x80\x80\x80\"}",
        "{\"a\":\"\xfe\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc3\"}",         /* truncated sequences */
        "{\"a\":\"\xe2\x82\"}",
        "{\"a\":\"\xf0\x9f\x98\"}",
        "{\"a\":\"\xc3\x41\"}",     /* bad continuation */
        "{\"a\":\"\xe2\x41\xac\"}",
        "{\"a\":\"\xe2\x82\x41\"}",
        "{\"a\":\"\xf0\x9f\x41\x80\"}",
        "{\"a\":\"\xf0\x9f\x98\x41\"}",
        "{\"a\":\"\xf2\x41\x80\x80\"}",
        "{\"a\":\"\xf3\x80\x80\"}",
        "{\"\xff\":1}",             /* in a key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (check(bad[i]) != CCH_EBODY) fail_msg("accepted invalid string #%zu", i);
    }
}

static void test_embedded_nul_and_truncation(void **state) {
    (void)state;
    assert_int_equal(check_n("{}\0", 3), CCH_EBODY);
    assert_int_equal(check_n("{\"a\":\"x\0y\"}", 11), CCH_EBODY);
    assert_int_equal(check_n("{\"a\"\0:1}", 8), CCH_EBODY);
    assert_int_equal(check_n("{}", 2), 0);
    /* the length, not a NUL, ends the input: "{}" followed by junk */
    assert_int_equal(check_n("{}garbage", 2), 0);
    assert_int_equal(cch__json_check_object(NULL, 0), CCH_EBODY);

    /* every strict prefix of a valid object is invalid (and read within bounds) */
    static const char *docs[] = {
        "{\"a\":[1,-2.5e+3,{\"b\":\"\\ud83d\\ude00\xc3\xa9\"}],\"c\":true,\"d\":null,\"e\":false}",
        "{\"text\":\"hello \\\"world\\\"\",\"n\":12}",
    };
    for (size_t d = 0; d < sizeof docs / sizeof *docs; d++) {
        size_t n = strlen(docs[d]);
        assert_int_equal(check_n(docs[d], n), 0);
        for (size_t k = 0; k < n; k++) {
            if (check_n(docs[d], k) != CCH_EBODY) fail_msg("prefix %zu of doc %zu accepted", k, d);
            const char *v;
            size_t vl;
            char *p = dup_exact(docs[d], k);
            assert_int_equal(cch__json_find_field(p, k, "e", 1, &v, &vl), CCH_EBODY);
            free(p);
        }
    }
}

/* Numbers and keys jansson cannot hold are refused, so that every accepted body
 * parses with cch_msg_json (found by fuzz/fuzz_json). */
static void test_unrepresentable(void **state) {
    (void)state;
    /* 2^1024 - 2^970 rounds to infinity; anything below it rounds to DBL_MAX. */
    static const char threshold[] = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";
    static const char *ok[] = {
        "{\"a\":9223372036854775807}", "{\"a\":-9223372036854775808}", "{\"a\":-0}",
        "{\"a\":9223372036854775808.0}", "{\"a\":1e18}", "{\"a\":1.7976931348623157e308}",
        "{\"a\":1.797693134862315807937289714053e308}", "{\"a\":-1.79769313486231580e308}",
        "{\"a\":1e-400}", "{\"a\":0e99999999999999999999999}", "{\"a\":0.000e400}",
        "{\"a\":0.0000000000000000000000000000000000000000000000000000000001e365}",
        "{\"a\":1e308}", "{\"a\":-1e-99999999999999999999999}",
        "{\"a\":\"\\u0000\"}", "{\"a\":[\"\\u0000\"]}", "{\"a\\u0001\":1}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (check(ok[i]) != 0) fail_msg("rejected representable input #%zu: %s", i, ok[i]);
    static const char *bad[] = {
        "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775809}",
        "{\"a\":123456789012345678901234567890}", "{\"a\":[1,99999999999999999999]}",
        "{\"a\":1.797693134862315807937289714054e308}", "{\"a\":1e309}",
        "{\"a\":-1e309}", "{\"a\":1E+400}", "{\"a\":0.1e310}",
        "{\"a\":1e99999999999999999999999}", "{\"a\":10000e305}",
        "{\"a\\u0000\":1}", "{\"\\u0000\":1}", "{\"a\":{\"b\\u0000c\":1}}",
        "{\"a\":[{\"\\u0000\":[]}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (check(bad[i]) != CCH_EBODY) fail_msg("accepted unrepresentable input #%zu: %s", i, bad[i]);

    char buf[400];
    /* the threshold itself (a tie: rounds to 2^1024), as a real and with more digits */
    snprintf(buf, sizeof buf, "{\"a\":%s.0}", threshold);
    assert_int_equal(check(buf), CCH_EBODY);
    snprintf(buf, sizeof buf, "{\"a\":0.%s000e309}", threshold);
    assert_int_equal(check(buf), CCH_EBODY);
    snprintf(buf, sizeof buf, "{\"a\":0.%s001e309}", threshold);
    assert_int_equal(check(buf), CCH_EBODY);
    /* just below it */
    snprintf(buf, sizeof buf, "{\"a\":%.308s1.99}", threshold);
    assert_int_equal(check(buf), 0);
    snprintf(buf, sizeof buf, "{\"a\":-0.%.308se309}", threshold);
    assert_int_equal(check(buf), 0);
    snprintf(buf, sizeof buf, "{\"a\":179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791e0}");
    assert_int_equal(check(buf), 0);

    /* find_field checks the whole body, and a NUL key never matches */
    const char *v;
    size_t vl;
    const char *body = "{\"a\":1,\"b\\u0000\":2}";
    assert_int_equal(cch__json_find_field(body, strlen(body), "a", 1, &v, &vl), CCH_EBODY);
    body = "{\"a\":1,\"b\":1e400}";
    assert_int_equal(cch__json_find_field(body, strlen(body), "a", 1, &v, &vl), CCH_EBODY);
}

/* {"a":{"a":...1...}} (or arrays inside); depth counts the outer object as 1. */
static char *nest(int depth, bool arrays) {
    size_t cap = (size_t)depth * 8 + 16, n = 0;
    char *s = malloc(cap);
    if (!s) abort();
    memcpy(s, "{\"a\":", 5);
    n = 5;
    for (int i = 1; i < depth; i++) {
        if (arrays) {
            s[n++] = '[';
        } else {
            memcpy(s + n, "{\"a\":", 5);
            n += 5;
        }
    }
    s[n++] = '1';
    for (int i = 1; i < depth; i++) s[n++] = arrays ? ']' : '}';
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

static void test_depth_limit(void **state) {
    (void)state;
    for (int arrays = 0; arrays <= 1; arrays++) {
        char *ok = nest(CCH_MSG_BODY_MAX_DEPTH, arrays);
        char *bad = nest(CCH_MSG_BODY_MAX_DEPTH + 1, arrays);
        assert_int_equal(check(ok), 0);
        assert_int_equal(check(bad), CCH_EBODY);
        const char *v;
        size_t vl;
        assert_int_equal(cch__json_find_field(ok, strlen(ok), "a", 1, &v, &vl), 0);
        assert_int_equal(vl, strlen(ok) - 6); /* everything between {"a": and } */
        assert_int_equal(cch__json_find_field(bad, strlen(bad), "a", 1, &v, &vl), CCH_EBODY);
        free(ok);
        free(bad);
    }
    /* depth counts containers, so an empty innermost container counts too */
    char buf[512];
    size_t n = 0;
    n += (size_t)sprintf(buf + n, "{\"a\":");
    for (int i = 1; i < CCH_MSG_BODY_MAX_DEPTH; i++) buf[n++] = '[';
    for (int i = 1; i < CCH_MSG_BODY_MAX_DEPTH; i++) buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    assert_int_equal(check(buf), 0); /* 1 object + 63 arrays = 64 */
    n = 0;
    n += (size_t)sprintf(buf + n, "{\"a\":");
    for (int i = 0; i < CCH_MSG_BODY_MAX_DEPTH; i++) buf[n++] = '[';
    for (int i = 0; i < CCH_MSG_BODY_MAX_DEPTH; i++) buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    assert_int_equal(check(buf), CCH_EBODY); /* 65 */
    const char *v;
    size_t vl;
    assert_int_equal(cch__json_find_field(buf, n, "a", 1, &v, &vl), CCH_EBODY);

    /* very deep input is refused without recursion */
    size_t big = 1000000;
    char *deep = malloc(big);
    assert_non_null(deep);
    deep[0] = '{';
    deep[1] = '"';
    deep[2] = '"';
    deep[3] = ':';
    memset(deep + 4, '[', big - 4);
    assert_int_equal(cch__json_check_object(deep, big), CCH_EBODY);
    assert_int_equal(cch__json_find_field(deep, big, "", 0, &v, &vl), CCH_EBODY);
    free(deep);
}

/* ---- find_field ----------------------------------------------------------------- */

static void test_find_field(void **state) {
    (void)state;
    char v[256];
    const char *body = " { \"type\" : \"x\" , \"text\":\"hi\",\"n\" :\t-12 ,\"arr\": [1, 2] ,"
                       "\"obj\":{\"text\":\"inner\"},\"t\":true,\"f\":false,\"z\":null,"
                       "\"s\":\"\\\"text\\\":1\"} ";
    assert_int_equal(find(body, "text", v, sizeof v), 0);
    assert_string_equal(v, "\"hi\"");
    assert_int_equal(find(body, "n", v, sizeof v), 0);
    assert_string_equal(v, "-12");
    assert_int_equal(find(body, "arr", v, sizeof v), 0);
    assert_string_equal(v, "[1, 2]");
    assert_int_equal(find(body, "obj", v, sizeof v), 0);
    assert_string_equal(v, "{\"text\":\"inner\"}");
    assert_int_equal(find(body, "t", v, sizeof v), 0);
    assert_string_equal(v, "true");
    assert_int_equal(find(body, "f", v, sizeof v), 0);
    assert_string_equal(v, "false");
    assert_int_equal(find(body, "z", v, sizeof v), 0);
    assert_string_equal(v, "null");
    assert_int_equal(find(body, "s", v, sizeof v), 0);
    assert_string_equal(v, "\"\\\"text\\\":1\"");
    /* not at the top level, or only a prefix / extension of a key */
    assert_int_equal(find(body, "inner", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find(body, "tex", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find(body, "texts", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find(body, "", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{}", "a", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"a\":{\"b\":1}}", "b", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"\":5}", "", v, sizeof v), 0);
    assert_string_equal(v, "5");
    /* the last duplicate wins, as in Python and jansson */
    assert_int_equal(find("{\"a\":1,\"b\":0,\"a\":2}", "a", v, sizeof v), 0);
    assert_string_equal(v, "2");
    /* invalid bodies */
    assert_int_equal(find("{\"a\":1", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":1}x", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":1,}", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("[\"a\",1]", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":01}", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":1 \"b\":2}", "b", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":\"\\ud800\"}", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\"}", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{\"a\":}", "a", v, sizeof v), CCH_EBODY);
    assert_int_equal(find("{1:2}", "a", v, sizeof v), CCH_EBODY);
    /* a match before the error does not hide it */
    assert_int_equal(find("{\"a\":1,\"b\":[}", "a", v, sizeof v), CCH_EBODY);

    const char *out;
    size_t len;
    assert_int_equal(cch__json_find_field(NULL, 0, "a", 1, &out, &len), CCH_EBODY);
    assert_int_equal(cch__json_find_field("{}", 2, NULL, 0, &out, &len), CCH_EBODY);
    /* val and val_len may be NULL */
    assert_int_equal(cch__json_find_field("{\"a\":1}", 7, "a", 1, NULL, NULL), 0);
}

static void test_find_escaped_keys(void **state) {
    (void)state;
    char v[64];
    assert_int_equal(find("{\"te\\u0078t\":1}", "text", v, sizeof v), 0);
    assert_string_equal(v, "1");
    assert_int_equal(find("{\"\\u0074\\u0065\\u0078\\u0074\":2}", "text", v, sizeof v), 0);
    assert_string_equal(v, "2");
    assert_int_equal(find("{\"te\\u0078\":3}", "text", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"te\\u0078tt\":3}", "text", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"te\\u0078t\":3}", "tex", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"te\\u0079t\":3}", "text", v, sizeof v), CCH_ENOTFOUND);
    assert_int_equal(find("{\"a\\\"b\":4}", "a\"b", v, sizeof v), 0);
    assert_string_equal(v, "4");
    assert_int_equal(find("{\"a\\\\b\":5}", "a\\b", v, sizeof v), 0);
    assert_int_equal(find("{\"a\\/b\":6}", "a/b", v, sizeof v), 0);
    assert_int_equal(find("{\"a\\nb\":7}", "a\nb", v, sizeof v), 0);
    assert_int_equal(find("{\"caf\\u00e9\":8}", "caf\xc3\xa9", v, sizeof v), 0);
    assert_int_equal(find("{\"caf\xc3\xa9\":9}", "caf\xc3\xa9", v, sizeof v), 0);
    assert_string_equal(v, "9");
    assert_int_equal(find("{\"\\ud83d\\ude00\":10}", "\xf0\x9f\x98\x80", v, sizeof v), 0);
    assert_string_equal(v, "10");
    /* a key with an escaped NUL makes the body invalid (jansson cannot hold it) */
    assert_int_equal(find("{\"a\\u0000\":11}", "a", v, sizeof v), CCH_EBODY);
    char *p = dup_exact("{\"a\\u0000b\":12}", 15);
    const char *out;
    size_t len;
    assert_int_equal(cch__json_find_field(p, 15, "a\0b", 3, &out, &len), CCH_EBODY);
    free(p);
    /* escaped and plain spellings of one key: the last one wins */
    assert_int_equal(find("{\"text\":\"a\",\"te\\u0078t\":\"b\"}", "text", v, sizeof v), 0);
    assert_string_equal(v, "\"b\"");
}

/* ---- decode_string -------------------------------------------------------------- */

static void test_decode_string(void **state) {
    (void)state;
    char buf[64];
    size_t n = 99;
    assert_int_equal(decode("\"\"", buf, sizeof buf, &n), 0);
    assert_int_equal(n, 0);
    assert_string_equal(buf, "");
    assert_int_equal(decode("\"hello\"", buf, sizeof buf, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(buf, "hello");
    assert_int_equal(decode("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", buf, sizeof buf, &n), 0);
    assert_int_equal(n, 8);
    assert_string_equal(buf, "\"\\/\b\f\n\r\t");
    assert_int_equal(decode("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_int_equal(n, 1 + 2 + 3 + 4);
    assert_int_equal(decode("\"\\uDBFF\\uDFFF\"", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "\xf4\x8f\xbf\xbf");
    assert_int_equal(decode("\"\\u07FF\\u0800\\uFFFF\"", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf");
    assert_int_equal(decode("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", buf, sizeof buf, &n), 0);
    assert_string_equal(buf, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    /* an escaped NUL is kept; the length tells */
    assert_int_equal(decode("\"a\\u0000b\"", buf, sizeof buf, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "a\0b\0", 4);
    /* out_len may be NULL */
    assert_int_equal(decode("\"x\"", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "x");
}

static void test_decode_string_truncation(void **state) {
    (void)state;
    char buf[16];
    size_t n;
    assert_int_equal(decode("\"abc\"", buf, 4, &n), 0);
    assert_string_equal(buf, "abc");
    memset(buf, 'X', sizeof buf);
    assert_int_equal(decode("\"abc\"", buf, 3, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "ab");
    assert_int_equal(n, 3);
    assert_int_equal(decode("\"abc\"", buf, 1, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "");
    memset(buf, 'X', sizeof buf);
    assert_int_equal(decode("\"abc\"", buf, 0, &n), CCH_ETOOBIG);
    assert_int_equal(buf[0], 'X'); /* nothing written */
    assert_int_equal(decode("\"\"", NULL, 0, &n), CCH_ETOOBIG); /* no room for the NUL */
    assert_int_equal(n, 0);
    assert_int_equal(decode("\"abc\"", NULL, 0, &n), CCH_ETOOBIG);
    assert_int_equal(n, 3);
    /* characters are never split */
    assert_int_equal(decode("\"a\xc3\xa9\"", buf, 3, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "a");
    assert_int_equal(n, 3);
    assert_int_equal(decode("\"a\\u00e9\"", buf, 3, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "a");
    assert_int_equal(decode("\"\\ud83d\\ude00z\"", buf, 4, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "");
    assert_int_equal(n, 5);
    assert_int_equal(decode("\"\\ud83d\\ude00z\"", buf, 5, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "\xf0\x9f\x98\x80");
    /* after a character did not fit, later (smaller) ones are not appended */
    assert_int_equal(decode("\"a\xe2\x82\xac" "b\"", buf, 3, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "a");
    assert_int_equal(decode("\"a\\n\xe2\x82\xac\"", buf, 4, &n), CCH_ETOOBIG);
    assert_string_equal(buf, "a\n");
    /* an invalid string is EBODY even when it would also be too big */
    assert_int_equal(decode("\"abcdef\\x\"", buf, 2, &n), CCH_EBODY);
    assert_int_equal(decode("\"abcdef\xff\"", buf, 2, &n), CCH_EBODY);
}

static void test_decode_string_invalid(void **state) {
    (void)state;
    char buf[32];
    size_t n;
    static const char *bad[] = {
        "", "\"", "a", "'a'", "\"abc", "\"abc\"x", "\"abc\" ", " \"abc\"", "\"a\"\"",
        "\"\\\"", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"\x01\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "\"\xe2\x82\"", "1", "null", "{}", "[\"a\"]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (decode(bad[i], buf, sizeof buf, &n) != CCH_EBODY) fail_msg("accepted #%zu", i);
    }
    assert_int_equal(cch__json_decode_string(NULL, 0, buf, sizeof buf, &n), CCH_EBODY);
    assert_int_equal(decode_n("\"a\0b\"", 5, buf, sizeof buf, &n), CCH_EBODY);
}

/* ---- parse_int ------------------------------------------------------------------ */

static void test_parse_int(void **state) {
    (void)state;
    int64_t v;
    assert_int_equal(parse_int("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_int("-0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_int("7", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(parse_int("-42", &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(parse_int("1000", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(parse_int("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(parse_int("-9223372036854775808", &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(parse_int("9223372036854775806", &v), 0);
    assert_true(v == INT64_MAX - 1);
    assert_int_equal(parse_int("-9223372036854775807", &v), 0);
    assert_true(v == INT64_MIN + 1);

    static const char *bad[] = {
        "9223372036854775808", "-9223372036854775809", "99999999999999999999",
        "18446744073709551616", "-18446744073709551616", "92233720368547758070",
        "", "-", "+1", "01", "-01", "00", "1.0", "1.", "1e3", "1E3", "-1e0", " 1", "1 ",
        "0x10", "\"1\"", "true", "null", "1a", "--1", "[1]", "1-",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 12345;
        if (parse_int(bad[i], &v) != CCH_EBODY) fail_msg("accepted #%zu: %s", i, bad[i]);
        assert_int_equal(v, 12345); /* untouched */
    }
    assert_int_equal(cch__json_parse_int(NULL, 1, &v), CCH_EBODY);
    assert_int_equal(cch__json_parse_int("1", 1, NULL), CCH_EBODY);
    /* the length ends the number */
    assert_int_equal(cch__json_parse_int("123", 2, &v), 0);
    assert_int_equal(v, 12);
}

/* ---- robustness ------------------------------------------------------------------ */

static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Random mutations of valid bodies: every function stays in bounds, and the
 * functions agree with each other about validity. */
static void test_mutations(void **state) {
    (void)state;
    static const char *seeds[] = {
        "{\"type\":\"chat.message\",\"text\":\"hi \\u00e9 \xf0\x9f\x98\x80\",\"n\":-12,"
        "\"a\":[1,2.5e3,{\"b\":null}],\"t\":true}",
        "{\"te\\u0078t\":\"\\ud83d\\ude00\",\"code\":4000}",
        "{\"x\":{\"y\":[[[\"z\"]]]},\"f\":false}",
    };
    static const unsigned char alphabet[] = "{}[]\":,\\u0123456789abcdefABCDEF-+.eE tnrfl\x80\xbf"
                                            "\xc3\xa9\xed\xa0\xf0\x9f\xf4\xff\x00\x01\n";
    char work[256];
    for (int iter = 0; iter < 200000; iter++) {
        const char *seed = seeds[rnd() % (sizeof seeds / sizeof *seeds)];
        size_t n = strlen(seed);
        memcpy(work, seed, n);
        int muts = 1 + (int)(rnd() % 4);
        for (int k = 0; k < muts; k++) {
            uint32_t op = rnd() % 3;
            size_t pos = n ? rnd() % n : 0;
            unsigned char c = alphabet[rnd() % (sizeof alphabet - 1)];
            if (op == 0 && n) {
                work[pos] = (char)c;
            } else if (op == 1 && n + 1 < sizeof work) {
                memmove(work + pos + 1, work + pos, n - pos);
                work[pos] = (char)c;
                n++;
            } else if (n) {
                memmove(work + pos, work + pos + 1, n - pos - 1);
                n--;
            }
        }
        char *p = dup_exact(work, n);
        int valid = cch__json_check_object(p, n);
        assert_true(valid == 0 || valid == CCH_EBODY);
        const char *names[] = {"text", "n", "code", "a", ""};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            const char *v = NULL;
            size_t vl = 0;
            int rc = cch__json_find_field(p, n, names[i], strlen(names[i]), &v, &vl);
            if (valid == 0) {
                assert_true(rc == 0 || rc == CCH_ENOTFOUND);
            } else {
                assert_int_equal(rc, CCH_EBODY);
            }
            if (rc == 0) {
                assert_true(v >= p && v + vl <= p + n);
                char out[8];
                size_t ol;
                int d = cch__json_decode_string(v, vl, out, sizeof out, &ol);
                if (v[0] == '"') assert_true(d == 0 || d == CCH_ETOOBIG);
                else assert_int_equal(d, CCH_EBODY);
                int64_t iv;
                (void)cch__json_parse_int(v, vl, &iv);
            }
        }
        free(p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_objects),
        cmocka_unit_test(test_invalid_structure),
        cmocka_unit_test(test_invalid_strings),
        cmocka_unit_test(test_embedded_nul_and_truncation),
        cmocka_unit_test(test_unrepresentable),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_find_field),
        cmocka_unit_test(test_find_escaped_keys),
        cmocka_unit_test(test_decode_string),
        cmocka_unit_test(test_decode_string_truncation),
        cmocka_unit_test(test_decode_string_invalid),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
