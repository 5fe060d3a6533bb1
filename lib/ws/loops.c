/* lib/ws/loops.c - cch_ws_run_loops: one server per loop and thread over one layer.
 *
 * N loops, each a thread with its own uv loop, its own app (same routes) and its own
 * server (server.c, "owned": no listener); loop 0 runs on the calling thread. The
 * apps share one layer, so a group_send on any loop reaches members on every loop:
 * the layer wakes the receiving app, whose loop dispatches.
 *
 * Accepting (accept.c): one listening socket on loop 0, which hands each new
 * connection to the loop with the fewest; the sockets travel through the target
 * loop's inbox (a queue under its mutex, and a uv_async), handled here.
 *
 * Wakeups cross threads: a group_send on loop 1 wakes loop 0's app. The app's wakeup
 * is set once, to loop_wakeup(loop), and never changed; it wakes the loop's server
 * (ws_server_wakeup: its async) under the loop's mutex, and the server detaches
 * (under the same mutex) before it closes that async. The apps and loops outlive
 * every thread.
 *
 * Shutdown: loop 0 holds the signal handles. The first signal closes the listening
 * socket and asks every loop (through its inbox) to stop its server gracefully; a
 * second asks again (the servers drop what is left). A loop whose server is gone
 * closes its inbox (closing the sockets still queued) and tells loop 0 (a uv_async
 * under the group's mutex); its uv_run then returns. When every loop has said so,
 * loop 0 closes its own handles; the calling thread joins the threads, closes the
 * loops and frees the apps. */
#include "alloc.h"
#include "loops_internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers shared with accept.c ------------------------------------------------ */

void ws_group_log(ws_group *g, int level, const char *fmt, ...)
{
    if (!g->opts.log || level > g->opts.log_level)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    g->opts.log(g->opts.log_ud, level, line);
}

void ws_close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* ---- the hooks of an owned server (server.c) ----------------------------------- */

void ws_loop_attach(ws_loop *l, ws_server *s)
{
    pthread_mutex_lock(&l->mu);
    l->wake_target = s;
    pthread_mutex_unlock(&l->mu);
}

void ws_loop_detach(ws_loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->wake_target = NULL;
    pthread_mutex_unlock(&l->mu);
}

void ws_loop_publish(ws_loop *l, size_t n_conns)
{
    atomic_store_explicit(&l->open, n_conns, memory_order_relaxed);
}

/* The app's wakeup: called by the layer from any thread. */
static void loop_wakeup(void *ud)
{
    ws_loop *l = ud;
    pthread_mutex_lock(&l->mu);
    if (l->wake_target)
        ws_server_wakeup(l->wake_target);
    pthread_mutex_unlock(&l->mu);
}

/* ---- the inbox ------------------------------------------------------------------ */

void ws_loop_push(ws_loop *l, int fd, bool busy)
{
    pthread_mutex_lock(&l->mu);
    if (!l->inbox_open)
        goto drop;
    if (l->qn == l->qcap) {
        size_t cap = l->qcap ? l->qcap * 2 : 64;
        ws_handoff *q = cch__realloc(l->q, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&l->mu);
            ws_group_log(l->g, CCH_LOG_ERROR, "out of memory: dropping a new connection");
            close(fd);
            return;
        }
        l->q = q;
        l->qcap = cap;
    }
    l->q[l->qn++] = (ws_handoff){fd, busy};
    if (!busy)
        atomic_fetch_add_explicit(&l->queued, 1, memory_order_relaxed);
    uv_async_send(&l->inbox);
    pthread_mutex_unlock(&l->mu);
    return;
drop:
    pthread_mutex_unlock(&l->mu);
    close(fd);
}

/* Asks loop l to stop its server (level 1: gracefully, 2: drop what is left). */
static void inbox_stop(ws_loop *l, int level)
{
    pthread_mutex_lock(&l->mu);
    if (level > l->stop_req)
        l->stop_req = level;
    if (l->inbox_open)
        uv_async_send(&l->inbox);
    pthread_mutex_unlock(&l->mu);
}

/* Closes the inbox for good (loop l's thread): later sockets are closed by the
 * acceptor, queued ones here. */
