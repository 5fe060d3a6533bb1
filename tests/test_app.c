/* tests/test_app.c - the app: life cycle, routes (first match wins, malformed
 * patterns and handler tables), the middleware chain, dispatch by type ('.' == '_',
 * default handler, built-ins, unknown types), handlers seeing their own scope, the
 * (route, message) lookup cache (also with more messages in a batch than it has slots,
 * and the references it drops for them), connections ending mid-batch, wakeup from
 * another thread, a 10 000 member fanout without allocation, and ENOMEM paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "app_internal.h"
#include "msg_internal.h"
#include "conn_fixture.h"

/* ---- recorders ----------------------------------------------------------------------- */

static struct rec {
    char trace[256];  /* what ran, in order */
    int handled_a, handled_b, defaults;
    int connects;
    int64_t connect_user;
    void *connect_data;
    void *receive_data;
    int reentrant_rc;
    char last_type[128];
} rec;

static void trace(const char *what) {
    size_t n = strlen(rec.trace);
    snprintf(rec.trace + n, sizeof rec.trace - n, "%s;", what);
}

static int mw_key; /* a middleware's data key */

static int a_connect(cch_conn *c) {
    rec.connects++;
    trace("connect");
    rec.connect_user = cch_user_id(c);
    rec.connect_data = cch_scope_data(cch_conn_scope(c), &mw_key);
    return cch_accept(c, NULL);
}

static void a_receive(cch_conn *c, const char *data, size_t len, bool binary) {
    (void)data;
    (void)len;
    (void)binary;
    rec.receive_data = cch_scope_data(cch_conn_scope(c), &mw_key);
}

static void h_a(cch_conn *c, const cch_msg *m) {
    (void)c;
    rec.handled_a++;
    snprintf(rec.last_type, sizeof rec.last_type, "%s", cch_msg_type(m));
}

static void h_b(cch_conn *c, const cch_msg *m) {
    (void)c;
    rec.handled_b++;
    snprintf(rec.last_type, sizeof rec.last_type, "%s", cch_msg_type(m));
}

static void h_default(cch_conn *c, const cch_msg *m) {
    (void)c;
    rec.defaults++;
    snprintf(rec.last_type, sizeof rec.last_type, "%s", cch_msg_type(m));
}

static void h_reenter(cch_conn *c, const cch_msg *m) {
    (void)m;
    rec.reentrant_rc = cch_app_dispatch(cch_conn_app(c), 0);
}

/* A's own websocket.send replaces the built-in. */
static void h_own_send(cch_conn *c, const cch_msg *m) {
    (void)m;
    cch_send_text(c, "own", 3);
}

static const cch_consumer_class cls_a = {
    .connect = a_connect,
    .receive = a_receive,
    .handlers = (const cch_handler[]){{"chat_message", h_a},
                                      {"user.join", h_a},
                                      {"chat.message", h_b}, /* same type: first wins */
                                      {"again", h_reenter},
                                      {"websocket.send", h_own_send},
                                      {NULL, NULL}},
};

static const cch_consumer_class cls_b = {
    .handlers = (const cch_handler[]){{"only.b", h_b}, {NULL, NULL}},
    .default_handler = h_default,
};

static const cch_consumer_class cls_plain = {0};

typedef struct fx {
    cch_app *app;
    fx_log log;
} fx;

static int setup(void **state) {
    memset(&rec, 0, sizeof rec);
    fx *f = calloc(1, sizeof *f);
    f->app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(f->app);
    cch_app_set_log(f->app, fx_log_fn, &f->log);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_free(f->app), 0);
    free(f);
    return 0;
}

static cch_conn *open_conn(cch_app *app, fx_tp *t, const char *pq, const char *const *h) {
    fx_req r;
    fx_req_init(&r, pq, h);
    cch_conn *c = NULL;
    assert_int_equal(cch_conn_open(app, &r.req, &fx_transport, t, &c), 0);
    assert_non_null(c);
    return c;
}

static cch_msg *msg(const char *type, const char *body) {
    cch_msg *m = cch_msg_new(type, body, body ? strlen(body) : 0);
    assert_non_null(m);
    return m;
}

static void send_to(cch_conn *c, const char *type, const char *body) {
    cch_msg *m = msg(type, body);
    assert_int_equal(cch_channel_send(c, cch_channel_name(c), m), 0);
    cch_msg_unref(m);
}

/* ---- life cycle ---------------------------------------------------------------------- */

