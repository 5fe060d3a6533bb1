/* tests/test_middleware.c - the built-in middleware: origin check and auth.
 *
 * Each case opens a connection with the communicator and looks at the handshake
 * status (101 accepted, 403/400/... rejected) and at the user the consumer saw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cchannels/cchannels.h"

#include "alloc_fixture.h"

#define H(n, v) {(n), sizeof(n) - 1, (v), sizeof(v) - 1}

/* ---- the consumer: accepts and records the user it saw ------------------------ */

static int connects;
static int64_t seen_user;
static char seen_name[64];

static int rec_connect(cch_conn *c) {
    connects++;
    seen_user = cch_user_id(c);
    snprintf(seen_name, sizeof seen_name, "%s", cch_scope_user_name(cch_conn_scope(c)));
    return cch_accept(c, NULL);
}

static const cch_consumer_class recorder = {.connect = rec_connect};

static cch_app *new_app(void) {
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/", &recorder, NULL), 0);
    return app;
}

/* Connects to `path` with the headers; returns the handshake status. */
static int run(cch_app *app, const char *path, const cch_header *h, size_t n) {
    connects = 0;
    seen_user = 0;
    seen_name[0] = '\0';
    cch_communicator *t = cch_communicator_new(app, path, h, n);
    assert_non_null(t);
    int rc = cch_communicator_connect(t);
    int status = cch_communicator_status(t);
    if (status == 101) {
        assert_int_equal(rc, 0);
        assert_int_equal(connects, 1);
    } else {
        assert_int_equal(rc, CCH_EREJECTED);
        assert_int_equal(connects, 0); /* middleware rejects before connect */
    }
    cch_communicator_free(t);
    return status;
}

/* ---- origin check ------------------------------------------------------------- */

/* Status of a connection with Origin `origin` (NULL: no header) against `rules`. */
static int origin_status(const char *const *rules, size_t n, const char *origin) {
    cch_app *app = new_app();
    assert_int_equal(cch_app_use_origin_check(app, rules, n), 0);
    int status;
    if (origin) {
        cch_header h = {"Origin", 6, origin, strlen(origin)};
        status = run(app, "/ws/", &h, 1);
    } else {
        status = run(app, "/ws/", NULL, 0);
    }
    assert_int_equal(cch_app_free(app), 0);
    return status;
}

#define ALLOWS(rules, origin) \
    assert_int_equal(origin_status(rules, sizeof(rules) / sizeof *(rules), origin), 101)
#define REFUSES(rules, origin) \
    assert_int_equal(origin_status(rules, sizeof(rules) / sizeof *(rules), origin), 403)

static void origin_star_allows_anything(void **state) {
    (void)state;
    static const char *const rules[] = {"*"};
    ALLOWS(rules, "http://example.com");
    ALLOWS(rules, NULL);
    ALLOWS(rules, "null");
    ALLOWS(rules, "garbage");
    ALLOWS(rules, "");
}

static void origin_exact_host(void **state) {
    (void)state;
    static const char *const rules[] = {"example.com"};
    ALLOWS(rules, "http://example.com");
    ALLOWS(rules, "https://example.com");
    ALLOWS(rules, "https://EXAMPLE.Com:8443");   /* case-insensitive, any port */
    ALLOWS(rules, "http://example.com/");        /* a trailing slash is tolerated */
    REFUSES(rules, "http://sub.example.com");    /* no subdomains */
    REFUSES(rules, "http://example.org");
    REFUSES(rules, "http://notexample.com");
    REFUSES(rules, "http://example.com.evil.org");
    REFUSES(rules, "http://example.co");
}

static void origin_case_insensitive_rule(void **state) {
    (void)state;
    static const char *const rules[] = {"Example.COM"};
    ALLOWS(rules, "http://example.com");
    ALLOWS(rules, "HTTP://EXAMPLE.COM");
}