static void inbox_close(ws_loop *l)
{
    if (!l->inbox_ready || l->inbox_closed)
        return;
    pthread_mutex_lock(&l->mu);
    l->inbox_open = false;
    ws_handoff *q = l->q;
    size_t n = l->qn;
    l->q = NULL;
    l->qn = l->qcap = 0;
    atomic_store_explicit(&l->queued, 0, memory_order_relaxed);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++)
        close(q[i].fd);
    cch__free(q);
    l->inbox_closed = true;
    uv_close((uv_handle_t *)&l->inbox, NULL);
}

static void inbox_cb(uv_async_t *a)
{
    ws_loop *l = a->data;
    pthread_mutex_lock(&l->mu);
    /* Take the whole queue: swap it with the loop's own (empty) array. */
    ws_handoff *batch = l->q;
    size_t batch_cap = l->qcap, n = l->qn;
    l->q = l->take;
    l->qcap = l->take_cap;
    l->qn = 0;
    l->take = batch;
    l->take_cap = batch_cap;
    int stop = l->stop_req;
    pthread_mutex_unlock(&l->mu);

    size_t counted = 0;
    for (size_t i = 0; i < n; i++) {
        ws_handoff h = batch[i];
        if (!h.busy)
            counted++;
        if (!l->srv || stop > 0 || ws_server_take(l->srv, h.fd, h.busy) < 0)
            close(h.fd);
    }
    /* After the server published its new count: the acceptor may overcount for a
     * moment, never undercount. */
    if (counted)
        atomic_fetch_sub_explicit(&l->queued, counted, memory_order_relaxed);
    if (stop > l->stop_done) {
        l->stop_done = stop;
        if (l->srv)
            cch_ws_server_stop(l->srv, NULL, NULL);
    }
}

/* ---- the end of a loop ------------------------------------------------------------ */

/* The server of loop l is gone (its thread): close the inbox, tell loop 0. */
static void server_gone(void *ud)
{
    ws_loop *l = ud;
    ws_group *g = l->g;
    l->srv = NULL;
    inbox_close(l);
    pthread_mutex_lock(&g->mu);
    g->n_gone++;
    if (g->done_open)
        uv_async_send(&g->done);
    pthread_mutex_unlock(&g->mu);
}

/* Loop 0: once every loop is gone, close the group's handles; uv_run returns. */
static void done_cb(uv_async_t *a)
{
    ws_group *g = a->data;
    pthread_mutex_lock(&g->mu);
    bool all = g->n_gone == g->n;
    if (all)
        g->done_open = false;
    pthread_mutex_unlock(&g->mu);
    if (!all)
        return;
    ws_acceptor_close(g);
    if (g->signals_ready) {
        ws_close_if_open((uv_handle_t *)&g->sigint);
        ws_close_if_open((uv_handle_t *)&g->sigterm);
    }
    ws_close_if_open((uv_handle_t *)&g->done);
}

/* ---- signals (loop 0) ---------------------------------------------------------------- */

static void on_signal(uv_signal_t *h, int signum)
{
    ws_group *g = h->data;
    g->signals++;
    ws_group_log(g, CCH_LOG_INFO, "%s received%s", signum == SIGINT ? "SIGINT" : "SIGTERM",
         g->signals > 1 ? ": dropping the remaining connections" : "");
    if (g->signals == 1)
        ws_acceptor_close(g);
    for (int i = 0; i < g->n; i++)
        inbox_stop(&g->loops[i], g->signals > 1 ? 2 : 1);
}

/* ---- threads ------------------------------------------------------------------------ */

static void *loop_main(void *arg)
{
    ws_loop *l = arg;
    uv_run(&l->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    ws_close_if_open(h);
}

/* Closes a loop whose handles are all closing or closed. */
static void loop_finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    if (uv_loop_close(loop) == UV_EBUSY) {
        uv_walk(loop, walk_close, NULL);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
    }
}

/* ---- set-up and tear-down ------------------------------------------------------------ */

