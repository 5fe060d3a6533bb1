/* tests/test_scope.c - the scope: path, query parameters, headers (case-insensitive,
 * borrowed only while opening), cookies, subprotocol offers, route parameters, the
 * user and middleware data, with their error and out-of-memory paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "conn_fixture.h"
#include "scope_internal.h"

/* Builds a scope for path_and_query and headers, with no route. */
static void scope_for(cch_scope *s, fx_req *r, const char *pq, const char *const *headers) {
    fx_req_init(r, pq, headers);
    assert_int_equal(cch__scope_init(s, &r->req, NULL, NULL), 0);
}

static void test_path_query_client(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    scope_for(&s, &r, "/ws/chat/a%20b/?x=1&y=2", NULL);
    assert_string_equal(cch_scope_path(&s), "/ws/chat/a%20b/"); /* not decoded */
    assert_string_equal(cch_scope_query_string(&s), "x=1&y=2");
    assert_string_equal(cch_scope_client_host(&s), "127.0.0.1");
    assert_int_equal(cch_scope_client_port(&s), 50000);
    /* The scope keeps its own copies. */
    memset(r.path, 'z', 5);
    memset(r.query, 'z', 3);
    assert_string_equal(cch_scope_path(&s), "/ws/chat/a%20b/");
    assert_string_equal(cch_scope_query_string(&s), "x=1&y=2");
    cch__scope_destroy(&s);

    /* No query, no client. */
    scope_for(&s, &r, "/", NULL);
    r.req.client_host = NULL;
    r.req.client_port = 0;
    cch__scope_destroy(&s);
    assert_int_equal(cch__scope_init(&s, &r.req, NULL, NULL), 0);
    assert_string_equal(cch_scope_query_string(&s), "");
    assert_string_equal(cch_scope_client_host(&s), "");
    assert_int_equal(cch_scope_client_port(&s), 0);
    assert_null(cch_scope_param(&s, "room"));
    assert_null(cch_scope_subprotocol(&s));
    cch__scope_destroy(&s);
    cch__scope_destroy(NULL);
}

static void test_init_invalid(void **state) {
    (void)state;
    cch_scope s;
    cch_request req = {0};
    assert_int_equal(cch__scope_init(NULL, &req, NULL, NULL), CCH_EINVAL);
    assert_int_equal(cch__scope_init(&s, NULL, NULL, NULL), CCH_EINVAL);
    assert_int_equal(cch__scope_init(&s, &req, NULL, NULL), CCH_EINVAL); /* no path */
    req.path = "/";
    req.n_headers = 2; /* headers NULL */
    assert_int_equal(cch__scope_init(&s, &req, NULL, NULL), CCH_EINVAL);
}

/* The buffer in the caller's memory (the connection's allocation): the same scope,
 * its size known beforehand, left alone by destroy (ASan: never freed). */
static void test_init_in_caller_buffer(void **state) {
    (void)state;
    fx_req r;
    fx_req_init(&r, "/ws/chat/a/?x=1", NULL);
    size_t n = cch__scope_buf_size(&r.req, NULL, NULL);
    assert_int_equal(n, strlen("/ws/chat/a/") + strlen("x=1") + strlen("127.0.0.1") + 3);
    char buf[64];
    memset(buf, 'q', sizeof buf);
    cch_scope s;
    assert_int_equal(cch__scope_init_in(&s, &r.req, NULL, NULL, buf), 0);
    assert_ptr_equal(cch_scope_path(&s), buf);
    assert_string_equal(cch_scope_query_string(&s), "x=1");
    assert_string_equal(cch_scope_client_host(&s), "127.0.0.1");
    assert_int_equal(cch_scope_client_port(&s), 50000);
    assert_int_equal(buf[n], 'q'); /* nothing written beyond the size */
    assert_int_equal(cch__scope_end_open(&s, false), 0);
    cch__scope_destroy(&s);
    assert_int_equal(buf[0], '/');
    /* Invalid requests: size 0, and init says why. */
    cch_request req = {0};
    assert_int_equal(cch__scope_buf_size(&req, NULL, NULL), 0);
    assert_int_equal(cch__scope_buf_size(NULL, NULL, NULL), 0);
    assert_int_equal(cch__scope_init_in(&s, &req, NULL, NULL, buf), CCH_EINVAL);
}

