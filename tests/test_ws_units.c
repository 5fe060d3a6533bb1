/* tests/test_ws_units.c - the WebSocket adapter's pure parts, without sockets.
 *
 * SHA-1 (FIPS 180 vectors, every padding boundary), the accept key (RFC 6455's
 * example), key validation, header token lists, the frame
 * header encoding (every length boundary), content types, and the static path
 * sanitiser (traversal, escapes, backslashes), and the connections' 32-bit
 * deadlines (ticks, never, the epoch moving on). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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

static void hex20(const uint8_t md[20], char out[41])
{
    for (int i = 0; i < 20; i++) {
        out[2 * i] = "0123456789abcdef"[md[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    out[40] = '\0';
}

static void test_sha1_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
         "klmnopqrlmnopqrsmnopqrstnopqrstu",
         "a49b2446a02c645bf419f995b67091253a04a259"},
    };
    uint8_t md[20];
    char hex[41];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ws_sha1(v[i].in, strlen(v[i].in), md);
        hex20(md, hex);
        assert_string_equal(hex, v[i].hex);
    }
    /* a million 'a' (FIPS 180-2 appendix A.3), fed as one buffer */
    static char million[1000000];
    memset(million, 'a', sizeof million);
    ws_sha1(million, sizeof million, md);
    hex20(md, hex);
    assert_string_equal(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void test_sha1_padding_boundaries(void **state)
{
    (void)state;
    /* lengths around the one-or-two padding blocks split (55/56 bytes) and a block
     * (64): the digests of "aaa..." computed with sha1sum */
    static const struct {
        size_t len;
        const char *hex;
    } v[] = {
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
    };
    char a[65];
    memset(a, 'a', sizeof a);
    uint8_t md[20];
    char hex[41];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ws_sha1(a, v[i].len, md);
        hex20(md, hex);
        assert_string_equal(hex, v[i].hex);
    }
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

/* Deadlines are 32-bit ticks after the server's epoch: rounded up to a tick, UINT32_MAX
 * for none, the longest timeout still exact, and the epoch moving on keeps them. */
static void test_deadline_ticks(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ws_server *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->loop = &loop;
    s->timer_due = UINT64_MAX;
    uv_timer_init(&loop, &s->timer);
    s->timer.data = s;
    ws_timer_init(s);
    ws_conn a = {.srv = s}, b = {.srv = s}, c = {.srv = s};
    uint64_t now = uv_now(&loop);
    ws_timer_set(&a, WS_TL_IDLE, 1001);
    assert_true(ws_timer_deadline(&a) >= now + 1001);
    assert_true(ws_timer_deadline(&a) < now + 1001 + WS_TICK_MS);
    ws_timer_set(&b, WS_TL_CLOSING, CCH_WS_NO_TIMEOUT);
    assert_int_equal(ws_timer_deadline(&b), UINT64_MAX);
    ws_timer_set(&c, WS_TL_HANDSHAKE, CCH_WS_NO_TIMEOUT - 1); /* 49.7 days */
    assert_true(ws_timer_deadline(&c) >= now + CCH_WS_NO_TIMEOUT - 1);
    assert_true(ws_timer_deadline(&c) < now + CCH_WS_NO_TIMEOUT - 1 + WS_TICK_MS);

    /* 24.8 days on: the epoch moves, a (long due) becomes tick 0, c keeps its time. */
    uint64_t c_at = ws_timer_deadline(&c);
    uint64_t later = s->tick_epoch + (uint64_t)WS_REBASE_TICKS * WS_TICK_MS + 8;
    ws_timer_rebase(s, later - 1000);             /* not yet */
    assert_int_equal(ws_timer_deadline(&c), c_at);
    uint64_t epoch = s->tick_epoch;
    c.deadline += WS_REBASE_TICKS - 1000;         /* as if set just before `later` */
    c_at = ws_timer_deadline(&c);
    ws_timer_rebase(s, later);
    assert_true(s->tick_epoch > epoch && s->tick_epoch <= later);
    assert_int_equal(a.deadline, 0);
    assert_int_equal(ws_timer_deadline(&b), UINT64_MAX);
    assert_int_equal(ws_timer_deadline(&c), c_at);

    ws_timer_set(&a, WS_TL_NONE, 0);
    ws_timer_set(&b, WS_TL_NONE, 0);
    ws_timer_set(&c, WS_TL_NONE, 0);
    uv_close((uv_handle_t *)&s->timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha1_vectors),
        cmocka_unit_test(test_sha1_padding_boundaries),
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_accept_key_too_long),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_header_tokens),
        cmocka_unit_test(test_frame_header_lengths),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_deadline_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
