/* tests/test_route.c - route patterns: compiling (every kind of malformed pattern),
 * matching with each converter, parameter spans, percent-decoding, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "conn_fixture.h"
#include "route.h"

static cch__route *compile_ok(const char *pattern) {
    cch__route *r = NULL;
    char why[160];
    int rc = cch__route_compile(pattern, &r, why, sizeof why);
    if (rc != 0) fail_msg("'%s' refused: %s", pattern, why);
    assert_non_null(r);
    return r;
}

/* Expects EPATTERN with a reason containing `word`. */
static void expect_bad(const char *pattern, const char *word) {
    cch__route *r = (cch__route *)(uintptr_t)1;
    char why[160] = "x";
    int rc = cch__route_compile(pattern, &r, why, sizeof why);
    if (rc != CCH_EPATTERN) fail_msg("'%s' accepted (rc %d)", pattern, rc);
    assert_null(r);
    if (!strstr(why, word)) fail_msg("'%s': reason '%s' lacks '%s'", pattern, why, word);
}

/* Matches `path`; returns the value of parameter i (raw span) in out. */
static bool match(const cch__route *r, const char *path, cch__route_span *spans) {
    return cch__route_match(r, path, strlen(path), spans);
}

static void assert_span(const char *path, cch__route_span s, const char *want) {
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(path + s.off, want, s.len);
}

static void test_compile_simple(void **state) {
    (void)state;
    cch__route *r = compile_ok("/ws/chat/{room}/");
    assert_string_equal(r->pattern, "/ws/chat/{room}/");
    assert_int_equal(r->nparams, 1);
    assert_string_equal(r->names[0], "room");
    assert_null(r->names[1]);
    assert_int_equal(r->nparts, 3);
    assert_int_equal(r->parts[0].kind, CCH__PART_LITERAL);
    assert_int_equal(r->parts[1].kind, CCH__PART_STR);
    assert_int_equal(r->parts[2].kind, CCH__PART_LITERAL);
    cch__route_free(r);

    r = compile_ok("/ws/user/{id:int}/{s:slug}/{rest:path}");
    assert_int_equal(r->nparams, 3);
    assert_string_equal(r->names[0], "id");
    assert_string_equal(r->names[1], "s");
    assert_string_equal(r->names[2], "rest");
    assert_int_equal(r->parts[1].kind, CCH__PART_INT);
    assert_int_equal(r->parts[3].kind, CCH__PART_SLUG);
    assert_int_equal(r->parts[5].kind, CCH__PART_PATH);
    cch__route_free(r);

    r = compile_ok("/");
    assert_int_equal(r->nparams, 0);
    cch__route_free(r);
    r = compile_ok("/u/id-{id:int}");
    assert_int_equal(r->nparams, 1);
    cch__route_free(r);
    r = compile_ok("/{a:str}/{_b9}/");
    assert_int_equal(r->nparams, 2);
    cch__route_free(r);
}

static void test_compile_null(void **state) {
    (void)state;
    cch__route *r;
    char why[32];
    assert_int_equal(cch__route_compile(NULL, &r, why, sizeof why), CCH_EINVAL);
    assert_null(r);
    assert_int_equal(cch__route_compile("/a", NULL, why, sizeof why), CCH_EINVAL);
    /* No reason buffer is fine. */
    assert_int_equal(cch__route_compile("nope", &r, NULL, 0), CCH_EPATTERN);
    assert_int_equal(cch__route_compile("/ok", &r, NULL, 0), 0);
    cch__route_free(r);
    cch__route_free(NULL);
}

