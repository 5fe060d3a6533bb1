/* tests/test_ws_loops.c - cch_ws_run_loops's life cycle, in process (issue 5).
 *
 * Bad arguments and options fail with CCH_EINVAL before anything runs; a failing
 * setup callback, a port in use and out-of-memory at every allocation fail cleanly
 * (apps freed, the caller's layer reference untouched, nothing leaks, nothing left
 * allocated); a run with 1, 2 and one-per-CPU loops calls setup once per loop in
 * order and `ready` once with the shared port, and returns 0 after SIGTERM. Clients,
 * group messages across loops and the graceful shutdown over sockets are in
 * tests/ws/test_ws_loops.py. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <cchannels/alloc.h>
#include <cchannels/cchannels.h>
#include <cchannels/ws.h>

/* ---- what the callbacks saw --------------------------------------------------------- */

typedef struct seen {
    int setups;              /* setup calls */
    int indices[CCH_WS_MAX_LOOPS];
    int fail_at;             /* setup of this loop index fails (-1: none) */
    int fail_code;
    int readies;
    int port;
    cch_app *apps[CCH_WS_MAX_LOOPS];
} seen;

static void ignore_log(void *ud, int level, const char *msg)
{
    (void)ud, (void)level, (void)msg;
}

static void echo_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    if (!binary)
        cch_send_text(c, data, len);
}

static const cch_consumer_class echo = {.receive = echo_receive};

static int setup(cch_app *app, int index, void *ud)
{
    seen *s = ud;
    if (s->setups < CCH_WS_MAX_LOOPS) {
        s->indices[s->setups] = index;
        s->apps[s->setups] = app;
    }
    s->setups++;
    if (index == s->fail_at)
        return s->fail_code;
    return cch_app_route(app, "/ws/echo/", &echo, NULL);
}

/* Listening: note it, and stop the run (libuv's handler is installed by now). */
static void ready_then_term(cch_ws_server *srv, void *ud)
{
    seen *s = ud;
    s->readies++;
    s->port = cch_ws_server_port(srv);
    raise(SIGTERM);
}

static cch_ws_options options(seen *s, int loops)
{
    return (cch_ws_options){.host = "127.0.0.1", .port = CCH_WS_ANY_PORT, .loops = loops,
                            .ready = ready_then_term, .ready_ud = s, .log = ignore_log,
                            .log_level = CCH_LOG_DEBUG};
}

/* A layer whose reference count the test can check: one send to an unbound channel
 * proves it is alive after the run; the final unref frees it (LeakSanitizer and the
 * live-allocation count below check that nothing else holds it). */
static void layer_still_works(cch_layer *layer)
{
    char name[CCH_NAME_BUF];
    assert_int_equal(cch_layer_new_channel(layer, "t", NULL, NULL, name, sizeof name), 0);
    cch_msg *m = cch_msg_new("t.x", NULL, 0);
    assert_non_null(m);
    assert_int_equal(cch_layer_send(layer, name, m), 0);
    cch_msg_unref(m);
    assert_int_equal(cch_layer_release_channel(layer, name), 0);
}

/* ---- bad arguments ---------------------------------------------------------------- */

static void test_invalid(void **state)
{
    (void)state;
    seen s = {.fail_at = -1};
    cch_layer *layer = cch_memory_layer_new(NULL);
    assert_non_null(layer);
    cch_ws_options o = options(&s, 2);

    assert_int_equal(cch_ws_run_loops(&o, NULL, setup, &s), CCH_EINVAL);
    assert_int_equal(cch_ws_run_loops(&o, layer, NULL, &s), CCH_EINVAL);
    o.loops = CCH_WS_MAX_LOOPS + 1;
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    o.loops = -2;
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    assert_int_equal(s.setups, 0);

    /* A bad option is found once the apps exist: they are freed again. */
    o.loops = 2;
    o.port = 70000;
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    assert_int_equal(s.setups, 2);
    o.port = CCH_WS_ANY_PORT;
    o.host = "no such host.invalid";
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    o.host = "127.0.0.1";
    o.static_dir = "/nonexistent/dir";
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    o.static_dir = NULL;
    o.max_header_bytes = 10;
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EINVAL);
    assert_int_equal(s.readies, 0);

    /* One server is one loop: cch_ws_run and cch_ws_server_start refuse more. */
    cch_app *app = cch_app_new(cch_layer_ref(layer));
    assert_non_null(app);
    cch_ws_options one = options(&s, 2);
    assert_int_equal(cch_ws_run(app, &one), CCH_EINVAL);
    one.loops = CCH_WS_LOOPS_PER_CPU;
    assert_int_equal(cch_ws_run(app, &one), CCH_EINVAL);
    assert_int_equal(s.readies, 0);
    assert_int_equal(cch_app_free(app), 0);

    layer_still_works(layer);
    cch_layer_unref(layer);
}

/* ---- setup fails ------------------------------------------------------------------ */

