/* tests/test_ws_server.c - the WebSocket server's life cycle, in process, on a libuv loop.
 *
 * Starting with bad options or a busy port fails cleanly (nothing left on the loop);
 * start/stop frees everything and calls the stop callback; out-of-memory at every
 * allocation of start fails cleanly; and a client on the same loop completes a
 * handshake, gets its message echoed, and receives close 1001 when the server stops
 * (its disconnect runs before the stop callback). The socket-level conformance suite
 * is in tests/ws/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include <cchannels/cchannels.h>
#include <cchannels/ws.h>

#include "alloc_fixture.h"
#include "echo_consumer.h"

static cch_app *new_app(void)
{
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/echo/", &echo_consumer, NULL), 0);
    return app;
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- bad options ------------------------------------------------------------------- */

static void test_start_invalid(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    cch_app *app = new_app();
    cch_ws_server *s = (cch_ws_server *)&s;
    cch_ws_options o = {.port = CCH_WS_ANY_PORT};

    assert_int_equal(cch_ws_server_start(NULL, app, &loop, &o), CCH_EINVAL);
    assert_int_equal(cch_ws_server_start(&s, NULL, &loop, &o), CCH_EINVAL);
    assert_null(s);
    assert_int_equal(cch_ws_server_start(&s, app, NULL, &o), CCH_EINVAL);

    o.port = 70000;
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    o.port = -5;
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    o.port = CCH_WS_ANY_PORT;

    o.host = "no such host.invalid";
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    o.host = NULL;

    o.static_dir = "/nonexistent/dir";
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    o.static_dir = "/etc/hostname"; /* a file, not a directory */
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    o.static_dir = NULL;

    o.max_header_bytes = 10;
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), CCH_EINVAL);
    assert_null(s);

    assert_false(uv_loop_alive(&loop));
    assert_int_equal(cch_ws_server_port(NULL), CCH_EINVAL);
    assert_int_equal(cch_ws_server_stop(NULL, NULL, NULL), CCH_EINVAL);
    cch_ws_stats st;
    memset(&st, 0xff, sizeof st);
    cch_ws_server_stats(NULL, &st);
    assert_int_equal(st.tcp_accepted, 0);
    close_loop(&loop);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- start, stop, busy port ------------------------------------------------------ */

static int stopped_calls;

static void on_stopped(void *ud)
{
    stopped_calls++;
    if (ud)
        *(int *)ud += 1;
}

static void test_start_stop(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    cch_app *app = new_app();
    cch_ws_server *s = NULL;
    cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT};
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), 0);
    assert_non_null(s);
    int port = cch_ws_server_port(s);
    assert_true(port > 0 && port < 65536);
    cch_ws_stats st;
    cch_ws_server_stats(s, &st);
    assert_int_equal(st.tcp_accepted, 0);
    assert_int_equal(st.tcp_active, 0);

    /* The same port again: bind fails, nothing is left behind. */
    cch_ws_server *s2 = NULL;
    cch_ws_options o2 = {.host = "127.0.0.1", .port = port};
    assert_int_equal(cch_ws_server_start(&s2, app, &loop, &o2), CCH_EIO);
    assert_null(s2);

    int done = 0;
    stopped_calls = 0;
    assert_int_equal(cch_ws_server_stop(s, on_stopped, &done), 0);
    assert_int_equal(done, 0); /* only once the handles are closed */
    close_loop(&loop);
    assert_int_equal(done, 1);
    assert_int_equal(stopped_calls, 1);
    assert_int_equal(cch_app_free(app), 0);
}

static void test_start_ipv6(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    cch_app *app = new_app();
    cch_ws_server *s = NULL;
    cch_ws_options o = {.host = "::1", .port = CCH_WS_ANY_PORT};
    int rc = cch_ws_server_start(&s, app, &loop, &o);
    if (rc == CCH_EIO) {
        /* No IPv6 on this machine: nothing to test. */
        close_loop(&loop);
        assert_int_equal(cch_app_free(app), 0);
        skip();
    }
    assert_int_equal(rc, 0);
    assert_true(cch_ws_server_port(s) > 0);
    assert_int_equal(cch_ws_server_stop(s, NULL, NULL), 0);
    close_loop(&loop);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- out of memory during start ----------------------------------------------------- */

static void test_start_enomem(void **state)
{
    (void)state;
    fail_after(-1); /* counts down only once alloc_budget is set */
    cch_app *app = new_app();
    bool succeeded = false;
    for (long n = 0; n < 64 && !succeeded; n++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        cch_ws_server *s = NULL;
        cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT, .static_dir = "."};
        alloc_budget = n;
        int rc = cch_ws_server_start(&s, app, &loop, &o);
        alloc_budget = -1;
        if (rc == 0) {
            succeeded = true;
            assert_int_equal(cch_ws_server_stop(s, NULL, NULL), 0);
        } else {
            assert_int_equal(rc, CCH_ENOMEM);
            assert_null(s);
            assert_false(uv_loop_alive(&loop));
        }
        close_loop(&loop);
    }
    assert_true(succeeded);
    assert_int_equal(cch_app_free(app), 0);
    alloc_restore();
}