static void origin_domain_and_subdomains(void **state) {
    (void)state;
    static const char *const rules[] = {".example.com"};
    ALLOWS(rules, "http://example.com");
    ALLOWS(rules, "http://www.example.com");
    ALLOWS(rules, "https://a.b.EXAMPLE.com:9000");
    REFUSES(rules, "http://badexample.com");     /* a suffix, not a subdomain */
    REFUSES(rules, "http://example.com.evil.org");
    REFUSES(rules, "http://xample.com");
    REFUSES(rules, "http://com");
}

static void origin_host_and_port(void **state) {
    (void)state;
    static const char *const rules[] = {"example.com:8000"};
    ALLOWS(rules, "http://example.com:8000");
    REFUSES(rules, "http://example.com");        /* port 80 */
    REFUSES(rules, "http://example.com:8001");
    REFUSES(rules, "http://other.com:8000");
    REFUSES(rules, "http://sub.example.com:8000");

    static const char *const http[] = {"example.com:80"};
    ALLOWS(http, "http://example.com");          /* the scheme's default port */
    ALLOWS(http, "ws://example.com");
    ALLOWS(http, "http://example.com:80");
    REFUSES(http, "https://example.com");        /* 443 */

    static const char *const https[] = {"example.com:443"};
    ALLOWS(https, "https://example.com");
    ALLOWS(https, "wss://example.com");
    REFUSES(https, "http://example.com");

    static const char *const dom[] = {".example.com:8000"};
    ALLOWS(dom, "http://a.example.com:8000");
    REFUSES(dom, "http://a.example.com:8001");
}

static void origin_ipv6(void **state) {
    (void)state;
    static const char *const any_port[] = {"[::1]"};
    ALLOWS(any_port, "http://[::1]");
    ALLOWS(any_port, "http://[::1]:8000");
    REFUSES(any_port, "http://[::2]:8000");
    REFUSES(any_port, "http://127.0.0.1:8000");
    REFUSES(any_port, "http://[::1:8000");       /* unbalanced bracket */
    REFUSES(any_port, "http://[::1]x");          /* junk after the bracket */

    static const char *const port[] = {"[::1]:8000"};
    ALLOWS(port, "http://[::1]:8000");
    REFUSES(port, "http://[::1]:9000");
    REFUSES(port, "http://[::1]");

    static const char *const v6[] = {"[2001:DB8::1]"};
    ALLOWS(v6, "https://[2001:db8::1]");
    REFUSES(v6, "https://[zz::1]");              /* not hex */

    static const char *const v4[] = {"127.0.0.1:8000"};
    ALLOWS(v4, "http://127.0.0.1:8000");
    REFUSES(v4, "http://127.0.0.1:8001");
}

static void origin_with_scheme_rule(void **state) {
    (void)state;
    static const char *const rules[] = {"https://secure.example.com"};
    ALLOWS(rules, "https://secure.example.com");
    ALLOWS(rules, "HTTPS://secure.example.com:8443");
    REFUSES(rules, "http://secure.example.com");
}

static void origin_several_rules(void **state) {
    (void)state;
    static const char *const rules[] = {"a.com", ".b.org", "c.net:81"};
    ALLOWS(rules, "http://a.com");
    ALLOWS(rules, "http://x.b.org");
    ALLOWS(rules, "http://c.net:81");
    REFUSES(rules, "http://c.net");
    REFUSES(rules, "http://d.com");
}

static void origin_rejects_missing_null_and_unparsable(void **state) {
    (void)state;
    static const char *const rules[] = {"example.com"};
    REFUSES(rules, NULL);
    REFUSES(rules, "null");
    REFUSES(rules, "");
    REFUSES(rules, "example.com");               /* no scheme */
    REFUSES(rules, "://example.com");
    REFUSES(rules, "http//example.com");
    REFUSES(rules, "http://");
    REFUSES(rules, "http://:80");
    REFUSES(rules, "http://user@example.com");
    REFUSES(rules, "http://example.com:");
    REFUSES(rules, "http://example.com:99999");
    REFUSES(rules, "http://example.com:123456");
    REFUSES(rules, "http://example.com:8a");
    REFUSES(rules, "http://exa mple.com");
    REFUSES(rules, "http://example.com/path");
    REFUSES(rules, "http://example.com?q");
    REFUSES(rules, "1http://example.com");
}