static void test_new_free(void **state) {
    (void)state;
    assert_null(cch_app_new(NULL));
    assert_int_equal(cch_app_free(NULL), CCH_EINVAL);
    assert_null(cch_app_layer(NULL));
    cch_app_set_log(NULL, NULL, NULL);
    cch_app_set_wakeup(NULL, NULL, NULL);
    cch_app_stats st;
    memset(&st, 0xff, sizeof st);
    cch_app_stats_get(NULL, &st);
    assert_int_equal(st.connections_opened, 0);
    assert_int_equal(cch_app_dispatch(NULL, 0), CCH_EINVAL);

    cch_layer *l = cch_memory_layer_new(NULL);
    cch_app *app = cch_app_new(l);
    assert_ptr_equal(cch_app_layer(app), l);
    cch_app_stats_get(app, NULL);
    cch_app_stats_get(app, &st);
    assert_int_equal(st.connections_active, 0);
    assert_int_equal(cch_app_dispatch(app, 0), 0); /* nothing pending */
    assert_int_equal(cch_app_free(app), 0);
}

static void test_new_enomem(void **state) {
    (void)state;
    fx_alloc_install();
    for (long k = 0;; k++) {
        cch_layer *l = cch_memory_layer_new(NULL);
        assert_non_null(l);
        alloc_budget = k;
        cch_app *app = cch_app_new(l); /* takes over the layer reference either way */
        alloc_budget = -1;
        if (app) {
            assert_int_equal(cch_app_free(app), 0);
            assert_int_equal(fx_live, 0);
            assert_true(k >= 1);
            break;
        }
        assert_int_equal(fx_live, 0); /* the layer was dropped too */
        assert_true(k < 20);
    }
    alloc_restore();
}

static void test_free_with_connections(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_route(f->app, "/a/", &cls_plain, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/a/", NULL);
    assert_int_equal(cch_app_free(f->app), CCH_ESTATE);
    cch_conn_disconnected(c, 1000);
    /* Rejected connections count too until the host ends them. */
    c = open_conn(f->app, &t, "/none/", NULL);
    assert_int_equal(cch_app_free(f->app), CCH_ESTATE);
    cch_conn_disconnected(c, 1006);
}

/* ---- routes -------------------------------------------------------------------------- */

static void test_route_errors(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_route(NULL, "/a/", &cls_plain, NULL), CCH_EINVAL);
    assert_int_equal(cch_app_route(f->app, NULL, &cls_plain, NULL), CCH_EINVAL);
    assert_int_equal(cch_app_route(f->app, "/a/", NULL, NULL), CCH_EINVAL);

    assert_int_equal(cch_app_route(f->app, "/ws/{room", &cls_plain, NULL), CCH_EPATTERN);
    assert_int_equal(f->log.level, CCH_LOG_ERROR);
    assert_non_null(strstr(f->log.last, "/ws/{room"));
    assert_non_null(strstr(f->log.last, "unbalanced '{'"));
    assert_int_equal(cch_app_route(f->app, "/ws/{x:float}/", &cls_plain, NULL), CCH_EPATTERN);
    assert_non_null(strstr(f->log.last, "unknown converter 'float'"));

    static const cch_handler empty_type_handlers[] = {{"", h_a}, {NULL, NULL}};
    static const cch_consumer_class empty_type = {
        .handlers = empty_type_handlers};
    assert_int_equal(cch_app_route(f->app, "/e/", &empty_type, NULL), CCH_EINVAL);
    assert_non_null(strstr(f->log.last, "invalid handler type"));
    static char long_type[CCH_MSG_TYPE_MAX + 2];
    memset(long_type, 't', CCH_MSG_TYPE_MAX + 1);
    static const cch_handler long_cls_handlers[] = {{long_type, h_a}, {NULL, NULL}};
    static const cch_consumer_class long_cls = {
        .handlers = long_cls_handlers};
    assert_int_equal(cch_app_route(f->app, "/l/", &long_cls, NULL), CCH_EINVAL);
    static const cch_handler null_fn_handlers[] = {{"ok", h_a}, {"x", NULL}, {NULL, NULL}};
    static const cch_consumer_class null_fn = {
        .handlers = null_fn_handlers};
    assert_int_equal(cch_app_route(f->app, "/n/", &null_fn, NULL), CCH_EINVAL);
    assert_non_null(strstr(f->log.last, "no function"));

    /* None of them was added. */
    const char *paths[] = {"/e/", "/l/", "/n/"};
    for (int i = 0; i < 3; i++) {
        fx_tp t = {0};
        cch_conn *c = open_conn(f->app, &t, paths[i], NULL);
        assert_int_equal(t.reject_status, 404);
        cch_conn_disconnected(c, 1006);
    }
    /* A type of exactly CCH_MSG_TYPE_MAX bytes is fine. */
    long_type[CCH_MSG_TYPE_MAX] = '\0';
    assert_int_equal(cch_app_route(f->app, "/l/", &long_cls, NULL), 0);
}

