/* lib/ws/run.c - cch_ws_run: a server on a loop of its own, stopped by SIGINT/SIGTERM.
 *
 * The first signal stops the server gracefully (close 1001 to every client, wait for
 * the close handshakes at most close_timeout); a second one drops what is left. When
 * the server is gone the signal handles are closed, the loop runs out of work and
 * cch_ws_run returns 0. SIGPIPE is ignored while it runs (a client that resets while
 * we write must not end the process). */
#include "ws_internal.h"

#include <signal.h>

typedef struct ws_run {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    ws_server *server;
    int signals;
} ws_run;

static void on_signal(uv_signal_t *h, int signum)
{
    ws_run *r = h->data;
    r->signals++;
    if (r->server) {
        ws_log(r->server, CCH_LOG_INFO, "%s received%s", signum == SIGINT ? "SIGINT" : "SIGTERM",
               r->signals > 1 ? ": dropping the remaining connections" : "");
        cch_ws_server_stop(r->server, NULL, NULL);
    }
}

static void server_gone(void *ud)
{
    ws_run *r = ud;
    r->server = NULL;
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int cch_ws_run(cch_app *app, const cch_ws_options *opts)
{
    if (!app)
        return CCH_EINVAL;
    ws_run r = {0};
    if (uv_loop_init(&r.loop) != 0)
        return CCH_EIO;
    /* A client that resets while we write must not kill the process. */
    struct sigaction ign = {0}, old_pipe;
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe);
    /* Signals first: once the ready callback has said "listening", a signal must
     * already stop the server gracefully. They are delivered from uv_run, after the
     * server exists. */
    uv_signal_init(&r.loop, &r.sigint);
    uv_signal_init(&r.loop, &r.sigterm);
    r.sigint.data = r.sigterm.data = &r;
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);
    cch_ws_server *s = NULL;
    int rc = cch_ws_server_start(&s, app, &r.loop, opts);
    if (rc < 0) {
        uv_close((uv_handle_t *)&r.sigint, NULL);
        uv_close((uv_handle_t *)&r.sigterm, NULL);
        /* A failure after the server's handles were made leaves them closing too. */
        uv_run(&r.loop, UV_RUN_DEFAULT);
        uv_loop_close(&r.loop);
        sigaction(SIGPIPE, &old_pipe, NULL);
        return rc;
    }
    r.server = s;
    s->gone_hook = server_gone;
    s->gone_ud = &r;
    uv_run(&r.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r.loop) == UV_EBUSY) {
        /* Something else was left on our loop: close it, then the loop. */
        uv_walk(&r.loop, close_any, NULL);
        uv_run(&r.loop, UV_RUN_DEFAULT);
        uv_loop_close(&r.loop);
    }
    sigaction(SIGPIPE, &old_pipe, NULL);
    return 0;
}