/* ---- a client on the same loop ------------------------------------------------------ */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    cch_ws_server *server;
    char in[4096];
    size_t in_len;
    int phase;             /* 0 handshake, 1 echo, 2 close, 3 eof */
    int close_code;
    bool eof;
    char wbuf[256];
} client;

static void client_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    client *cl = h->data;
    *buf = uv_buf_init(cl->in + cl->in_len, (unsigned)(sizeof cl->in - cl->in_len));
}

static void client_send(client *cl, const void *data, size_t len)
{
    memcpy(cl->wbuf, data, len);
    uv_buf_t b = uv_buf_init(cl->wbuf, (unsigned)len);
    assert_int_equal(uv_write(&cl->write, (uv_stream_t *)&cl->tcp, &b, 1, NULL), 0);
}

static void client_send_frame(client *cl, int opcode, const char *payload, size_t n)
{
    unsigned char f[140];
    const unsigned char key[4] = {1, 2, 3, 4};
    f[0] = (unsigned char)(0x80 | opcode);
    f[1] = (unsigned char)(0x80 | n);
    memcpy(f + 2, key, 4);
    for (size_t i = 0; i < n; i++)
        f[6 + i] = (unsigned char)payload[i] ^ key[i % 4];
    client_send(cl, f, 6 + n);
}

static void client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    client *cl = st->data;
    if (nread < 0) {
        cl->eof = true;
        uv_close((uv_handle_t *)&cl->tcp, NULL);
        return;
    }
    cl->in_len += (size_t)nread;
    for (;;) {
        if (cl->phase == 0) {
            char *end = memmem(cl->in, cl->in_len, "\r\n\r\n", 4);
            if (!end)
                return;
            assert_memory_equal(cl->in, "HTTP/1.1 101 ", 13);
            assert_non_null(memmem(cl->in, cl->in_len, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 50));
            size_t used = (size_t)(end + 4 - cl->in);
            memmove(cl->in, cl->in + used, cl->in_len - used);
            cl->in_len -= used;
            cl->phase = 1;
            client_send_frame(cl, 1, "hello", 5);
            continue;
        }
        if (cl->in_len < 2)
            return;
        size_t n = (unsigned char)cl->in[1] & 0x7f;
        if (cl->in_len < 2 + n)
            return;
        int op = cl->in[0] & 0x0f;
        if (cl->phase == 1) {
            assert_int_equal(op, 1);
            assert_int_equal(n, 5);
            assert_memory_equal(cl->in + 2, "hello", 5);
            cl->phase = 2;
            /* The server stops: this client must get close 1001. */
            assert_int_equal(cch_ws_server_stop(cl->server, on_stopped, NULL), 0);
        } else if (cl->phase == 2) {
            assert_int_equal(op, 8);
            assert_true(n >= 2);
            cl->close_code = ((unsigned char)cl->in[2] << 8) | (unsigned char)cl->in[3];
            cl->phase = 3;
            client_send_frame(cl, 8, cl->in + 2, 2);
        }
        memmove(cl->in, cl->in + 2 + n, cl->in_len - 2 - n);
        cl->in_len -= 2 + n;
    }
}

static void client_connected(uv_connect_t *req, int status)
{
    client *cl = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&cl->tcp, client_alloc, client_read);
    const char *hs = "GET /ws/echo/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
    client_send(cl, hs, strlen(hs));
}

static void test_client_on_same_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    cch_app *app = new_app();
    cch_ws_server *s = NULL;
    cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT};
    assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), 0);

    client cl = {.server = s};
    uv_tcp_init(&loop, &cl.tcp);
    cl.tcp.data = &cl;
    cl.connect.data = &cl;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", cch_ws_server_port(s), &addr);
    assert_int_equal(uv_tcp_connect(&cl.connect, &cl.tcp, (struct sockaddr *)&addr, client_connected), 0);
    stopped_calls = 0;
    close_loop(&loop);
    assert_int_equal(cl.phase, 3);
    assert_int_equal(cl.close_code, 1001);
    assert_true(cl.eof);
    assert_int_equal(stopped_calls, 1);
    cch_app_stats as;
    cch_app_stats_get(app, &as);
    assert_int_equal(as.connections_opened, 1);
    assert_int_equal(as.connections_accepted, 1);
    assert_int_equal(as.connections_active, 0);
    assert_int_equal(as.messages_received, 1);
    assert_int_equal(cch_app_free(app), 0);
}