static void test_setup_fails(void **state)
{
    (void)state;
    cch_layer *layer = cch_memory_layer_new(NULL);
    for (int loops = 1; loops <= 3; loops++) {
        for (int at = 0; at < loops; at++) {
            seen s = {.fail_at = at, .fail_code = CCH_EPATTERN};
            cch_ws_options o = options(&s, loops);
            assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EPATTERN);
            /* setup runs in order and stops at the failing loop */
            assert_int_equal(s.setups, at + 1);
            for (int i = 0; i <= at; i++)
                assert_int_equal(s.indices[i], i);
            assert_int_equal(s.readies, 0);
        }
    }
    layer_still_works(layer);
    cch_layer_unref(layer);
}

/* ---- the port is taken ------------------------------------------------------------- */

static void test_port_in_use(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

    cch_layer *layer = cch_memory_layer_new(NULL);
    for (int loops = 1; loops <= 2; loops++) {
        seen s = {.fail_at = -1};
        cch_ws_options o = options(&s, loops);
        o.port = ntohs(sa.sin_port);
        assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), CCH_EIO);
        assert_int_equal(s.setups, loops);
        assert_int_equal(s.readies, 0);
    }
    close(fd);
    layer_still_works(layer);
    cch_layer_unref(layer);
}

/* ---- runs ---------------------------------------------------------------------------- */

static void run_and_stop(int loops, int expect_setups)
{
    cch_layer *layer = cch_memory_layer_new(NULL);
    seen s = {.fail_at = -1};
    cch_ws_options o = options(&s, loops);
    assert_int_equal(cch_ws_run_loops(&o, layer, setup, &s), 0);
    assert_int_equal(s.setups, expect_setups);
    for (int i = 0; i < expect_setups && i < CCH_WS_MAX_LOOPS; i++) {
        assert_int_equal(s.indices[i], i);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(s.apps[i], s.apps[j]);   /* one app per loop */
    }
    assert_int_equal(s.readies, 1);
    assert_true(s.port > 0 && s.port < 65536);
    layer_still_works(layer);
    cch_layer_unref(layer);
}

static void test_run_one_loop(void **state)
{
    (void)state;
    run_and_stop(0, 1);
    run_and_stop(1, 1);
}

static void test_run_two_loops(void **state)
{
    (void)state;
    run_and_stop(2, 2);
    run_and_stop(3, 3);
}

static void test_run_one_loop_per_cpu(void **state)
{
    (void)state;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > CCH_WS_MAX_LOOPS ? CCH_WS_MAX_LOOPS : (int)cpus;
    run_and_stop(CCH_WS_LOOPS_PER_CPU, n);
}

/* ---- out of memory at every allocation ------------------------------------------- */

static atomic_long calls, live, fail_at;

static bool fail_now(void)
{
    long n = atomic_fetch_add(&calls, 1) + 1;
    return n == atomic_load(&fail_at);
}

static void *t_malloc(size_t n)
{
    if (fail_now())
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_calloc(size_t k, size_t n)
{
    if (fail_now())
        return NULL;
    void *p = calloc(k, n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *t_realloc(void *old, size_t n)
{
    if (fail_now())
        return NULL;
    void *p = realloc(old, n);
    if (p && !old)
        atomic_fetch_add(&live, 1);
    return p;
}

static void t_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    assert_int_equal(cch_replace_allocator(t_malloc, t_realloc, t_calloc, t_free), 0);
    for (int loops = 1; loops <= 2; loops++) {
        atomic_store(&fail_at, 0);
        cch_layer *layer = cch_memory_layer_new(NULL);
        assert_non_null(layer);
        long base = atomic_load(&live);
        int failures = 0;
        for (long at = 1;; at++) {
            seen s = {.fail_at = -1};
            cch_ws_options o = options(&s, loops);
            atomic_store(&calls, 0);
            atomic_store(&fail_at, at);
            int rc = cch_ws_run_loops(&o, layer, setup, &s);
            long made = atomic_load(&calls);
            atomic_store(&fail_at, 0);
            /* every allocation of a failed start is undone */
            assert_int_equal(atomic_load(&live), base);
            if (rc == CCH_ENOMEM) {
                assert_int_equal(s.readies, 0);
                failures++;
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(s.readies, 1);
            if (made < at)
                break; /* no allocation failed: every one has been tried */
        }
        print_message("%d loop(s): each of %d allocations failed once, cleanly\n", loops, failures);
        assert_true(failures >= 5);
        layer_still_works(layer);
        cch_layer_unref(layer);
        assert_int_equal(atomic_load(&live), 0); /* the layer is gone too: nothing left */
    }
    assert_int_equal(cch_replace_allocator(malloc, realloc, calloc, free), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_setup_fails),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_run_one_loop),
        cmocka_unit_test(test_run_two_loops),
        cmocka_unit_test(test_run_one_loop_per_cpu),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