static void test_route_enomem(void **state) {
    (void)state;
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    size_t base = fx_live;
    for (long k = 0;; k++) {
        alloc_budget = k;
        int rc = cch_app_route(app, "/ws/{room}/", &cls_a, NULL);
        alloc_budget = -1;
        if (rc == 0) break;
        assert_int_equal(rc, CCH_ENOMEM);
        assert_int_equal(fx_live, base);
        assert_true(k < 50);
    }
    fx_tp t = {0};
    cch_conn *c = open_conn(app, &t, "/ws/x/", NULL);
    assert_int_equal(t.accepts, 1);
    cch_conn_disconnected(c, 1000);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

static void test_first_match_wins(void **state) {
    fx *f = *state;
    static int ud1, ud2, ud3;
    assert_int_equal(cch_app_route(f->app, "/ws/{name}/", &cls_a, &ud1), 0);
    assert_int_equal(cch_app_route(f->app, "/ws/lobby/", &cls_b, &ud2), 0);
    assert_int_equal(cch_app_route(f->app, "/ws/{id:int}/x", &cls_b, &ud3), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/ws/lobby/", NULL);
    assert_ptr_equal(cch_class_data(c), &ud1); /* the earlier route */
    assert_string_equal(cch_param(c, "name"), "lobby");
    cch_conn_disconnected(c, 1000);
    c = open_conn(f->app, &t, "/ws/12/x", NULL);
    assert_ptr_equal(cch_class_data(c), &ud3);
    assert_string_equal(cch_param(c, "id"), "12");
    assert_null(cch_param(c, "name"));
    cch_conn_disconnected(c, 1000);
    /* The query string is not matched. */
    c = open_conn(f->app, &t, "/ws/lobby/?x=/y/", NULL);
    assert_ptr_equal(cch_class_data(c), &ud1);
    cch_conn_disconnected(c, 1000);
}

/* ---- middleware ---------------------------------------------------------------------- */

struct mw_cfg {
    const char *name;
    int result;
    int destroyed;
    char seen_host[64];
    char seen_cookie[64];
};

static void free_marker(void *p) { free(p); }

static int mw_process(cch_scope *s, void *ud) {
    struct mw_cfg *cfg = ud;
    trace(cfg->name);
    const char *host = cch_scope_header(s, "HOST");
    snprintf(cfg->seen_host, sizeof cfg->seen_host, "%s", host ? host : "");
    char buf[64];
    if (cch_scope_cookie(s, "uid", buf, sizeof buf) > 0) {
        assert_int_equal(cch_scope_set_user(s, atoi(buf), "user", NULL, NULL), 0);
        snprintf(cfg->seen_cookie, sizeof cfg->seen_cookie, "%s", buf);
        int *data = malloc(sizeof *data);
        *data = 7;
        assert_int_equal(cch_scope_set_data(s, &mw_key, data, free_marker), 0);
    }
    return cfg->result;
}

static void mw_destroy(void *ud) {
    struct mw_cfg *cfg = ud;
    cfg->destroyed++;
}

static const cch_middleware mw = {"test", mw_process, mw_destroy};
static const cch_middleware mw_nodestroy = {NULL, mw_process, NULL};

static void test_middleware_chain(void **state) {
    fx *f = *state;
    static struct mw_cfg one, two;
    memset(&one, 0, sizeof one);
    memset(&two, 0, sizeof two);
    one.name = "one";
    two.name = "two";
    assert_int_equal(cch_app_use(f->app, &mw, &one), 0);
    assert_int_equal(cch_app_use(f->app, &mw_nodestroy, &two), 0);
    assert_int_equal(cch_app_use(NULL, &mw, &one), CCH_EINVAL);
    assert_int_equal(cch_app_use(f->app, NULL, &one), CCH_EINVAL);
    static const cch_middleware noproc = {"x", NULL, NULL};
    assert_int_equal(cch_app_use(f->app, &noproc, NULL), CCH_EINVAL);
    assert_int_equal(cch_app_route(f->app, "/ws/{room}/", &cls_a, NULL), 0);

    fx_tp t = {0};
    const char *h[] = {"Host: example.com", "Cookie: uid=12", NULL};
    cch_conn *c = open_conn(f->app, &t, "/ws/r/", h);
    assert_string_equal(rec.trace, "one;two;connect;");
    assert_string_equal(one.seen_host, "example.com");
    assert_string_equal(one.seen_cookie, "12");
    assert_int_equal(rec.connect_user, 12); /* the user the middleware set */
    assert_int_equal(cch_user_id(c), 12);
    assert_string_equal(cch_scope_user_name(cch_conn_scope(c)), "user");
    assert_non_null(rec.connect_data);
    assert_int_equal(*(int *)rec.connect_data, 7);
    /* Middleware data lives as long as the connection. */
    assert_int_equal(cch_conn_receive(c, "x", 1, false), 0);
    assert_ptr_equal(rec.receive_data, rec.connect_data);
    cch_conn_disconnected(c, 1000); /* frees the data (LeakSanitizer checks) */

    /* Middleware runs before routing: an unrouted path still goes through it. */
    rec.trace[0] = '\0';
    c = open_conn(f->app, &t, "/nowhere/", NULL);
    assert_string_equal(rec.trace, "one;two;");
    assert_int_equal(t.reject_status, 404);
    cch_conn_disconnected(c, 1006);

    assert_int_equal(cch_app_free(f->app), 0);
    f->app = cch_app_new(cch_memory_layer_new(NULL)); /* for teardown */
    assert_int_equal(one.destroyed, 1);
    assert_int_equal(two.destroyed, 0); /* no destroy function */
}

static void test_middleware_reject(void **state) {
    fx *f = *state;
    static struct mw_cfg one, two;
    memset(&one, 0, sizeof one);
    memset(&two, 0, sizeof two);
    one.name = "one";
    two.name = "two";
    assert_int_equal(cch_app_use(f->app, &mw, &one), 0);
    assert_int_equal(cch_app_use(f->app, &mw, &two), 0);
    assert_int_equal(cch_app_route(f->app, "/ws/{room}/", &cls_a, NULL), 0);

    const struct {
        int result;
        int status;
    } cases[] = {{451, 451}, {400, 400}, {599, 599}, {CCH_EIO, 500}, {-1000, 500},
                 {200, 500}, {1, 500},     {600, 500}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec.trace[0] = '\0';
        one.result = cases[i].result;
        fx_tp t = {0};
        cch_conn *c = open_conn(f->app, &t, "/ws/r/", NULL);
        assert_int_equal(t.rejects, 1);
        assert_int_equal(t.reject_status, cases[i].status);
        assert_int_equal(t.accepts, 0);
        assert_string_equal(rec.trace, "one;"); /* the rest of the chain did not run */
        assert_non_null(strstr(f->log.last, "middleware test"));
        cch_conn_disconnected(c, 1006);
    }
    assert_int_equal(rec.connects, 0);
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.connections_rejected, 8);
    assert_int_equal(st.connections_active, 0);

    /* A middleware status wins over 404. */
    one.result = 401;
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/nowhere/", NULL);
    assert_int_equal(t.reject_status, 401);
    cch_conn_disconnected(c, 1006);
}

static void test_use_enomem(void **state) {
    (void)state;
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    static struct mw_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "x";
    alloc_budget = 0;
    assert_int_equal(cch_app_use(app, &mw, &cfg), CCH_ENOMEM);
    alloc_budget = -1;
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(cfg.destroyed, 0); /* ud is still the caller's */
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

/* ---- dispatch ------------------------------------------------------------------------ */

static void test_dispatch_by_type(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_route(f->app, "/a/", &cls_a, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/a/", NULL);
    send_to(c, "chat.message", "{}");
    send_to(c, "chat_message", "{}");
    send_to(c, "user_join", "{}");
    assert_int_equal(cch_app_dispatch(f->app, 0), 3);
    assert_int_equal(rec.handled_a, 3);
    assert_int_equal(rec.handled_b, 0); /* the first entry for a type won */
    assert_string_equal(rec.last_type, "user_join"); /* the handler sees the real type */

    /* An unknown type: logged, counted, dropped; no crash. */
    int logs = f->log.count;
    send_to(c, "no.such.type", "{\"a\":1}");
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(f->log.count, logs + 1);
    assert_int_equal(f->log.level, CCH_LOG_WARN);
    assert_non_null(strstr(f->log.last, "no.such.type"));
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.unknown_type, 1);
    assert_int_equal(st.messages_dispatched, 4);
    assert_true(cch_is_open(c));

    /* The class's own websocket.send wins over the built-in. */
    send_to(c, "websocket.send", "{\"text\":\"builtin\"}");
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t.sends, 1);
    assert_string_equal(t.frames[0].data, "own");
    /* websocket.close is still the built-in. */
    send_to(c, "websocket_close", "{\"code\":4004}");
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(t.close_code, 4004);
    cch_conn_disconnected(c, 4004);

    /* Without a log sink, unknown types are still just counted. */
    cch_app_set_log(f->app, NULL, NULL);
    c = open_conn(f->app, &t, "/a/", NULL);
    send_to(c, "nope", NULL);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.unknown_type, 2);
    cch_conn_disconnected(c, 1000);
}