static void test_compile_malformed(void **state) {
    (void)state;
    expect_bad("", "start with '/'");
    expect_bad("ws/chat/", "start with '/'");
    expect_bad("{room}/", "start with '/'");
    expect_bad("/ws/{room", "unbalanced '{'");
    expect_bad("/ws/{ro{om}/", "unbalanced '{'");
    expect_bad("/ws/room}/", "unbalanced '}'");
    expect_bad("/ws/{room}}/", "unbalanced '}'");
    expect_bad("/ws/{}/", "empty parameter");
    expect_bad("/ws/{x:foo}/", "unknown converter 'foo'");
    expect_bad("/ws/{x:}/", "unknown converter");
    expect_bad("/ws/{x:INT}/", "unknown converter");
    expect_bad("/ws/{:int}/", "invalid parameter name");
    expect_bad("/ws/{1x}/", "invalid parameter name");
    expect_bad("/ws/{a-b}/", "invalid parameter name");
    expect_bad("/ws/{a b}/", "invalid parameter name");
    expect_bad("/ws/{x}/{x:int}/", "repeated parameter name 'x'");
    expect_bad("/ws/{a}{b}/", "two adjacent parameters");
    expect_bad("/ws/{a}x/", "must end its path segment");
    expect_bad("/ws/{a:int}.json", "must end its path segment");
    expect_bad("/ws/a b/", "invalid character");
    expect_bad("/ws/\tb/", "invalid character");
    expect_bad("/ws/?x=1", "invalid character");
    expect_bad("/ws/#frag", "invalid character");
    /* A name longer than 64 bytes. */
    char longname[100];
    snprintf(longname, sizeof longname, "/{%070d}", 0);
    longname[2] = 'n';
    expect_bad(longname, "invalid parameter name");
}

static void test_compile_limits(void **state) {
    (void)state;
    /* 16 parameters are fine, 17 are not. */
    char p[512] = "";
    for (int i = 0; i < 16; i++) snprintf(p + strlen(p), sizeof p - strlen(p), "/{p%d}", i);
    cch__route *r = compile_ok(p);
    assert_int_equal(r->nparams, 16);
    assert_string_equal(r->names[15], "p15");
    cch__route_free(r);
    snprintf(p + strlen(p), sizeof p - strlen(p), "/{p16}");
    expect_bad(p, "more than 16 parameters");

    /* 1024 bytes are fine, 1025 are not. */
    char big[1100];
    memset(big, 'a', sizeof big);
    big[0] = '/';
    big[1024] = '\0';
    r = compile_ok(big);
    cch__route_free(r);
    big[1024] = 'a';
    big[1025] = '\0';
    expect_bad(big, "longer than 1024");
}

static void test_match_literal(void **state) {
    (void)state;
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    cch__route *r = compile_ok("/ws/lobby/");
    assert_true(match(r, "/ws/lobby/", sp));
    assert_false(match(r, "/ws/lobby", sp));      /* the trailing slash matters */
    assert_false(match(r, "/ws/lobby/x", sp));    /* anchored at the end */
    assert_false(match(r, "/WS/lobby/", sp));     /* case-sensitive */
    assert_false(match(r, "", sp));
    assert_false(cch__route_match(NULL, "/ws/lobby/", 10, sp));
    assert_false(cch__route_match(r, NULL, 0, sp));
    assert_false(cch__route_match(r, "/ws/lobby/", 10, NULL));
    /* Only path_len bytes count. */
    assert_true(cch__route_match(r, "/ws/lobby/extra", 10, sp));
    cch__route_free(r);
}

static void test_match_str(void **state) {
    (void)state;
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    cch__route *r = compile_ok("/ws/chat/{room}/");
    const char *path = "/ws/chat/lobby-1.x/";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "lobby-1.x");
    path = "/ws/chat/a%20b/";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "a%20b"); /* raw: the scope decodes */
    assert_false(match(r, "/ws/chat//", sp));       /* empty */
    assert_false(match(r, "/ws/chat/a/b/", sp));    /* '/' is not in str */
    assert_false(match(r, "/ws/chat/lobby", sp));
    assert_false(match(r, "/ws/chat/a%00b/", sp));  /* would decode to a NUL */
    assert_true(match(r, "/ws/chat/a%2500/", sp));  /* "%25" then "00": fine */
    cch__route_free(r);
}

static void test_match_int_slug(void **state) {
    (void)state;
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    cch__route *r = compile_ok("/ws/user/{id:int}/");
    const char *path = "/ws/user/0042/";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "0042");
    assert_false(match(r, "/ws/user/4a/", sp));
    assert_false(match(r, "/ws/user/-4/", sp));
    assert_false(match(r, "/ws/user//", sp));
    assert_false(match(r, "/ws/user/%34/", sp));
    cch__route_free(r);

    r = compile_ok("/s/{s:slug}");
    assert_true(match(r, "/s/Ab_9-x", sp));
    assert_false(match(r, "/s/a.b", sp));
    assert_false(match(r, "/s/a%20b", sp));
    assert_false(match(r, "/s/", sp));
    cch__route_free(r);

    /* A parameter at the end of a segment after a literal prefix. */
    r = compile_ok("/u/id-{id:int}");
    path = "/u/id-7";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "7");
    assert_false(match(r, "/u/id-", sp));
    assert_false(match(r, "/u/xd-7", sp));
    cch__route_free(r);
}