static void origin_empty_list_rejects_everything(void **state) {
    (void)state;
    cch_app *app = new_app();
    assert_int_equal(cch_app_use_origin_check(app, NULL, 0), 0);
    cch_header h = H("Origin", "http://example.com");
    assert_int_equal(run(app, "/ws/", &h, 1), 403);
    assert_int_equal(cch_app_free(app), 0);
}

static void origin_header_name_is_case_insensitive(void **state) {
    (void)state;
    cch_app *app = new_app();
    static const char *const rules[] = {"example.com"};
    assert_int_equal(cch_app_use_origin_check(app, rules, 1), 0);
    cch_header h = H("origin", "http://example.com");
    assert_int_equal(run(app, "/ws/", &h, 1), 101);
    cch_header bad = H("ORIGIN", "http://evil.com");
    assert_int_equal(run(app, "/ws/", &bad, 1), 403);
    assert_int_equal(cch_app_free(app), 0);
}

static void origin_runs_before_routing(void **state) {
    (void)state;
    cch_app *app = new_app();
    static const char *const rules[] = {"example.com"};
    assert_int_equal(cch_app_use_origin_check(app, rules, 1), 0);
    cch_header bad = H("Origin", "http://evil.com");
    assert_int_equal(run(app, "/nowhere/", &bad, 1), 403);
    cch_header good = H("Origin", "http://example.com");
    assert_int_equal(run(app, "/nowhere/", &good, 1), 404);
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_rejected, 2);
    assert_int_equal(cch_app_free(app), 0);
}

static void origin_invalid_arguments(void **state) {
    (void)state;
    cch_app *app = new_app();
    static const char *const ok[] = {"example.com"};
    assert_int_equal(cch_app_use_origin_check(NULL, ok, 1), CCH_EINVAL);
    assert_int_equal(cch_app_use_origin_check(app, NULL, 1), CCH_EINVAL);
    static const char *const with_null[] = {"example.com", NULL};
    assert_int_equal(cch_app_use_origin_check(app, with_null, 2), CCH_EINVAL);
    static const char *const with_empty[] = {"example.com", ""};
    assert_int_equal(cch_app_use_origin_check(app, with_empty, 2), CCH_EINVAL);
    static const char *const malformed[] = {"[::1", "ex ample.com", "a.com:port",
                                            "a.com:70000", "://a.com", ".[::1]", "."};
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++)
        assert_int_equal(cch_app_use_origin_check(app, &malformed[i], 1), CCH_EINVAL);
    /* Nothing was installed by the failed calls: any origin still connects. */
    cch_header h = H("Origin", "http://anything.org");
    assert_int_equal(run(app, "/ws/", &h, 1), 101);
    assert_int_equal(cch_app_free(app), 0);
}

static void origin_out_of_memory(void **state) {
    (void)state;
    static const char *const rules[] = {"a.com", ".b.org", "c.net:81"};
    cch_header h = H("Origin", "http://x.com");
    bool succeeded = false;
    for (long n = 0; n < 100 && !succeeded; n++) {
        cch_app *app = new_app();
        fail_after(n);
        int rc = cch_app_use_origin_check(app, rules, 3);
        alloc_restore();
        if (rc == 0) {
            succeeded = true;
            assert_true(n > 0);
            assert_int_equal(run(app, "/ws/", &h, 1), 403);  /* installed */
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
            assert_int_equal(run(app, "/ws/", &h, 1), 101);  /* nothing installed */
        }
        assert_int_equal(cch_app_free(app), 0);
    }
    assert_true(succeeded);
}

/* ---- auth --------------------------------------------------------------------- */

static int resolve_ud;
static int resolves;
static char last_token[8192];
static size_t last_len;

static void free_data(void *p) { free(p); }