static void test_default_handler(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_route(f->app, "/b/", &cls_b, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/b/", NULL);
    send_to(c, "only_b", NULL);
    send_to(c, "anything.else", NULL);
    send_to(c, "websocket.send", "{\"text\":\"hi\"}"); /* built-ins come before default */
    assert_int_equal(cch_app_dispatch(f->app, 0), 3);
    assert_int_equal(rec.handled_b, 1);
    assert_int_equal(rec.defaults, 1);
    assert_int_equal(t.sends, 1);
    assert_string_equal(t.frames[0].data, "hi");
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.unknown_type, 0);
    cch_conn_disconnected(c, 1000);
}

static void test_dispatch_max_and_reentry(void **state) {
    fx *f = *state;
    assert_int_equal(cch_app_route(f->app, "/a/", &cls_a, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/a/", NULL);
    for (int i = 0; i < 5; i++) send_to(c, "chat.message", NULL);
    assert_int_equal(cch_app_dispatch(f->app, 2), 2);
    assert_int_equal(rec.handled_a, 2);
    assert_int_equal(cch_app_dispatch(f->app, 2), 2);
    assert_int_equal(cch_app_dispatch(f->app, 2), 1); /* less than max: done */
    assert_int_equal(cch_app_dispatch(f->app, 2), 0);
    assert_int_equal(rec.handled_a, 5);

    /* More than one batch with no limit. */
    cch_layer_stats ls;
    for (int i = 0; i < 90; i++) send_to(c, "chat.message", NULL);
    assert_int_equal(cch_app_dispatch(f->app, 0), 90);
    cch_layer_stats_get(cch_app_layer(f->app), &ls);
    assert_int_equal(ls.full, 0);

    /* A handler may not dispatch from inside dispatch. */
    send_to(c, "again", NULL);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);
    assert_int_equal(rec.reentrant_rc, CCH_ESTATE);
    cch_conn_disconnected(c, 1000);
}

/* Handlers see their own connection: send only to users 12 and 13. */
static int uid_mw(cch_scope *s, void *ud) {
    (void)ud;
    char buf[16];
    if (cch_scope_query(s, "uid", buf, sizeof buf) > 0)
        return cch_scope_set_user(s, atoi(buf), buf, NULL, NULL);
    return 0;
}

static int join_connect(cch_conn *c) {
    int rc = cch_group_add(c, "room");
    if (rc < 0) return rc;
    return cch_accept(c, NULL);
}

static void targeted(cch_conn *c, const cch_msg *m) {
    const char *raw;
    size_t len;
    assert_int_equal(cch_msg_field_raw(m, "users", &raw, &len), 0);
    char me[32];
    snprintf(me, sizeof me, "%lld", (long long)cch_user_id(c));
    /* The list is "[12,13]": look for the id between delimiters. */
    for (const char *p = raw; (p = strstr(p, me)) && p < raw + len; p++) {
        char before = p[-1], after = p[strlen(me)];
        if ((before == '[' || before == ',') && (after == ']' || after == ',')) {
            char out[64];
            snprintf(out, sizeof out, "for %s in %s", me, cch_param(c, "room"));
            cch_send_text(c, out, strlen(out));
            return;
        }
    }
}

static void test_handlers_see_own_scope(void **state) {
    fx *f = *state;
    static const cch_middleware uid = {"uid", uid_mw, NULL};
    static const cch_handler cls_handlers[] = {{"chat.targeted", targeted}, {NULL, NULL}};
    static const cch_consumer_class cls = {
        .connect = join_connect,
        .handlers = cls_handlers,
    };
    assert_int_equal(cch_app_use(f->app, &uid, NULL), 0);
    assert_int_equal(cch_app_route(f->app, "/ws/{room}/", &cls, NULL), 0);
    enum { N = 15 };
    fx_tp t[N];
    cch_conn *c[N];
    for (int i = 0; i < N; i++) {
        memset(&t[i], 0, sizeof t[i]);
        char path[64];
        snprintf(path, sizeof path, "/ws/r%d/?uid=%d", i + 1, i + 1);
        c[i] = open_conn(f->app, &t[i], path, NULL);
        assert_int_equal(cch_user_id(c[i]), i + 1);
    }
    cch_msg *m = msg("chat_targeted", "{\"users\":[12,13],\"text\":\"psst\"}");
    assert_int_equal(cch_group_send(c[0], "room", m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_app_dispatch(f->app, 0), N);
    for (int i = 0; i < N; i++) {
        if (i + 1 == 12 || i + 1 == 13) {
            assert_int_equal(t[i].sends, 1);
            char want[64];
            snprintf(want, sizeof want, "for %d in r%d", i + 1, i + 1);
            assert_string_equal(t[i].frames[0].data, want);
        } else {
            assert_int_equal(t[i].sends, 0);
        }
    }
    for (int i = 0; i < N; i++) cch_conn_disconnected(c[i], 1000);
}

/* The (route, message) cache must not mix classes or messages. */
static void test_cache_mixed_routes(void **state) {
    fx *f = *state;
    static const cch_handler ca_handlers[] = {{"x", h_a}, {"y", h_b}, {NULL, NULL}};
    static const cch_consumer_class ca = {
        .handlers = ca_handlers};
    static const cch_consumer_class cb = {.default_handler = h_default};
    assert_int_equal(cch_app_route(f->app, "/a/", &ca, NULL), 0);
    assert_int_equal(cch_app_route(f->app, "/b/", &cb, NULL), 0);
    fx_tp t = {0};
    cch_conn *c[6];
    for (int i = 0; i < 6; i++) {
        c[i] = open_conn(f->app, &t, i % 2 ? "/b/" : "/a/", NULL);
        assert_int_equal(cch_group_add(c[i], "mix"), 0);
    }
    cch_msg *mx = msg("x", NULL), *my = msg("y", NULL);
    assert_int_equal(cch_group_send(c[0], "mix", mx), 0);
    assert_int_equal(cch_group_send(c[0], "mix", my), 0);
    assert_int_equal(cch_group_send(c[0], "mix", mx), 0);
    cch_msg_unref(mx);
    cch_msg_unref(my);
    assert_int_equal(cch_app_dispatch(f->app, 0), 18);
    assert_int_equal(rec.handled_a, 6); /* x on the 3 /a/ connections, twice */
    assert_int_equal(rec.handled_b, 3); /* y on the 3 /a/ connections */
    assert_int_equal(rec.defaults, 9);  /* everything on the /b/ connections */
    for (int i = 0; i < 6; i++) cch_conn_disconnected(c[i], 1000);
}

/* More distinct messages in one dispatch than the lookup table has slots: every
 * delivery runs its handler, in each connection's order, and every reference the
 * dispatch held is dropped when it returns. */
typedef struct seq_state {
    int64_t last;
    int count;
} seq_state;

static int seq_connect(cch_conn *c) {
    seq_state *st = cch_state(c);
    st->last = -1;
    int rc = cch_group_add(c, "seq");
    return rc < 0 ? rc : cch_accept(c, NULL);
}

static void seq_handler(cch_conn *c, const cch_msg *m) {
    seq_state *st = cch_state(c);
    int64_t n = -1;
    assert_int_equal(cch_msg_field_int(m, "n", &n), 0);
    assert_true(n > st->last);
    assert_true(cch__msg_refs(m) >= 2); /* the test's and the dispatch's, at least */
    st->last = n;
    st->count++;
}

static void test_cache_many_messages(void **state) {
    fx *f = *state;
    static const cch_handler handlers[] = {{"seq.msg", seq_handler}, {NULL, NULL}};
    static const cch_consumer_class cls = {
        .state_size = sizeof(seq_state), .connect = seq_connect, .handlers = handlers};
    assert_int_equal(cch_app_route(f->app, "/s/", &cls, NULL), 0);
    fx_tp t = {0};
    enum { CONNS = 3, MSGS = 90 }; /* under the layer's default capacity of 100 */
    cch_conn *c[CONNS];
    for (int i = 0; i < CONNS; i++) c[i] = open_conn(f->app, &t, "/s/", NULL);
    cch_msg *m[MSGS];
    for (int i = 0; i < MSGS; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "{\"n\":%d}", i);
        m[i] = cch_msg_new("seq.msg", body, (size_t)n);
        assert_non_null(m[i]);
        assert_int_equal(cch_group_send(c[0], "seq", m[i]), 0);
    }
    assert_int_equal(cch_app_dispatch(f->app, 0), CONNS * MSGS);
    for (int i = 0; i < CONNS; i++) {
        seq_state *st = cch_state(c[i]);
        assert_int_equal(st->count, MSGS);
        assert_int_equal(st->last, MSGS - 1);
    }
    for (int i = 0; i < MSGS; i++) {
        assert_int_equal(cch__msg_refs(m[i]), 1); /* only ours is left */
        cch_msg_unref(m[i]);
    }
    /* More distinct messages than the table holds (8 x 90 > 512): slots are reused,
     * and still every reference goes */
    enum { MANY = 8 };
    cch_conn *d[MANY];
    static cch_msg *own[MANY][MSGS];
    for (int i = 0; i < MANY; i++) {
        d[i] = open_conn(f->app, &t, "/s/", NULL);
        for (int k = 0; k < MSGS; k++) {
            char body[32];
            int n = snprintf(body, sizeof body, "{\"n\":%d}", k);
            own[i][k] = cch_msg_new("seq.msg", body, (size_t)n);
            assert_int_equal(cch_channel_send(d[i], cch_channel_name(d[i]), own[i][k]), 0);
        }
    }
    assert_int_equal(cch_app_dispatch(f->app, 0), MANY * MSGS);
    for (int i = 0; i < MANY; i++) {
        seq_state *st = cch_state(d[i]);
        assert_int_equal(st->count, MSGS);
        for (int k = 0; k < MSGS; k++) {
            assert_int_equal(cch__msg_refs(own[i][k]), 1);
            cch_msg_unref(own[i][k]);
        }
        cch_conn_disconnected(d[i], 1000);
    }
    for (int i = 0; i < CONNS; i++) cch_conn_disconnected(c[i], 1000);
}

/* A connection that ends while its deliveries are still in the batch. */
static cch_conn *victim;
static fx_tp *victim_tp;
static void kill_victim(cch_conn *c, const cch_msg *m) {
    (void)m;
    rec.handled_a++;
    if (victim && c != victim) {
        cch_conn_disconnected(victim, 1006);
        victim = NULL;
    }
}

static void test_conn_ends_mid_batch(void **state) {
    fx *f = *state;
    static const cch_handler cls_handlers[] = {{"boom", kill_victim}, {NULL, NULL}};
    static const cch_consumer_class cls = {
        .handlers = cls_handlers};
    assert_int_equal(cch_app_route(f->app, "/k/", &cls, NULL), 0);
    fx_tp t1 = {0}, t2 = {0}, t3 = {0};
    cch_conn *a = open_conn(f->app, &t1, "/k/", NULL);
    cch_conn *b = open_conn(f->app, &t2, "/k/", NULL);
    cch_conn *c = open_conn(f->app, &t3, "/k/", NULL);
    victim = b;
    victim_tp = &t2;
    /* Order in the batch: a, b, c, b. */
    send_to(a, "boom", NULL);
    send_to(b, "boom", NULL);
    send_to(c, "boom", NULL);
    send_to(b, "boom", NULL);
    assert_int_equal(cch_app_dispatch(f->app, 0), 4);
    /* a ran and ended b; b's two deliveries were dropped; c ran. */
    assert_int_equal(rec.handled_a, 2);
    cch_app_stats st;
    cch_app_stats_get(f->app, &st);
    assert_int_equal(st.dropped_closed, 2);
    assert_int_equal(st.connections_active, 2);
    cch_conn_disconnected(a, 1000);
    cch_conn_disconnected(c, 1000);
}

/* ---- wakeup -------------------------------------------------------------------------- */

static int wakeups;
static void on_wakeup(void *ud) { __atomic_add_fetch((int *)ud, 1, __ATOMIC_SEQ_CST); }

struct sender {
    cch_layer *layer;
    int n;
};

static void *send_thread(void *arg) {
    struct sender *s = arg;
    for (int i = 0; i < s->n; i++) {
        cch_msg *m = cch_msg_new("chat.message", "{}", 2);
        cch_layer_group_send(s->layer, "threads", m, NULL, NULL);
        cch_msg_unref(m);
    }
    return NULL;
}

static void test_wakeup_from_threads(void **state) {
    fx *f = *state;
    wakeups = 0;
    cch_app_set_wakeup(f->app, on_wakeup, &wakeups);
    assert_int_equal(cch_app_route(f->app, "/a/", &cls_a, NULL), 0);
    fx_tp t = {0};
    cch_conn *c = open_conn(f->app, &t, "/a/", NULL);
    assert_int_equal(cch_group_add(c, "threads"), 0);
    send_to(c, "chat.message", NULL);
    assert_true(__atomic_load_n(&wakeups, __ATOMIC_SEQ_CST) >= 1);
    assert_int_equal(cch_app_dispatch(f->app, 0), 1);

    int before = __atomic_load_n(&wakeups, __ATOMIC_SEQ_CST);
    enum { THREADS = 4, EACH = 20 }; /* 80 <= the channel's capacity of 100 */
    pthread_t th[THREADS];
    struct sender s = {cch_app_layer(f->app), EACH};
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, send_thread, &s), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    assert_true(__atomic_load_n(&wakeups, __ATOMIC_SEQ_CST) > before);
    assert_int_equal(cch_app_dispatch(f->app, 0), THREADS * EACH);
    assert_int_equal(rec.handled_a, 1 + THREADS * EACH);
    cch_app_set_wakeup(f->app, NULL, NULL);
    cch_conn_disconnected(c, 1000);
}

