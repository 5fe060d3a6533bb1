/* tests/test_ws_units.c - the WebSocket adapter's pure parts, without sockets.
 *
 * The accept key (RFC 6455's example), key validation, header token lists, the frame
 * header encoding (every length boundary), content types, and the static path
 * sanitiser (traversal, escapes, backslashes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ws_internal.h"

static void test_accept_key_rfc_example(void **state)
{
    (void)state;
    char out[29];
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_accept_key_too_long(void **state)
{
    (void)state;
    char big[200], out[29];
    memset(big, 'A', sizeof big);
    assert_int_equal(ws_accept_key(big, sizeof big, out), CCH_EINVAL);
}

static void test_key_valid(void **state)
{
    (void)state;
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_true(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    /* wrong length, missing padding, bad characters, non-zero padding bits */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ===", 25));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQAA", 24));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZ!==", 24));
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAB==", 24));
    assert_false(ws_key_valid("", 0));
    /* base64 of 15 or 17 bytes */
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAA", 20));
    assert_false(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAAA=", 24));
}

static void test_header_tokens(void **state)
{
    (void)state;
    const char *v = "keep-alive, Upgrade";
    assert_true(ws_header_has_token(v, strlen(v), "upgrade"));
    assert_true(ws_header_has_token(v, strlen(v), "keep-alive"));
    assert_false(ws_header_has_token(v, strlen(v), "close"));
    v = "upgraded";
    assert_false(ws_header_has_token(v, strlen(v), "upgrade"));
    v = "  websocket  ";
    assert_true(ws_header_has_token(v, strlen(v), "WebSocket"));
    v = ",,Upgrade,";
    assert_true(ws_header_has_token(v, strlen(v), "upgrade"));
    assert_false(ws_header_has_token("", 0, "upgrade"));
}

static void check_header(uint64_t len, size_t want_len, const uint8_t *want)
{
    uint8_t h[10];
    size_t n = ws_frame_header(h, 1, len);
    assert_int_equal(n, want_len);
    assert_memory_equal(h, want, n);
}

static void test_frame_header_lengths(void **state)
{
    (void)state;
    check_header(0, 2, (const uint8_t[]){0x81, 0});
    check_header(125, 2, (const uint8_t[]){0x81, 125});
    check_header(126, 4, (const uint8_t[]){0x81, 126, 0, 126});
    check_header(65535, 4, (const uint8_t[]){0x81, 126, 0xff, 0xff});
    check_header(65536, 10, (const uint8_t[]){0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0});
    check_header(0x0102030405060708ull, 10, (const uint8_t[]){0x81, 127, 1, 2, 3, 4, 5, 6, 7, 8});
    uint8_t h[10];
    assert_int_equal(ws_frame_header(h, 2, 5), 2);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(ws_frame_header(h, 8, 2), 2);
    assert_int_equal(h[0], 0x88);
    assert_int_equal(ws_frame_header(h, 9, 0), 2);
    assert_int_equal(h[0], 0x89);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_string_equal(ws_content_type("/a/index.html"), "text/html; charset=utf-8");
    assert_string_equal(ws_content_type("/a/INDEX.HTM"), "text/html; charset=utf-8");
    assert_string_equal(ws_content_type("style.css"), "text/css; charset=utf-8");
    assert_string_equal(ws_content_type("app.js"), "text/javascript; charset=utf-8");
    assert_string_equal(ws_content_type("x.json"), "application/json");
    assert_string_equal(ws_content_type("x.png"), "image/png");
    assert_string_equal(ws_content_type("x.svg"), "image/svg+xml");
    assert_string_equal(ws_content_type("x.wasm"), "application/wasm");
    assert_string_equal(ws_content_type("noext"), "application/octet-stream");
    assert_string_equal(ws_content_type("dir.d/noext"), "application/octet-stream");
    assert_string_equal(ws_content_type("x."), "application/octet-stream");
    assert_string_equal(ws_content_type("x.unknown"), "application/octet-stream");
}

static void sanitize_ok(const char *raw, const char *want)
{
    char out[256];
    assert_int_equal(ws_static_sanitize(raw, out, sizeof out), 0);
    assert_string_equal(out, want);
}

static void sanitize_err(const char *raw, int err)
{
    char out[256];
    assert_int_equal(ws_static_sanitize(raw, out, sizeof out), err);
}

static void test_sanitize(void **state)
{
    (void)state;
    sanitize_ok("/", "");
    sanitize_ok("/index.html", "index.html");
    sanitize_ok("/a/b/", "a/b/");
    sanitize_ok("//a//b", "a/b");
    sanitize_ok("/a%20b.txt", "a b.txt");
    sanitize_ok("/%41", "A");
    sanitize_ok("/..a/b..", "..a/b..");
    sanitize_ok("/.well-known/x", ".well-known/x");
    /* traversal, plain or encoded */
    sanitize_err("/..", CCH_EINVAL);
    sanitize_err("/../etc/passwd", CCH_EINVAL);
    sanitize_err("/a/../../b", CCH_EINVAL);
    sanitize_err("/%2e%2e/x", CCH_EINVAL);
    sanitize_err("/%2E%2e%2fetc", CCH_EINVAL);
    sanitize_err("/a/./b", CCH_EINVAL);
    sanitize_err("/a/..", CCH_EINVAL);
    /* backslashes, NUL, bad escapes, relative paths */
    sanitize_err("/a\\b", CCH_EINVAL);
    sanitize_err("/a%5cb", CCH_EINVAL);
    sanitize_err("/a%00b", CCH_EINVAL);
    sanitize_err("/a%zz", CCH_EINVAL);
    sanitize_err("/a%4", CCH_EINVAL);
    sanitize_err("a", CCH_EINVAL);
    sanitize_err(NULL, CCH_EINVAL);
    char tiny[4];
    assert_int_equal(ws_static_sanitize("/abcdef", tiny, sizeof tiny), CCH_ETOOBIG);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(ws_http_reason(101), "Switching Protocols");
    assert_string_equal(ws_http_reason(404), "Not Found");
    assert_string_equal(ws_http_reason(426), "Upgrade Required");
    assert_string_equal(ws_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(ws_http_reason(503), "Service Unavailable");
    assert_string_equal(ws_http_reason(499), "Client Error");
    assert_string_equal(ws_http_reason(599), "Server Error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_accept_key_too_long),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_header_tokens),
        cmocka_unit_test(test_frame_header_lengths),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