static int resolve(cch_scope *s, const char *tok, size_t len, void *ud) {
    assert_ptr_equal(ud, &resolve_ud);
    assert_true(len < sizeof last_token);
    assert_int_equal(tok[len], '\0');
    resolves++;
    memcpy(last_token, tok, len + 1);
    last_len = len;
    if (strcmp(tok, "alice") == 0) return cch_scope_set_user(s, 1, "alice", NULL, NULL);
    if (strcmp(tok, "bob") == 0) {
        char *data = strdup("bob's data");
        assert_non_null(data);
        return cch_scope_set_user(s, 2, "bob", data, free_data);
    }
    if (strcmp(tok, "deny") == 0) return 401;
    if (strcmp(tok, "gone") == 0) return 599;
    if (strcmp(tok, "fail") == 0) return CCH_EIO;
    if (strcmp(tok, "odd") == 0) return 7;
    if (strcmp(tok, "low") == 0) return 399;
    if (strcmp(tok, "anon") == 0) return 0;
    return cch_scope_set_user(s, 99, "other", NULL, NULL);
}

static cch_app *auth_app(const char *cookie, const char *header, const char *query,
                         bool required, size_t token_max) {
    cch_app *app = new_app();
    cch_auth_options o = {
        .cookie = cookie,
        .header = header,
        .query_param = query,
        .resolve = resolve,
        .ud = &resolve_ud,
        .required = required,
        .token_max = token_max,
    };
    assert_int_equal(cch_app_use_auth(app, &o), 0);
    resolves = 0;
    last_token[0] = '\0';
    return app;
}