/* Makes loop k: its uv loop, mutex, app (set up by the user) and inbox. */
static int loop_init(ws_group *g, int k, cch_layer *layer, cch_ws_setup_fn setup, void *ud)
{
    ws_loop *l = &g->loops[k];
    l->g = g;
    l->index = k;
    atomic_init(&l->open, 0);
    atomic_init(&l->queued, 0);
    if (pthread_mutex_init(&l->mu, NULL) != 0)
        return CCH_ENOMEM;
    l->mu_ready = true;
    if (uv_loop_init(&l->loop) != 0)
        return CCH_EIO;
    l->loop_ready = true;
    if (uv_async_init(&l->loop, &l->inbox, inbox_cb) != 0)
        return CCH_EIO;
    l->inbox.data = l;
    l->inbox_ready = true;
    l->inbox_open = true;
    if (!(l->app = cch_app_new(cch_layer_ref(layer))))
        return CCH_ENOMEM;
    cch_app_set_wakeup(l->app, loop_wakeup, l);
    int rc = setup(l->app, k, ud);
    return rc < 0 ? rc : 0;
}

/* Frees everything once no thread runs (servers already gone or never made). Returns
 * the first error of cch_app_free, or 0. */
static int group_free(ws_group *g)
{
    int rc = 0;
    for (int k = 0; k < g->n; k++) {
        ws_loop *l = &g->loops[k];
        if (l->loop_ready)
            loop_finish(&l->loop);
        if (l->app) {
            int frc = cch_app_free(l->app);
            if (frc < 0 && rc == 0)
                rc = frc;
        }
        for (size_t i = 0; i < l->qn; i++)
            close(l->q[i].fd);
        cch__free(l->q);
        cch__free(l->take);
        if (l->mu_ready)
            pthread_mutex_destroy(&l->mu);
    }
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    if (g->reserve_fd >= 0)
        close(g->reserve_fd);
    pthread_mutex_destroy(&g->mu);
    cch__free(g->loops);
    cch__free(g);
    return rc;
}

/* Before any thread ran: stop what was started and close every handle (on the
 * calling thread; each loop then runs to its end in group_free). */
static void abandon(ws_group *g)
{
    for (int k = 0; k < g->n; k++) {
        ws_loop *l = &g->loops[k];
        if (l->srv) {
            l->srv->gone_hook = NULL;
            cch_ws_server_stop(l->srv, NULL, NULL);
            l->srv = NULL;
        }
        inbox_close(l);
    }
    ws_acceptor_close(g);
    if (g->signals_ready) {
        ws_close_if_open((uv_handle_t *)&g->sigint);
        ws_close_if_open((uv_handle_t *)&g->sigterm);
    }
    if (g->done_ready)
        ws_close_if_open((uv_handle_t *)&g->done);
}

/* The number of loops opts asks for, or CCH_EINVAL. */
static int loops_wanted(const cch_ws_options *opts)
{
    int n = opts ? opts->loops : 0;
    if (n == CCH_WS_LOOPS_PER_CPU) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > CCH_WS_MAX_LOOPS ? CCH_WS_MAX_LOOPS : (int)cpus;
    }
    if (n < 0 || n > CCH_WS_MAX_LOOPS)
        return CCH_EINVAL;
    return n < 1 ? 1 : n;
}

/* One loop: cch_ws_run on one app. */
static int run_one(const cch_ws_options *opts, cch_layer *layer, cch_ws_setup_fn setup,
                   void *ud)
{
    cch_app *app = cch_app_new(cch_layer_ref(layer));
    if (!app)
        return CCH_ENOMEM;
    int rc = setup(app, 0, ud);
    if (rc >= 0) {
        cch_ws_options o = opts ? *opts : (cch_ws_options){0};
        o.loops = 0;
        rc = cch_ws_run(app, &o);
    }
    int frc = cch_app_free(app);
    return rc < 0 ? rc : frc < 0 ? frc : 0;
}