static void test_null_scope(void **state) {
    (void)state;
    char buf[8];
    assert_string_equal(cch_scope_path(NULL), "");
    assert_string_equal(cch_scope_query_string(NULL), "");
    assert_int_equal(cch_scope_query(NULL, "a", buf, sizeof buf), CCH_EINVAL);
    assert_null(cch_scope_header(NULL, "host"));
    assert_int_equal(cch_scope_cookie(NULL, "a", buf, sizeof buf), CCH_EINVAL);
    assert_false(cch_scope_offers_subprotocol(NULL, "chat"));
    assert_null(cch_scope_subprotocol(NULL));
    assert_string_equal(cch_scope_client_host(NULL), "");
    assert_int_equal(cch_scope_client_port(NULL), 0);
    assert_null(cch_scope_param(NULL, "a"));
    assert_int_equal(cch_scope_set_user(NULL, 1, "a", NULL, NULL), CCH_EINVAL);
    assert_true(cch_scope_user_id(NULL) == CCH_USER_ANONYMOUS);
    assert_string_equal(cch_scope_user_name(NULL), "");
    assert_null(cch_scope_user_data(NULL));
    assert_false(cch_scope_user_is_authenticated(NULL));
    static int key;
    assert_int_equal(cch_scope_set_data(NULL, &key, NULL, NULL), CCH_EINVAL);
    assert_null(cch_scope_data(NULL, &key));
}