static void auth_from_cookie(void **state) {
    (void)state;
    cch_app *app = auth_app("sessionid", NULL, NULL, false, 0);
    cch_header h = H("Cookie", "theme=dark; sessionid=alice; x=y");
    assert_int_equal(run(app, "/ws/", &h, 1), 101);
    assert_int_equal(resolves, 1);
    assert_string_equal(last_token, "alice");
    assert_int_equal(last_len, 5);
    assert_int_equal(seen_user, 1);
    assert_string_equal(seen_name, "alice");
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_from_header(void **state) {
    (void)state;
    cch_app *app = auth_app(NULL, "Authorization", NULL, false, 0);
    cch_header bearer = H("Authorization", "Bearer bob");
    assert_int_equal(run(app, "/ws/", &bearer, 1), 101);
    assert_string_equal(last_token, "bob");
    assert_int_equal(seen_user, 2);
    assert_string_equal(seen_name, "bob");

    cch_header lower = H("authorization", "bearer   alice  ");  /* case, spaces */
    assert_int_equal(run(app, "/ws/", &lower, 1), 101);
    assert_string_equal(last_token, "alice");
    assert_int_equal(last_len, 5);
    assert_int_equal(seen_user, 1);

    cch_header plain = H("Authorization", "alice");               /* no scheme */
    assert_int_equal(run(app, "/ws/", &plain, 1), 101);
    assert_string_equal(last_token, "alice");

    cch_header other = H("Authorization", "Token xyz");           /* kept as is */
    assert_int_equal(run(app, "/ws/", &other, 1), 101);
    assert_string_equal(last_token, "Token xyz");
    assert_int_equal(seen_user, 99);

    resolves = 0;
    cch_header empty = H("Authorization", "Bearer ");             /* no token */
    assert_int_equal(run(app, "/ws/", &empty, 1), 101);
    cch_header bare = H("Authorization", "bearer");
    assert_int_equal(run(app, "/ws/", &bare, 1), 101);
    assert_int_equal(resolves, 0);
    assert_int_equal(seen_user, CCH_USER_ANONYMOUS);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_from_query(void **state) {
    (void)state;
    cch_app *app = auth_app(NULL, NULL, "token", false, 0);
    assert_int_equal(run(app, "/ws/?room=1&token=alice", NULL, 0), 101);
    assert_string_equal(last_token, "alice");
    assert_int_equal(seen_user, 1);
    assert_int_equal(run(app, "/ws/?token=b%6Fb", NULL, 0), 101);   /* decoded */
    assert_string_equal(last_token, "bob");
    assert_int_equal(seen_user, 2);
    assert_int_equal(run(app, "/ws/?token=a+b", NULL, 0), 101);
    assert_string_equal(last_token, "a b");
    resolves = 0;
    assert_int_equal(run(app, "/ws/?tok=alice", NULL, 0), 101);
    assert_int_equal(resolves, 0);
    assert_int_equal(seen_user, CCH_USER_ANONYMOUS);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_precedence(void **state) {
    (void)state;
    cch_app *app = auth_app("sessionid", "Authorization", "token", false, 0);
    cch_header both[] = {H("Authorization", "Bearer bob"), H("Cookie", "sessionid=alice")};
    /* cookie first */
    assert_int_equal(run(app, "/ws/?token=deny", both, 2), 101);
    assert_int_equal(resolves, 1);
    assert_int_equal(seen_user, 1);
    /* then the header */
    resolves = 0;
    assert_int_equal(run(app, "/ws/?token=deny", both, 1), 101);
    assert_int_equal(resolves, 1);
    assert_int_equal(seen_user, 2);
    /* then the query */
    resolves = 0;
    assert_int_equal(run(app, "/ws/?token=alice", NULL, 0), 101);
    assert_int_equal(seen_user, 1);
    /* an empty value is not "present": the next source is used */
    cch_header empty_cookie[] = {H("Cookie", "sessionid="), H("Authorization", "Bearer bob")};
    assert_int_equal(run(app, "/ws/", empty_cookie, 2), 101);
    assert_int_equal(seen_user, 2);
    /* a cookie of another name does not count */
    cch_header other_cookie = H("Cookie", "session=alice");
    assert_int_equal(run(app, "/ws/?token=bob", &other_cookie, 1), 101);
    assert_int_equal(seen_user, 2);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_required(void **state) {
    (void)state;
    cch_app *app = auth_app(NULL, NULL, "token", true, 0);
    resolves = 0;
    assert_int_equal(run(app, "/ws/", NULL, 0), 403);           /* no token */
    assert_int_equal(resolves, 0);
    assert_int_equal(run(app, "/ws/?token=anon", NULL, 0), 403); /* resolve set no user */
    assert_int_equal(resolves, 1);
    assert_int_equal(run(app, "/ws/?token=alice", NULL, 0), 101);
    assert_int_equal(seen_user, 1);
    assert_int_equal(cch_app_free(app), 0);

    app = auth_app(NULL, NULL, "token", false, 0);
    assert_int_equal(run(app, "/ws/?token=anon", NULL, 0), 101); /* anonymous is fine */
    assert_int_equal(seen_user, CCH_USER_ANONYMOUS);
    assert_string_equal(seen_name, "");
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_resolve_rejects(void **state) {
    (void)state;
    cch_app *app = auth_app(NULL, NULL, "token", false, 0);
    assert_int_equal(run(app, "/ws/?token=deny", NULL, 0), 401);
    assert_int_equal(run(app, "/ws/?token=gone", NULL, 0), 599);
    assert_int_equal(run(app, "/ws/?token=fail", NULL, 0), 500);  /* negative code */
    assert_int_equal(run(app, "/ws/?token=odd", NULL, 0), 500);   /* not a status */
    assert_int_equal(run(app, "/ws/?token=low", NULL, 0), 500);
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_rejected, 5);
    assert_int_equal(st.connections_accepted, 0);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_token_too_long(void **state) {
    (void)state;
    cch_app *app = auth_app("sid", "X-Token", "token", false, 5);
    assert_int_equal(run(app, "/ws/?token=abcde", NULL, 0), 101);  /* exactly 5 */
    assert_string_equal(last_token, "abcde");
    resolves = 0;
    assert_int_equal(run(app, "/ws/?token=abcdef", NULL, 0), 400);
    cch_header h = H("X-Token", "abcdef");
    assert_int_equal(run(app, "/ws/", &h, 1), 400);
    cch_header c = H("Cookie", "sid=abcdef");
    assert_int_equal(run(app, "/ws/", &c, 1), 400);
    assert_int_equal(resolves, 0);  /* never resolved */
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_long_tokens(void **state) {
    (void)state;
    /* Longer than the middleware's stack buffer, within the default limit. */
    cch_app *app = auth_app(NULL, "X-Token", "token", false, 0);
    static char tok[CCH_AUTH_DEFAULT_TOKEN_MAX + 2];
    memset(tok, 'q', CCH_AUTH_DEFAULT_TOKEN_MAX);
    tok[CCH_AUTH_DEFAULT_TOKEN_MAX] = '\0';
    cch_header h = {"X-Token", 7, tok, CCH_AUTH_DEFAULT_TOKEN_MAX};
    assert_int_equal(run(app, "/ws/", &h, 1), 101);
    assert_int_equal(last_len, CCH_AUTH_DEFAULT_TOKEN_MAX);
    assert_int_equal(seen_user, 99);

    h.value_len = 300;
    assert_int_equal(run(app, "/ws/", &h, 1), 101);
    assert_int_equal(last_len, 300);

    static char path[CCH_AUTH_DEFAULT_TOKEN_MAX + 64];
    snprintf(path, sizeof path, "/ws/?token=%.*s", 1000, tok);
    assert_int_equal(run(app, path, NULL, 0), 101);
    assert_int_equal(last_len, 1000);

    tok[CCH_AUTH_DEFAULT_TOKEN_MAX] = 'q';
    h.value_len = CCH_AUTH_DEFAULT_TOKEN_MAX + 1;
    resolves = 0;
    assert_int_equal(run(app, "/ws/", &h, 1), 400);
    assert_int_equal(resolves, 0);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_user_data_is_freed(void **state) {
    (void)state;
    /* bob's user data is owned by the scope and freed with the connection (the
     * leak checker would report it otherwise). */
    cch_app *app = auth_app(NULL, NULL, "token", false, 0);
    assert_int_equal(run(app, "/ws/?token=bob", NULL, 0), 101);
    assert_int_equal(seen_user, 2);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_after_origin_check(void **state) {
    (void)state;
    cch_app *app = new_app();
    static const char *const rules[] = {"example.com"};
    assert_int_equal(cch_app_use_origin_check(app, rules, 1), 0);
    cch_auth_options o = {.query_param = "token", .resolve = resolve, .ud = &resolve_ud};
    assert_int_equal(cch_app_use_auth(app, &o), 0);
    resolves = 0;
    cch_header bad = H("Origin", "http://evil.com");
    assert_int_equal(run(app, "/ws/?token=alice", &bad, 1), 403);
    assert_int_equal(resolves, 0);  /* the chain stopped at the origin check */
    cch_header good = H("Origin", "http://example.com");
    assert_int_equal(run(app, "/ws/?token=alice", &good, 1), 101);
    assert_int_equal(resolves, 1);
    assert_int_equal(seen_user, 1);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_invalid_arguments(void **state) {
    (void)state;
    cch_app *app = new_app();
    cch_auth_options o = {.query_param = "token", .resolve = resolve};
    assert_int_equal(cch_app_use_auth(NULL, &o), CCH_EINVAL);
    assert_int_equal(cch_app_use_auth(app, NULL), CCH_EINVAL);
    cch_auth_options no_resolve = {.query_param = "token"};
    assert_int_equal(cch_app_use_auth(app, &no_resolve), CCH_EINVAL);
    cch_auth_options no_source = {.resolve = resolve};
    assert_int_equal(cch_app_use_auth(app, &no_source), CCH_EINVAL);
    cch_auth_options empty_sources = {.cookie = "", .header = "", .query_param = "",
                                      .resolve = resolve};
    assert_int_equal(cch_app_use_auth(app, &empty_sources), CCH_EINVAL);
    cch_auth_options huge = {.query_param = "token", .resolve = resolve,
                             .token_max = SIZE_MAX};
    assert_int_equal(cch_app_use_auth(app, &huge), CCH_EINVAL);
    /* Nothing installed. */
    resolves = 0;
    assert_int_equal(run(app, "/ws/?token=deny", NULL, 0), 101);
    assert_int_equal(resolves, 0);
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_options_are_copied(void **state) {
    (void)state;
    cch_app *app = new_app();
    char cookie[] = "sid", header[] = "X-Token", query[] = "token";
    cch_auth_options o = {.cookie = cookie, .header = header, .query_param = query,
                          .resolve = resolve, .ud = &resolve_ud, .required = true};
    assert_int_equal(cch_app_use_auth(app, &o), 0);
    memset(cookie, 'z', 3);
    memset(header, 'z', 7);
    memset(query, 'z', 5);
    memset(&o, 0, sizeof o);
    assert_int_equal(run(app, "/ws/?token=alice", NULL, 0), 101);
    assert_int_equal(seen_user, 1);
    assert_int_equal(run(app, "/ws/", NULL, 0), 403);  /* still required */
    assert_int_equal(cch_app_free(app), 0);
}

static void auth_out_of_memory(void **state) {
    (void)state;
    cch_auth_options o = {.cookie = "sid", .header = "X-Token", .query_param = "token",
                          .resolve = resolve, .ud = &resolve_ud};
    bool succeeded = false;
    for (long n = 0; n < 100 && !succeeded; n++) {
        cch_app *app = new_app();
        fail_after(n);
        int rc = cch_app_use_auth(app, &o);
        alloc_restore();
        resolves = 0;
        if (rc == 0) {
            succeeded = true;
            assert_int_equal(run(app, "/ws/?token=alice", NULL, 0), 101);
            assert_int_equal(resolves, 1);
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
            assert_int_equal(run(app, "/ws/?token=alice", NULL, 0), 101);
            assert_int_equal(resolves, 0);   /* not installed */
        }
        assert_int_equal(cch_app_free(app), 0);
    }
    assert_true(succeeded);

    /* The token buffer for a long token cannot be allocated: the handshake gets 500. */
    cch_app *app = auth_app(NULL, NULL, "token", false, 1000);
    static char path[1100];
    memcpy(path, "/ws/?token=", 11);
    memset(path + 11, 't', 600);
    path[611] = '\0';
    fail_size_of(1001);
    int status = run(app, path, NULL, 0);
    alloc_restore();
    assert_int_equal(status, 500);
    assert_int_equal(resolves, 0);
    assert_int_equal(run(app, path, NULL, 0), 101);
    assert_int_equal(last_len, 600);
    assert_int_equal(cch_app_free(app), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(origin_star_allows_anything),
        cmocka_unit_test(origin_exact_host),
        cmocka_unit_test(origin_case_insensitive_rule),
        cmocka_unit_test(origin_domain_and_subdomains),
        cmocka_unit_test(origin_host_and_port),
        cmocka_unit_test(origin_ipv6),
        cmocka_unit_test(origin_with_scheme_rule),
        cmocka_unit_test(origin_several_rules),
        cmocka_unit_test(origin_rejects_missing_null_and_unparsable),
        cmocka_unit_test(origin_empty_list_rejects_everything),
        cmocka_unit_test(origin_header_name_is_case_insensitive),
        cmocka_unit_test(origin_runs_before_routing),
        cmocka_unit_test(origin_invalid_arguments),
        cmocka_unit_test(origin_out_of_memory),
        cmocka_unit_test(auth_from_cookie),
        cmocka_unit_test(auth_from_header),
        cmocka_unit_test(auth_from_query),
        cmocka_unit_test(auth_precedence),
        cmocka_unit_test(auth_required),
        cmocka_unit_test(auth_resolve_rejects),
        cmocka_unit_test(auth_token_too_long),
        cmocka_unit_test(auth_long_tokens),
        cmocka_unit_test(auth_user_data_is_freed),
        cmocka_unit_test(auth_after_origin_check),
        cmocka_unit_test(auth_invalid_arguments),
        cmocka_unit_test(auth_options_are_copied),
        cmocka_unit_test(auth_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