/* Starts the servers, the acceptor and the signal handles (calling thread). */
static int group_start(ws_group *g)
{
    for (int k = 0; k < g->n; k++) {
        ws_loop *l = &g->loops[k];
        int rc = ws_server_start_owned(&l->srv, l->app, &l->loop, &g->opts, l, k);
        if (rc < 0)
            return rc;
        l->srv->gone_hook = server_gone;
        l->srv->gone_ud = l;
    }
    int rc = ws_server_listen_fd(g->loops[0].srv, &g->listen_fd);
    if (rc < 0)
        return rc;
    int port = g->loops[0].srv->port;
    for (int k = 1; k < g->n; k++)
        g->loops[k].srv->port = port;

    uv_loop_t *loop0 = &g->loops[0].loop;
    if (uv_async_init(loop0, &g->done, done_cb) != 0)
        return CCH_EIO;
    g->done.data = g;
    g->done_ready = true;
    g->done_open = true;
    uv_signal_init(loop0, &g->sigint);
    uv_signal_init(loop0, &g->sigterm);
    g->sigint.data = g->sigterm.data = g;
    g->signals_ready = true;
    uv_signal_start(&g->sigint, on_signal, SIGINT);
    uv_signal_start(&g->sigterm, on_signal, SIGTERM);
    if ((rc = ws_acceptor_start(g)) < 0)
        return rc;
    const char *h = g->opts.host;
    ws_group_log(g, CCH_LOG_INFO, "listening on %s%s%s:%d with %d loops", strchr(h, ':') ? "[" : "", h,
         strchr(h, ':') ? "]" : "", port, g->n);
    return 0;
}

int cch_ws_run_loops(const cch_ws_options *opts, cch_layer *layer, cch_ws_setup_fn setup,
                     void *ud)
{
    if (!layer || !setup)
        return CCH_EINVAL;
    int n = loops_wanted(opts);
    if (n < 0)
        return n;
    if (n == 1)
        return run_one(opts, layer, setup, ud);

    ws_group *g = cch__calloc(1, sizeof *g);
    if (!g)
        return CCH_ENOMEM;
    g->listen_fd = g->reserve_fd = -1;
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        cch__free(g);
        return CCH_ENOMEM;
    }
    g->opts = opts ? *opts : (cch_ws_options){0};
    g->opts.loops = 0;
    g->opts.ready = NULL;
    if (!g->opts.host || !g->opts.host[0])
        g->opts.host = CCH_WS_DEFAULT_HOST;
    g->max_conns = g->opts.max_connections ? g->opts.max_connections
                                           : CCH_WS_DEFAULT_MAX_CONNECTIONS;
    if (!(g->loops = cch__calloc((size_t)n, sizeof *g->loops))) {
        pthread_mutex_destroy(&g->mu);
        cch__free(g);
        return CCH_ENOMEM;
    }
    g->n = n;

    /* A client that resets while we write must not kill the process. */
    struct sigaction ign = {0}, old_pipe;
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe);

    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++)
        rc = loop_init(g, k, layer, setup, ud);
    if (rc == 0)
        rc = group_start(g);
    if (rc < 0) {
        abandon(g);
        group_free(g);
        sigaction(SIGPIPE, &old_pipe, NULL);
        return rc;
    }
    if (opts && opts->ready)
        opts->ready(g->loops[0].srv, opts->ready_ud);

    for (int k = 1; k < n; k++) {
        ws_loop *l = &g->loops[k];
        int err = pthread_create(&l->thread, NULL, loop_main, l);
        if (err != 0) {
            ws_group_log(g, CCH_LOG_ERROR, "cannot start the thread of loop %d: %s", k, strerror(err));
            rc = CCH_EIO;
            break;
        }
        l->thread_started = true;
    }
    if (rc < 0) {
        /* Nothing was accepted yet (loop 0 has not run): stop every loop; the loops
         * without a thread run to their end here, before loop 0. */
        g->signals = 1;
        ws_acceptor_close(g);
        for (int k = 0; k < n; k++)
            inbox_stop(&g->loops[k], 1);
        for (int k = 1; k < n; k++)
            if (!g->loops[k].thread_started)
                uv_run(&g->loops[k].loop, UV_RUN_DEFAULT);
    }

    uv_run(&g->loops[0].loop, UV_RUN_DEFAULT);
    for (int k = 1; k < n; k++)
        if (g->loops[k].thread_started)
            pthread_join(g->loops[k].thread, NULL);
    int frc = group_free(g);
    sigaction(SIGPIPE, &old_pipe, NULL);
    return rc < 0 ? rc : frc;
}
