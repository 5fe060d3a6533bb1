/* fuzz/fuzz_json.c - libFuzzer target: the JSON body helpers and their agreement
 * with jansson.
 *
 * The whole input is a message body. Checked:
 *  - cch_msg_create accepts it exactly when cch__json_check_object does (json_scan);
 *  - a body json_scan accepts parses with jansson into an object (cch_msg_json), and
 *    so does cch_json_parse; a text jansson parses into an object within the depth
 *    limit is accepted by json_scan (the two agree on the language);
 *  - for every key of that object (the last duplicate wins in both), cch_msg_field_raw
 *    finds a raw value that jansson parses to an equal value, cch_msg_field_string
 *    returns the same string (and a truncated, NUL-terminated prefix of whole
 *    characters when the buffer is short), cch_msg_field_int the same integer;
 *  - a key that is absent gives CCH_ENOTFOUND;
 *  - cch_msg_from_json of the parsed tree gives a body json_scan accepts and jansson
 *    parses back to an equal tree. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <cchannels/cchannels.h>
#include <cchannels/json.h>

#include "json_scan.h"

#define CHECK(cond, what)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_json: %s\n", what);                                 \
            __builtin_trap();                                                         \
        }                                                                             \
    } while (0)

/* Nesting depth of a jansson tree (the outermost object is 1). */
static int depth(const json_t *v)
{
    int d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int dx = depth(x);
            d = dx > d ? dx : d;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int dx = depth(x);
            d = dx > d ? dx : d;
        }
        return d + 1;
    }
    return 0;
}

static bool whole_utf8_prefix(const char *s, size_t n, const char *full, size_t full_n)
{
    if (n > full_n || memcmp(s, full, n) != 0)
        return false;
    /* The next byte of the full string must start a character. */
    return n == full_n || ((unsigned char)full[n] & 0xc0) != 0x80;
}

static void check_field(const cch_msg *m, const char *key, const json_t *want)
{
    const char *raw;
    size_t raw_len;
    int rc = cch_msg_field_raw(m, key, &raw, &raw_len);
    CHECK(rc == 0, "cch_msg_field_raw misses a key jansson found");
    const char *body = cch_msg_body(m);
    CHECK(raw >= body && raw + raw_len <= body + cch_msg_body_len(m), "raw value outside the body");
    json_error_t err;
    json_t *v = json_loadb(raw, raw_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    CHECK(v, "jansson cannot parse the raw value of a field");
    CHECK(json_equal(v, (json_t *)want), "the raw value differs from jansson's value");
    json_decref(v);

    char buf[64];
    int sr = cch_msg_field_string(m, key, buf, sizeof buf);
    if (json_is_string(want)) {
        const char *s = json_string_value(want);
        size_t n = json_string_length(want);
        if (n < sizeof buf) {
            CHECK(sr == (int)n && memcmp(buf, s, n) == 0 && buf[n] == '\0',
                  "cch_msg_field_string differs from jansson");
        } else {
            CHECK(sr == CCH_ETOOBIG, "a long string is not CCH_ETOOBIG");
            size_t got = strnlen(buf, sizeof buf);
            CHECK(got < sizeof buf, "truncated string not NUL-terminated");
            /* The prefix may stop early at an embedded NUL (\u0000). */
            CHECK(whole_utf8_prefix(buf, got, s, n) || memchr(s, '\0', got + 1),
                  "truncated string is not a prefix of whole characters");
        }
        char *big = malloc(n + 1);
        CHECK(big, "malloc");
        CHECK(cch_msg_field_string(m, key, big, n + 1) == (int)n && memcmp(big, s, n) == 0,
              "cch_msg_field_string with room differs");
        free(big);
    } else {
        CHECK(sr == CCH_EBODY, "cch_msg_field_string of a non-string is not CCH_EBODY");
    }

    int64_t iv = 0;
    int ir = cch_msg_field_int(m, key, &iv);
    if (json_is_integer(want)) {
        CHECK(ir == 0 && iv == json_integer_value(want), "cch_msg_field_int differs");
    } else {
        CHECK(ir == CCH_EBODY, "cch_msg_field_int of a non-integer is not CCH_EBODY");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    int scan = cch__json_check_object(text, size);
    CHECK(scan == 0 || scan == CCH_EBODY, "json_scan returned an odd code");
    cch_msg *m = NULL;
    int rc = cch_msg_create(&m, "fuzz.body", text, size);
    CHECK(rc == scan, "cch_msg_create and json_scan disagree");
    CHECK((rc == 0) == (m != NULL), "cch_msg_create result");

    json_error_t err;
    json_t *jt = json_loadb(text, size, JSON_ALLOW_NUL, &err); /* objects/arrays only */
    /* jansson skips a raw NUL byte after a number or a literal: such text is not
     * JSON, whatever jansson says (cch_json_parse refuses it). */
    bool raw_nul = memchr(data, '\0', size) != NULL;
    bool jobj = jt && json_is_object(jt) && depth(jt) <= CCH_MSG_BODY_MAX_DEPTH && !raw_nul;
    json_t *pp = cch_json_parse(text, size);

    if (rc == 0) {
        const json_t *tree = cch_msg_json(m);
        CHECK(tree && json_is_object(tree), "cch_msg_json fails on an accepted body");
        CHECK(jobj && json_equal((json_t *)tree, jt), "jansson disagrees with the cached tree");
        CHECK(cch_msg_json(m) == tree, "cch_msg_json does not cache");
        CHECK(pp && json_equal(pp, jt), "cch_json_parse fails on an accepted body");

        const char *key;
        json_t *val;
        json_object_foreach((json_t *)tree, key, val) check_field(m, key, val);
        const char *raw;
        size_t rl;
        CHECK(cch_msg_field_raw(m, "\x01no such key", &raw, &rl) == CCH_ENOTFOUND,
              "an absent key is found");

        cch_msg *back = NULL;
        int fr = cch_msg_from_json(&back, "fuzz.back", tree);
        CHECK(fr == 0 && back, "cch_msg_from_json of a parsed body fails");
        json_t *again = json_loadb(cch_msg_body(back), cch_msg_body_len(back), JSON_ALLOW_NUL, &err);
        CHECK(again && json_equal(again, (json_t *)tree), "the serialised tree differs");
        json_decref(again);
        cch_msg_unref(back);
    } else {
        CHECK(!jobj, "json_scan refuses an object jansson accepts");
    }
    if (pp && json_is_object(pp) && depth(pp) <= CCH_MSG_BODY_MAX_DEPTH)
        CHECK(rc == 0, "cch_json_parse accepts an object json_scan refuses");
    json_decref(pp);
    json_decref(jt);
    cch_msg_unref(m);
    return 0;
}