static void test_match_path(void **state) {
    (void)state;
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    cch__route *r = compile_ok("/f/{p:path}");
    const char *path = "/f/a/b/c.txt";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "a/b/c.txt");
    assert_false(match(r, "/f/", sp));
    cch__route_free(r);

    /* A path parameter followed by more pattern takes the longest fit. */
    r = compile_ok("/f/{p:path}/edit/{n:int}");
    path = "/f/a/edit/b/edit/3";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "a/edit/b");
    assert_span(path, sp[1], "3");
    path = "/f/x/edit/3";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "x");
    assert_false(match(r, "/f/edit/3", sp));
    assert_false(match(r, "/f/a/edit/x", sp));
    cch__route_free(r);

    /* Several path parameters on an absurd path: bounded work, no match. */
    r = compile_ok("/{a:path}/{b:path}/{c:path}/{d:path}/z");
    char many[4000];
    memset(many, '/', sizeof many - 1);
    many[sizeof many - 1] = '\0';
    many[1] = 'q';
    assert_false(match(r, many, sp));
    path = "/1/2/3/4/z";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "1");
    assert_span(path, sp[3], "4");
    cch__route_free(r);
}

static void test_match_many_params(void **state) {
    (void)state;
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    cch__route *r = compile_ok("/ws/{a}/{b:int}/x/{c:slug}/");
    const char *path = "/ws/one/22/x/three/";
    assert_true(match(r, path, sp));
    assert_span(path, sp[0], "one");
    assert_span(path, sp[1], "22");
    assert_span(path, sp[2], "three");
    assert_false(match(r, "/ws/one/22/y/three/", sp));
    cch__route_free(r);
}

static void test_pct_decode(void **state) {
    (void)state;
    char out[64];
    const char *in = "%41%2fb+c%7E";
    size_t n = cch__pct_decode(out, in, strlen(in), false);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "A/b+c~", 6);
    n = cch__pct_decode(out, in, strlen(in), true);
    assert_memory_equal(out, "A/b c~", 6);
    /* Invalid or cut escapes stay as they are. */
    in = "%zz%4";
    n = cch__pct_decode(out, in, strlen(in), false);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "%zz%4", 5);
    in = "100%";
    n = cch__pct_decode(out, in, strlen(in), false);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "100%", 4);
    /* In place. */
    char buf[] = "a%20b";
    n = cch__pct_decode(buf, buf, 5, false);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "a b", 3);
    assert_int_equal(cch__pct_decode(out, "", 0, true), 0);
    assert_int_equal(cch__hexval('f'), 15);
    assert_int_equal(cch__hexval('F'), 15);
    assert_int_equal(cch__hexval('g'), -1);
}

static void test_compile_enomem(void **state) {
    (void)state;
    fx_alloc_install();
    alloc_budget = 0;
    cch__route *r = (cch__route *)(uintptr_t)1;
    assert_int_equal(cch__route_compile("/ws/{room}/", &r, NULL, 0), CCH_ENOMEM);
    assert_null(r);
    assert_int_equal(fx_live, 0);
    alloc_budget = -1;
    assert_int_equal(cch__route_compile("/ws/{room}/", &r, NULL, 0), 0);
    assert_int_equal(fx_allocs, 1); /* one allocation per compiled pattern */
    cch__route_free(r);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_simple),  cmocka_unit_test(test_compile_null),
        cmocka_unit_test(test_compile_malformed), cmocka_unit_test(test_compile_limits),
        cmocka_unit_test(test_match_literal),   cmocka_unit_test(test_match_str),
        cmocka_unit_test(test_match_int_slug),  cmocka_unit_test(test_match_path),
        cmocka_unit_test(test_match_many_params), cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_compile_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