/* ---- out of memory while serving: no crash, no leak, every connection ends --- */

typedef struct tolerant {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t guard;
    cch_ws_server *server;
    char in[8192];
    size_t in_len;
    bool done, timed_out;
    char wbuf[512];
} tolerant;

static void tolerant_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    tolerant *t = h->data;
    if (t->in_len == sizeof t->in)
        t->in_len = 0; /* only the outcome matters, not every byte */
    *buf = uv_buf_init(t->in + t->in_len, (unsigned)(sizeof t->in - t->in_len));
}

static void tolerant_finish(tolerant *t)
{
    if (t->done)
        return;
    t->done = true;
    uv_close((uv_handle_t *)&t->tcp, NULL);
    uv_close((uv_handle_t *)&t->guard, NULL);
    alloc_budget = -1;
    cch_ws_server_stop(t->server, NULL, NULL);
}

static void tolerant_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    tolerant *t = st->data;
    if (nread < 0) {
        tolerant_finish(t); /* the server ended the connection: any outcome is fine */
        return;
    }
    t->in_len += (size_t)nread;
}

static void tolerant_timeout(uv_timer_t *tm)
{
    tolerant *t = tm->data;
    t->timed_out = true;
    tolerant_finish(t);
}

static void tolerant_connected(uv_connect_t *req, int status)
{
    tolerant *t = req->data;
    if (status < 0) {
        tolerant_finish(t);
        return;
    }
    uv_read_start((uv_stream_t *)&t->tcp, tolerant_alloc, tolerant_read);
    /* Handshake, a text message, a ping, and a close, all at once. */
    const char *hs = "GET /ws/echo/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n";
    size_t n = strlen(hs);
    memcpy(t->wbuf, hs, n);
    const unsigned char frames[] = {0x81, 0x85, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o',
                                    0x89, 0x80, 0, 0, 0, 0,
                                    0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
    memcpy(t->wbuf + n, frames, sizeof frames);
    uv_buf_t b = uv_buf_init(t->wbuf, (unsigned)(n + sizeof frames));
    uv_write(&t->write, (uv_stream_t *)&t->tcp, &b, 1, NULL);
}

static void test_traffic_enomem(void **state)
{
    (void)state;
    fail_after(-1); /* counts down only once alloc_budget is set */
    long first_complete = -1;
    for (long n = 0; n < 120; n++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        cch_app *app = new_app();
        cch_ws_server *s = NULL;
        cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT, .close_timeout_ms = 200};
        assert_int_equal(cch_ws_server_start(&s, app, &loop, &o), 0);
        tolerant t = {.server = s};
        uv_tcp_init(&loop, &t.tcp);
        uv_timer_init(&loop, &t.guard);
        t.tcp.data = t.guard.data = t.connect.data = &t;
        uv_timer_start(&t.guard, tolerant_timeout, 5000, 0);
        struct sockaddr_in addr;
        uv_ip4_addr("127.0.0.1", cch_ws_server_port(s), &addr);
        assert_int_equal(uv_tcp_connect(&t.connect, &t.tcp, (struct sockaddr *)&addr, tolerant_connected), 0);
        alloc_budget = n; /* the server gets n more allocations */
        close_loop(&loop);
        alloc_budget = -1;
        if (t.timed_out)
            fprintf(stderr, "budget %ld: the connection hung\n", n);
        assert_false(t.timed_out); /* no connection is left hanging */
        if (t.in_len >= 13 && memcmp(t.in, "HTTP/1.1 101 ", 13) == 0 &&
            memmem(t.in, t.in_len, "\x81\x05hello", 7) && memmem(t.in, t.in_len, "\x88\x02\x03\xe8", 4) &&
            first_complete < 0)
            first_complete = n;
        cch_app_stats as;
        cch_app_stats_get(app, &as);
        assert_int_equal(as.connections_active, 0);
        assert_int_equal(cch_app_free(app), 0);
    }
    /* With enough memory the exchange succeeds, and every budget below was tried. */
    assert_true(first_complete >= 0 && first_complete < 100);
    alloc_restore();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as cchannels/ws.h asks of hosts */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_invalid),
        cmocka_unit_test(test_start_stop),
        cmocka_unit_test(test_start_ipv6),
        cmocka_unit_test(test_start_enomem),
        cmocka_unit_test(test_client_on_same_loop),
        cmocka_unit_test(test_traffic_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