/* ---- fanout -------------------------------------------------------------------------- */

static uint64_t fan_count;
static void fan_handler(cch_conn *c, const cch_msg *m) {
    (void)c;
    (void)m;
    fan_count++;
}

static int fan_connect(cch_conn *c) {
    int rc = cch_group_add(c, "big");
    if (rc < 0) return rc;
    return cch_accept(c, NULL);
}

static void test_fanout_10k_no_allocation(void **state) {
    (void)state;
    static const cch_handler cls_handlers[] = {{"fan.out", fan_handler}, {NULL, NULL}};
    static const cch_consumer_class cls = {
        .connect = fan_connect,
        .handlers = cls_handlers};
    fx_alloc_install();
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_int_equal(cch_app_route(app, "/f/", &cls, NULL), 0);
    enum { N = 10000 };
    static cch_conn *conns[N];
    static fx_tp tp;
    fx_req r;
    fx_req_init(&r, "/f/", NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(cch_conn_open(app, &r.req, &fx_transport, &tp, &conns[i]), 0);
    assert_int_equal(tp.accepts, N);
    cch_msg *m = cch_msg_new("fan_out", "{\"n\":1}", 7);
    fan_count = 0;
    for (int round = 0; round < 3; round++) {
        cch_group_send_result res;
        assert_int_equal(cch_layer_group_send(cch_app_layer(app), "big", m, NULL, &res), 0);
        assert_int_equal(res.delivered, N);
        long allocs = fx_allocs;
        assert_int_equal(cch_app_dispatch(app, 0), N);
        /* Dispatch itself allocates nothing per delivery. */
        assert_int_equal(fx_allocs - allocs, 0);
    }
    assert_int_equal(fan_count, 3 * N);
    cch_msg_unref(m);
    cch_app_stats st;
    cch_app_stats_get(app, &st);
    assert_int_equal(st.messages_dispatched, 3 * N);
    for (int i = 0; i < N; i++) cch_conn_disconnected(conns[i], 1000);
    assert_int_equal(cch_app_free(app), 0);
    assert_int_equal(fx_live, 0);
    alloc_restore();
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_new_enomem),
        T(test_free_with_connections),
        T(test_route_errors),
        cmocka_unit_test(test_route_enomem),
        T(test_first_match_wins),
        T(test_middleware_chain),
        T(test_middleware_reject),
        cmocka_unit_test(test_use_enomem),
        T(test_dispatch_by_type),
        T(test_default_handler),
        T(test_dispatch_max_and_reentry),
        T(test_handlers_see_own_scope),
        T(test_cache_mixed_routes),
        T(test_cache_many_messages),
        T(test_conn_ends_mid_batch),
        T(test_wakeup_from_threads),
        cmocka_unit_test(test_fanout_10k_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