static void test_query_params(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    char buf[32];
    scope_for(&s, &r, "/?a=1&name=J%C3%B6rg+M&a=2&flag&empty=&a%20b=sp&c=x%zz%4", NULL);
    assert_int_equal(cch_scope_query(&s, "a", buf, sizeof buf), 1);
    assert_string_equal(buf, "1"); /* the first one */
    assert_int_equal(cch_scope_query(&s, "name", buf, sizeof buf), 7);
    assert_string_equal(buf, "J\xc3\xb6rg M");
    assert_int_equal(cch_scope_query(&s, "flag", buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    assert_int_equal(cch_scope_query(&s, "empty", buf, sizeof buf), 0);
    assert_int_equal(cch_scope_query(&s, "a b", buf, sizeof buf), 2); /* decoded key */
    assert_string_equal(buf, "sp");
    assert_int_equal(cch_scope_query(&s, "c", buf, sizeof buf), 6);
    assert_string_equal(buf, "x%zz%4"); /* invalid escapes kept */
    assert_int_equal(cch_scope_query(&s, "missing", buf, sizeof buf), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_query(&s, "nam", buf, sizeof buf), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_query(&s, "", buf, sizeof buf), CCH_ENOTFOUND);
    /* Too small: truncated, NUL-terminated prefix. */
    assert_int_equal(cch_scope_query(&s, "name", buf, 4), CCH_ETOOBIG);
    assert_string_equal(buf, "J\xc3\xb6");
    assert_int_equal(cch_scope_query(&s, "a", buf, 1), CCH_ETOOBIG);
    assert_string_equal(buf, "");
    assert_int_equal(cch_scope_query(&s, "a", NULL, 0), CCH_ETOOBIG);
    assert_int_equal(cch_scope_query(&s, "missing", NULL, 0), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_query(&s, "a", NULL, 4), CCH_EINVAL);
    assert_int_equal(cch_scope_query(&s, NULL, buf, sizeof buf), CCH_EINVAL);
    cch__scope_destroy(&s);

    scope_for(&s, &r, "/", NULL);
    assert_int_equal(cch_scope_query(&s, "a", buf, sizeof buf), CCH_ENOTFOUND);
    cch__scope_destroy(&s);
}

static void test_headers(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    const char *h[] = {"Host: example.com", "X-Token: first", "x-token: second",
                       "Empty:", NULL};
    scope_for(&s, &r, "/", h);
    assert_string_equal(cch_scope_header(&s, "host"), "example.com");
    assert_string_equal(cch_scope_header(&s, "HOST"), "example.com");
    assert_string_equal(cch_scope_header(&s, "x-TOKEN"), "first"); /* first when repeated */
    const char *again = cch_scope_header(&s, "X-Token");
    assert_ptr_equal(again, cch_scope_header(&s, "x-token")); /* one copy, kept */
    assert_string_equal(cch_scope_header(&s, "empty"), "");
    assert_null(cch_scope_header(&s, "Origin"));
    assert_null(cch_scope_header(&s, "Hos"));
    assert_null(cch_scope_header(&s, NULL));
    /* After opening, headers are gone. */
    assert_int_equal(cch__scope_end_open(&s, false), 0);
    assert_null(cch_scope_header(&s, "host"));
    cch__scope_destroy(&s);
}

static void test_header_not_nul_terminated(void **state) {
    (void)state;
    cch_scope s;
    const char raw[] = "Authorization: Bearer abcXYZ"; /* one buffer, no NULs inside */
    cch_header hd = {raw, 13, raw + 15, 10};          /* "Bearer abc" */
    cch_request req = {.path = "/", .headers = &hd, .n_headers = 1};
    assert_int_equal(cch__scope_init(&s, &req, NULL, NULL), 0);
    assert_string_equal(cch_scope_header(&s, "authorization"), "Bearer abc");
    cch_header nullv = {"X", 1, NULL, 0};
    req.headers = &nullv;
    cch__scope_destroy(&s);
    assert_int_equal(cch__scope_init(&s, &req, NULL, NULL), 0);
    assert_string_equal(cch_scope_header(&s, "x"), "");
    cch__scope_destroy(&s);
}

static void test_cookies(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    char buf[32];
    const char *h[] = {"Cookie: a=1; sessionid=abc123;theme = dark ; q=\"quoted v\"; bare",
                       "cookie: late=yes; a=2", NULL};
    scope_for(&s, &r, "/", h);
    assert_int_equal(cch_scope_cookie(&s, "sessionid", buf, sizeof buf), 6);
    assert_string_equal(buf, "abc123");
    assert_int_equal(cch_scope_cookie(&s, "a", buf, sizeof buf), 1);
    assert_string_equal(buf, "1"); /* the first */
    assert_int_equal(cch_scope_cookie(&s, "theme", buf, sizeof buf), 4);
    assert_string_equal(buf, "dark");
    assert_int_equal(cch_scope_cookie(&s, "q", buf, sizeof buf), 8);
    assert_string_equal(buf, "quoted v");
    assert_int_equal(cch_scope_cookie(&s, "late", buf, sizeof buf), 3); /* 2nd header */
    assert_string_equal(buf, "yes");
    assert_int_equal(cch_scope_cookie(&s, "bare", buf, sizeof buf), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_cookie(&s, "Sessionid", buf, sizeof buf), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_cookie(&s, "session", buf, sizeof buf), CCH_ENOTFOUND);
    assert_int_equal(cch_scope_cookie(&s, "sessionid", buf, 4), CCH_ETOOBIG);
    assert_string_equal(buf, "abc");
    assert_int_equal(cch_scope_cookie(&s, "sessionid", NULL, 4), CCH_EINVAL);
    assert_int_equal(cch_scope_cookie(&s, NULL, buf, 4), CCH_EINVAL);
    cch__scope_end_open(&s, false);
    assert_int_equal(cch_scope_cookie(&s, "a", buf, sizeof buf), CCH_ENOTFOUND);
    cch__scope_destroy(&s);

    /* No Cookie header at all. */
    scope_for(&s, &r, "/", NULL);
    assert_int_equal(cch_scope_cookie(&s, "a", buf, sizeof buf), CCH_ENOTFOUND);
    cch__scope_destroy(&s);
}

static void test_subprotocol_offers(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    const char *h[] = {"Sec-WebSocket-Protocol: chat, superchat", "Host: x",
                       "sec-websocket-protocol:v2.json ,  , graphql-ws", NULL};
    scope_for(&s, &r, "/", h);
    assert_true(cch_scope_offers_subprotocol(&s, "chat"));
    assert_true(cch_scope_offers_subprotocol(&s, "superchat"));
    assert_true(cch_scope_offers_subprotocol(&s, "v2.json"));
    assert_true(cch_scope_offers_subprotocol(&s, "graphql-ws"));
    assert_false(cch_scope_offers_subprotocol(&s, "cha"));
    assert_false(cch_scope_offers_subprotocol(&s, "Chat")); /* case-sensitive */
    assert_false(cch_scope_offers_subprotocol(&s, "chat, superchat"));
    assert_false(cch_scope_offers_subprotocol(&s, ""));
    assert_false(cch_scope_offers_subprotocol(&s, NULL));
    /* Kept after opening while undecided... */
    assert_int_equal(cch__scope_end_open(&s, true), 0);
    assert_true(cch_scope_offers_subprotocol(&s, "superchat"));
    assert_true(cch_scope_offers_subprotocol(&s, "graphql-ws"));
    assert_false(cch_scope_offers_subprotocol(&s, "x"));
    /* ...until decided. */
    cch__scope_drop_offers(&s);
    assert_false(cch_scope_offers_subprotocol(&s, "chat"));
    assert_int_equal(cch__scope_set_subprotocol(&s, "chat"), 0);
    assert_string_equal(cch_scope_subprotocol(&s), "chat");
    assert_int_equal(cch__scope_set_subprotocol(&s, NULL), 0);
    assert_null(cch_scope_subprotocol(&s));
    cch__scope_destroy(&s);

    /* Not kept when the connection was decided during open. */
    scope_for(&s, &r, "/", h);
    cch__scope_end_open(&s, false);
    assert_false(cch_scope_offers_subprotocol(&s, "chat"));
    cch__scope_destroy(&s);

    /* No offer at all. */
    scope_for(&s, &r, "/", NULL);
    assert_false(cch_scope_offers_subprotocol(&s, "chat"));
    assert_int_equal(cch__scope_end_open(&s, true), 0);
    assert_null(s.u.offers);
    cch__scope_destroy(&s);

    /* Header copies (while opening) and kept offers (after) share one slot: copies
     * made, a drop while opening leaves them, end_open swaps them for the offers, a
     * second end_open keeps the offers (ASan: nothing leaked or freed twice). */
    scope_for(&s, &r, "/", h);
    assert_string_equal(cch_scope_header(&s, "host"), "x");
    assert_non_null(cch_scope_header(&s, "sec-websocket-protocol"));
    cch__scope_drop_offers(&s);
    assert_string_equal(cch_scope_header(&s, "host"), "x");
    assert_int_equal(cch__scope_end_open(&s, true), 0);
    assert_null(cch_scope_header(&s, "host"));
    assert_true(cch_scope_offers_subprotocol(&s, "chat"));
    assert_int_equal(cch__scope_end_open(&s, true), 0);
    assert_true(cch_scope_offers_subprotocol(&s, "chat"));
    cch__scope_destroy(&s);
}

static void test_params(void **state) {
    (void)state;
    cch__route *rt;
    assert_int_equal(cch__route_compile("/ws/{room}/{id:int}/{rest:path}", &rt, NULL, 0), 0);
    fx_req r;
    fx_req_init(&r, "/ws/caf%C3%A9%20%2F1/42/a%2Fb/c?room=other", NULL);
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    assert_true(cch__route_match(rt, r.path, strlen(r.path), sp));
    cch_scope s;
    assert_int_equal(cch__scope_init(&s, &r.req, rt, sp), 0);
    assert_string_equal(cch_scope_param(&s, "room"), "caf\xc3\xa9 /1"); /* decoded */
    assert_string_equal(cch_scope_param(&s, "id"), "42");
    assert_string_equal(cch_scope_param(&s, "rest"), "a/b/c");
    assert_null(cch_scope_param(&s, "ROOM"));
    assert_null(cch_scope_param(&s, "x"));
    assert_null(cch_scope_param(&s, NULL));
    assert_string_equal(cch_scope_path(&s), "/ws/caf%C3%A9%20%2F1/42/a%2Fb/c");
    assert_string_equal(cch_scope_query_string(&s), "room=other");
    cch__scope_destroy(&s);

    /* A span outside the path is refused. */
    cch__route_span bad[CCH__ROUTE_MAX_PARAMS] = {{0, 1000}};
    assert_int_equal(cch__scope_init(&s, &r.req, rt, bad), CCH_EINVAL);
    cch__route_free(rt);
}

static int freed_count;
static void *freed_last;
static void count_free(void *p) {
    freed_count++;
    freed_last = p;
}

static void test_user(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    scope_for(&s, &r, "/", NULL);
    assert_true(cch_scope_user_id(&s) == CCH_USER_ANONYMOUS);
    assert_string_equal(cch_scope_user_name(&s), "");
    assert_null(cch_scope_user_data(&s));
    assert_false(cch_scope_user_is_authenticated(&s));

    static int d1, d2;
    freed_count = 0;
    char name[] = "alice";
    assert_int_equal(cch_scope_set_user(&s, 12, name, &d1, count_free), 0);
    name[0] = 'X'; /* copied */
    assert_int_equal(cch_scope_user_id(&s), 12);
    assert_string_equal(cch_scope_user_name(&s), "alice");
    assert_ptr_equal(cch_scope_user_data(&s), &d1);
    assert_true(cch_scope_user_is_authenticated(&s));
    /* Setting the same data again does not free it. */
    assert_int_equal(cch_scope_set_user(&s, 13, "bob", &d1, count_free), 0);
    assert_int_equal(freed_count, 0);
    /* Replacing frees the old data. */
    assert_int_equal(cch_scope_set_user(&s, 14, NULL, &d2, count_free), 0);
    assert_int_equal(freed_count, 1);
    assert_ptr_equal(freed_last, &d1);
    assert_string_equal(cch_scope_user_name(&s), "");
    /* Back to anonymous. */
    assert_int_equal(cch_scope_set_user(&s, CCH_USER_ANONYMOUS, "", NULL, NULL), 0);
    assert_int_equal(freed_count, 2);
    assert_false(cch_scope_user_is_authenticated(&s));
    assert_int_equal(cch_scope_set_user(&s, 0, "zero", &d1, count_free), 0);
    assert_true(cch_scope_user_is_authenticated(&s)); /* id 0 is a real user */
    cch__scope_destroy(&s);                          /* frees the data */
    assert_int_equal(freed_count, 3);
    assert_ptr_equal(freed_last, &d1);
}

static void test_data_slots(void **state) {
    (void)state;
    cch_scope s;
    fx_req r;
    scope_for(&s, &r, "/", NULL);
    static int k1, k2, k3, v1, v2, v3;
    freed_count = 0;
    assert_null(cch_scope_data(&s, &k1));
    assert_int_equal(cch_scope_set_data(&s, &k1, &v1, count_free), 0);
    assert_int_equal(cch_scope_set_data(&s, &k2, &v2, NULL), 0);
    assert_ptr_equal(cch_scope_data(&s, &k1), &v1);
    assert_ptr_equal(cch_scope_data(&s, &k2), &v2);
    assert_null(cch_scope_data(&s, &k3));
    /* Replace: the old value is freed. */
    assert_int_equal(cch_scope_set_data(&s, &k1, &v3, count_free), 0);
    assert_int_equal(freed_count, 1);
    assert_ptr_equal(freed_last, &v1);
    assert_ptr_equal(cch_scope_data(&s, &k1), &v3);
    /* Same value again: not freed. */
    assert_int_equal(cch_scope_set_data(&s, &k1, &v3, count_free), 0);
    assert_int_equal(freed_count, 1);
    /* NULL removes (and frees). */
    assert_int_equal(cch_scope_set_data(&s, &k1, NULL, NULL), 0);
    assert_int_equal(freed_count, 2);
    assert_null(cch_scope_data(&s, &k1));
    assert_int_equal(cch_scope_set_data(&s, &k3, NULL, NULL), 0); /* absent: no-op */
    assert_int_equal(cch_scope_set_data(&s, NULL, &v1, NULL), CCH_EINVAL);
    assert_null(cch_scope_data(&s, NULL));
    assert_int_equal(cch_scope_set_data(&s, &k3, &v1, count_free), 0);
    cch__scope_destroy(&s); /* frees k3's value; k2 has no free function */
    assert_int_equal(freed_count, 3);
    assert_ptr_equal(freed_last, &v1);
}

static void test_enomem(void **state) {
    (void)state;
    fx_req r;
    const char *h[] = {"Host: a", "Sec-WebSocket-Protocol: chat", NULL};
    fx_req_init(&r, "/x?y=1", h);
    cch_scope s;
    fx_alloc_install();

    alloc_budget = 0;
    assert_int_equal(cch__scope_init(&s, &r.req, NULL, NULL), CCH_ENOMEM);
    assert_int_equal(fx_live, 0);
    alloc_budget = -1;
    assert_int_equal(cch__scope_init(&s, &r.req, NULL, NULL), 0);
    assert_int_equal(fx_allocs, 1); /* path, query, host: one allocation */

    /* A header copy that cannot be made reads as absent. */
    alloc_budget = 0;
    assert_null(cch_scope_header(&s, "host"));
    alloc_budget = -1;
    assert_string_equal(cch_scope_header(&s, "host"), "a");

    static int key, v;
    freed_count = 0;
    alloc_budget = 0;
    assert_int_equal(cch_scope_set_user(&s, 1, "name", &v, count_free), CCH_ENOMEM);
    assert_true(cch_scope_user_id(&s) == CCH_USER_ANONYMOUS);
    assert_null(cch_scope_user_data(&s));
    assert_int_equal(freed_count, 0); /* still the caller's */
    alloc_budget = 0;
    assert_int_equal(cch_scope_set_data(&s, &key, &v, count_free), CCH_ENOMEM);
    assert_null(cch_scope_data(&s, &key));
    assert_int_equal(freed_count, 0);
    alloc_budget = 0;
    assert_int_equal(cch__scope_set_subprotocol(&s, "chat"), CCH_ENOMEM);
    assert_null(cch_scope_subprotocol(&s));
    /* Keeping offers fails: the request is forgotten anyway. */
    alloc_budget = 0;
    assert_int_equal(cch__scope_end_open(&s, true), CCH_ENOMEM);
    assert_null(cch_scope_header(&s, "host"));
    assert_false(cch_scope_offers_subprotocol(&s, "chat"));
    alloc_budget = -1;
    cch__scope_destroy(&s);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

static void test_memory_small(void **state) {
    (void)state;
    /* What a typical scope keeps after opening: one buffer of path + query + host +
     * values, nothing per header. */
    cch__route *rt;
    assert_int_equal(cch__route_compile("/ws/chat/{room}/", &rt, NULL, 0), 0);
    const char *h[] = {"Host: localhost:8000",
                       "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko Firefox",
                       "Cookie: sessionid=0123456789abcdef0123456789abcdef",
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                       "Origin: http://localhost:8000", NULL};
    fx_req r;
    fx_req_init(&r, "/ws/chat/lobby/", h);
    cch__route_span sp[CCH__ROUTE_MAX_PARAMS];
    assert_true(cch__route_match(rt, r.path, strlen(r.path), sp));
    fx_alloc_install();
    cch_scope s;
    assert_int_equal(cch__scope_init(&s, &r.req, rt, sp), 0);
    assert_non_null(cch_scope_header(&s, "origin"));
    cch__scope_end_open(&s, false);
    assert_true(fx_live <= strlen("/ws/chat/lobby/") + 1 + 1 + 10 + 6);
    assert_true(sizeof(cch_scope) <= 128);
    cch__scope_destroy(&s);
    assert_int_equal(fx_live, 0);
    alloc_restore();
    cch__route_free(rt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_query_client), cmocka_unit_test(test_init_invalid),
        cmocka_unit_test(test_init_in_caller_buffer),
        cmocka_unit_test(test_null_scope),        cmocka_unit_test(test_query_params),
        cmocka_unit_test(test_headers),           cmocka_unit_test(test_header_not_nul_terminated),
        cmocka_unit_test(test_cookies),           cmocka_unit_test(test_subprotocol_offers),
        cmocka_unit_test(test_params),            cmocka_unit_test(test_user),
        cmocka_unit_test(test_data_slots),        cmocka_unit_test(test_enomem),
        cmocka_unit_test(test_memory_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
