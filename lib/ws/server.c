/* lib/ws/server.c - the server: listen and accept, the loop hooks, stop, stats.
 *
 * Per server there is one listening socket, one read buffer that every read lands
 * in, one prepare handle that runs once per loop iteration just before the loop
 * blocks (it feeds pending input and flushes every connection that queued output,
 * one writev each), one async handle that the layer's wakeup signals (its callback
 * dispatches layer messages in batches) and one timer for all deadlines. A server
 * of cch_ws_run_loops (loops.c) has no listener: loop 0 accepts for every loop and
 * hands it sockets (ws_server_take). */
#include "alloc.h"
#include "ws_internal.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- logging ------------------------------------------------------------------- */

void ws_log(ws_server *s, int level, const char *fmt, ...)
{
    if (!s->opts.log || level > s->opts.log_level)
        return;
    char line[512];
    int n = s->owner ? snprintf(line, sizeof line, "loop %d: ", s->loop_index) : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    s->opts.log(s->opts.log_ud, level, line);
}

void ws_conn_peer(ws_conn *c, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    int port = 0;
    if (c->state != WS_DEAD && uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            snprintf(buf, cap, "[%s]:%d", ip, port);
            return;
        }
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(buf, cap, "%s:%d", ip, port);
}

/* ---- the dirty list and the prepare phase -------------------------------------- */

void ws_mark_dirty_slow(ws_conn *c)
{
    ws_server *s = c->srv;
    if ((c->flags & WS_F_DIRTY) || c->state == WS_DEAD)
        return;
    c->flags |= WS_F_DIRTY;
    c->dnext = NULL;
    if (s->dirty_tail)
        s->dirty_tail->dnext = c;
    else
        s->dirty_head = c;
    s->dirty_tail = c;
}

/* Takes the first connection off the dirty list; a connection closed meanwhile is
 * freed here (its close callback left that to us). */
static ws_conn *dirty_pop(ws_server *s)
{
    for (;;) {
        ws_conn *c = s->dirty_head;
        if (!c)
            return NULL;
        s->dirty_head = c->dnext;
        if (!s->dirty_head)
            s->dirty_tail = NULL;
        c->dnext = NULL;
        c->flags &= (uint16_t)~WS_F_DIRTY;
        if (c->flags & WS_F_FREE_ME) {
            cch__free(c);
            continue;
        }
        return c;
    }
}

/* Feeds pending input and flushes every dirty connection (one writev each). */
static void flush_dirty(ws_server *s)
{
    /* Connections marked while this runs are processed in the same pass. */
    ws_conn *c;
    while ((c = dirty_pop(s)) != NULL) {
        if (c->state == WS_DEAD)
            continue;
        if (c->flags & WS_F_PENDING_INPUT)
            ws_conn_pending_input(c);
        if (c->state != WS_DEAD && !(c->flags & WS_F_DIRTY))
            ws_out_flush(c);
    }
}

static void dispatch(ws_server *s);

/* Once per iteration, just before the loop blocks: everything this iteration read
 * and queued is dispatched now (H12, issue 5: not one iteration later from the async
 * callback), then every dirty connection is written. */
static void prepare_cb(uv_prepare_t *p)
{
    ws_server *s = p->data;
    if (__atomic_exchange_n(&s->dispatch_due, 0, __ATOMIC_ACQ_REL))
        dispatch(s);
    flush_dirty(s);
    if (s->n_paused || s->flow_off)
        ws_flow_check(s);
}

/* ---- dispatch -------------------------------------------------------------------- */

void ws_server_wakeup(ws_server *s)
{
    __atomic_store_n(&s->dispatch_due, 1, __ATOMIC_RELEASE);
    uv_async_send(&s->async);
}

static void wakeup(void *ud)
{
    ws_server_wakeup(ud);
}

/* Dispatches what the layer holds (up to dispatch_batch per iteration) in chunks,
 * flushing the connections each chunk made dirty before the next one (H12, issue 5):
 * every message read in this iteration is delivered now, in one writev per member,
 * while the members a chunk touched are still in the cache. */
#define WS_DISPATCH_CHUNK 1024u

static void async_cb(uv_async_t *a)
{
    ws_server *s = a->data;
    __atomic_store_n(&s->dispatch_due, 0, __ATOMIC_RELEASE);
    dispatch(s);
}

static void dispatch(ws_server *s)
{
    size_t batch = s->opts.dispatch_batch, done = 0;
    while (done < batch) {
        size_t want = batch - done < WS_DISPATCH_CHUNK ? batch - done : WS_DISPATCH_CHUNK;
        int n = cch_app_dispatch(s->app, want);
        if (n < 0) {
            ws_log(s, CCH_LOG_ERROR, "dispatch failed: %s", cch_strerror(n));
            return;
        }
        done += (size_t)n;
        if (n > 0)
            ws_timer_want_idle_poll(s);
        if ((size_t)n < want)
            return;
        flush_dirty(s);
    }
    uv_async_send(&s->async); /* more pending: continue next iteration */
}

void ws_server_idle_poll(ws_server *s)
{
    dispatch(s);
    if (!s->idle_poll_at)       /* nothing came: quiet */
        ws_out_trim_pools(s, true);
}

/* ---- reading --------------------------------------------------------------------- */

void ws_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    ws_conn *c = (ws_conn *)h;
    if (cch_layer_congested(c->srv->layer) && ws_flow_hold(c)) {
        *buf = uv_buf_init(NULL, 0); /* ws_read_cb gets UV_ENOBUFS: pause c (flow.c) */
        return;
    }
    *buf = uv_buf_init(c->srv->read_buf, WS_READ_BUF_SIZE);
}

void ws_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    ws_conn *c = (ws_conn *)stream;
    if (nread > 0) {
        c->srv->stats.bytes_in += (uint64_t)nread;
        ws_conn_on_data(c, buf->base, (size_t)nread);
    } else if (nread == UV_ENOBUFS) {
        ws_flow_pause(c);
    } else if (nread < 0) {
        ws_conn_on_eof(c);
    }
}

/* ---- accepting ------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h);
static void reject_unallocated(ws_server *s);

static void spare_closed(uv_handle_t *h)
{
    ws_server *s = h->data;
    s->spare_busy = false;
    if (s->accept_pending && !s->stopping) {
        s->accept_pending = false;
        reject_unallocated(s);
    }
    handle_closed(h);
}

/* No memory for a connection: libuv pauses the listener until we accept, so accept
 * into the server's spare handle and close it at once. */
static void reject_unallocated(ws_server *s)
{
    if (s->spare_busy) {
        s->accept_pending = true;
        return;
    }
    if (uv_tcp_init(s->loop, &s->spare) != 0)
        return;
    s->spare.data = s;
    s->spare_busy = true;
    s->handles_open++;
    uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&s->spare);
    uv_close((uv_handle_t *)&s->spare, spare_closed);
}

static void conn_accepted(ws_server *s, ws_conn *c, bool busy);

static void on_connection(uv_stream_t *listener, int status)
{
    ws_server *s = listener->data;
    if (status < 0) {
        ws_log(s, CCH_LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    ws_conn *c = ws_conn_new(s);
    if (!c) {
        ws_log(s, CCH_LOG_ERROR, "out of memory: dropping a new connection");
        reject_unallocated(s);
        return;
    }
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        ws_conn_discard_new(c);
        return;
    }
    conn_accepted(s, c, false);
}

int ws_server_take(ws_server *s, uv_os_sock_t fd, bool busy)
{
    ws_conn *c = ws_conn_new(s);
    if (!c)
        return CCH_ENOMEM;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        ws_conn_discard_new(c);
        return CCH_EIO;
    }
    conn_accepted(s, c, busy);
    return 0;
}

int ws_server_adopt(ws_server *s, uv_os_sock_t fd)
{
    return ws_server_take(s, fd, false);
}

/* A new client socket: counted, answered 503 beyond max_connections (or when the
 * acceptor of several loops says `busy`), else given the handshake deadline; reading
 * starts. */
static void conn_accepted(ws_server *s, ws_conn *c, bool busy)
{
    s->stats.tcp_accepted++;
    s->stats.tcp_active++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (busy || s->n_conns >= s->opts.max_connections || s->stopping) {
        c->flags |= WS_F_BUSY;
        s->stats.rejected_busy++;
        ws_conn_start(c);
        ws_http_error(c, 503, "Retry-After: 1\r\n");
        return;
    }
    s->n_conns++;
    if (s->owner)
        ws_loop_publish(s->owner, s->n_conns);
    ws_timer_set(c, WS_TL_HANDSHAKE, s->opts.handshake_timeout_ms);
    ws_conn_start(c);
}

/* ---- options --------------------------------------------------------------------- */

static int apply_options(ws_server *s, const cch_ws_options *in)
{
    cch_ws_options o = in ? *in : (cch_ws_options){0};
    if (!o.host || !o.host[0])
        o.host = CCH_WS_DEFAULT_HOST;
    if (o.port == 0)
        o.port = CCH_WS_DEFAULT_PORT;
    if (o.port == CCH_WS_ANY_PORT)
        o.port = 0;
    else if (o.port < 1 || o.port > 65535)
        return CCH_EINVAL;
    if (o.backlog <= 0)
        o.backlog = CCH_WS_DEFAULT_BACKLOG;
    if (!o.max_header_bytes)
        o.max_header_bytes = CCH_WS_DEFAULT_MAX_HEADER_BYTES;
    if (o.max_header_bytes < 64 || o.max_header_bytes > UINT32_MAX / 2)
        return CCH_EINVAL;
    if (!o.max_message_bytes)
        o.max_message_bytes = CCH_WS_DEFAULT_MAX_MESSAGE_BYTES;
    if (o.max_message_bytes > (size_t)1 << 30)
        return CCH_EINVAL; /* one frame must fit a uv_buf_t */
    if (!o.max_connections)
        o.max_connections = CCH_WS_DEFAULT_MAX_CONNECTIONS;
    if (!o.max_outbound_bytes)
        o.max_outbound_bytes = CCH_WS_DEFAULT_MAX_OUTBOUND_BYTES;
    if (!o.handshake_timeout_ms)
        o.handshake_timeout_ms = CCH_WS_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!o.idle_timeout_ms)
        o.idle_timeout_ms = CCH_WS_DEFAULT_IDLE_TIMEOUT_MS;
    if (!o.close_timeout_ms)
        o.close_timeout_ms = CCH_WS_DEFAULT_CLOSE_TIMEOUT_MS;
    if (!o.dispatch_batch)
        o.dispatch_batch = CCH_WS_DEFAULT_DISPATCH_BATCH;
    if (o.dispatch_batch > INT_MAX)
        return CCH_EINVAL;
    if (o.loops != 0 && o.loops != 1)
        return CCH_EINVAL; /* a server is one loop; several are cch_ws_run_loops's */
    s->opts = o;
    if (!(s->host = cch__strdup(o.host)))
        return CCH_ENOMEM;
    s->opts.host = s->host;
    s->opts.static_dir = NULL;
    if (o.static_dir) {
        char resolved[PATH_MAX];
        struct stat st;
        if (!realpath(o.static_dir, resolved) || stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode)) {
            ws_log(s, CCH_LOG_ERROR, "static directory %s: %s", o.static_dir,
                   errno ? strerror(errno) : "not a directory");
            return CCH_EINVAL;
        }
        /* "/" as the root would make every path "inside": keep it without the slash. */
        size_t n = strlen(resolved);
        if (n == 1)
            resolved[0] = '\0', n = 0;
        if (!(s->static_dir = cch__strdup(resolved)))
            return CCH_ENOMEM;
        s->static_dir_len = n;
        s->opts.static_dir = s->static_dir;
    }
    return 0;
}

/* Creates, binds and listens a socket for host:port. Returns the fd or a code. */
int ws_server_listen_fd(ws_server *s, int *out_fd)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->opts.port);
    int gai = getaddrinfo(s->opts.host, port, &hints, &res);
    if (gai != 0 || !res) {
        ws_log(s, CCH_LOG_ERROR, "cannot resolve %s: %s", s->opts.host, gai_strerror(gai));
        return CCH_EINVAL;
    }
    int err = 0, fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, s->opts.backlog) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        ws_log(s, CCH_LOG_ERROR, "cannot listen on %s:%d: %s", s->opts.host, s->opts.port,
               strerror(err));
        return CCH_EIO;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    return 0;
}

static void free_server(ws_server *s)
{
    ws_input_free_spare(s);
    ws_http_free_pool(s);
    ws_out_free_pools(s);
    ws_flow_free(s);
    cch__free(s->read_buf);
    while (dirty_pop(s))
        ;
    cch__free(s->host);
    cch__free(s->static_dir);
    cch__free(s);
}

static void handle_closed(uv_handle_t *h)
{
    ws_server *s = h->data;
    if (--s->handles_open > 0)
        return;
    cch_ws_stopped_fn done = s->stopped;
    void *done_ud = s->stopped_ud;
    void (*gone)(void *) = s->gone_hook;
    void *gone_ud = s->gone_ud;
    free_server(s);
    if (done)
        done(done_ud);
    if (gone)
        gone(gone_ud);
}

static int server_start(ws_server **out, cch_app *app, uv_loop_t *loop,
                        const cch_ws_options *opts, struct ws_loop *owner, int index)
{
    if (out)
        *out = NULL;
    if (!out || !app || !loop)
        return CCH_EINVAL;
    ws_server *s = cch__calloc(1, sizeof *s);
    if (!s)
        return CCH_ENOMEM;
    ws_out_init_pools(s);
    ws_http_init_pool(s);
    /* Log through the caller's sink while the options are checked. */
    if (opts) {
        s->opts.log = opts->log;
        s->opts.log_ud = opts->log_ud;
        s->opts.log_level = opts->log_level;
    }
    s->owner = owner;
    s->loop_index = index;
    int rc = apply_options(s, opts);
    if (rc < 0) {
        free_server(s);
        return rc;
    }
    s->loop = loop;
    s->app = app;
    s->layer = cch_app_layer(app);
    s->timer_due = UINT64_MAX;
    if (!(s->read_buf = cch__malloc(WS_READ_BUF_SIZE))) {
        free_server(s);
        return CCH_ENOMEM;
    }
    int fd = -1;
    if (!owner && (rc = ws_server_listen_fd(s, &fd)) < 0) {
        free_server(s);
        return rc;
    }
    /* The async handle is the only one whose init can fail: first. */
    int uerr = uv_async_init(loop, &s->async, async_cb);
    if (uerr != 0) {
        ws_log(s, CCH_LOG_ERROR, "uv_async_init: %s", uv_strerror(uerr));
        if (fd >= 0)
            close(fd);
        free_server(s);
        return CCH_EIO;
    }
    s->async.data = s;
    uv_prepare_init(loop, &s->prepare);
    s->prepare.data = s;
    uv_timer_init(loop, &s->timer);
    ws_timer_init(s);
    s->timer.data = s;
    s->handles_open = 3;
    if (owner) {
        uv_prepare_start(&s->prepare, prepare_cb);
        uv_unref((uv_handle_t *)&s->prepare);
        ws_loop_attach(owner, s);
        *out = s;
        uv_async_send(&s->async);
        return 0;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->handles_open++;
    if ((uerr = uv_tcp_open(&s->listener, fd)) != 0 ||
        (uerr = uv_listen((uv_stream_t *)&s->listener, s->opts.backlog, on_connection)) != 0) {
        ws_log(s, CCH_LOG_ERROR, "cannot listen: %s", uv_strerror(uerr));
        if (uv_fileno((uv_handle_t *)&s->listener, &(uv_os_fd_t){0}) != 0)
            close(fd);
        /* The handles are closed on the loop; the server is freed there. */
        uv_close((uv_handle_t *)&s->listener, handle_closed);
        uv_close((uv_handle_t *)&s->prepare, handle_closed);
        uv_close((uv_handle_t *)&s->async, handle_closed);
        uv_close((uv_handle_t *)&s->timer, handle_closed);
        return CCH_EIO;
    }
    uv_prepare_start(&s->prepare, prepare_cb);
    uv_unref((uv_handle_t *)&s->prepare);
    cch_app_set_wakeup(app, wakeup, s);
    ws_log(s, CCH_LOG_INFO, "listening on %s%s%s:%d", strchr(s->opts.host, ':') ? "[" : "",
           s->opts.host, strchr(s->opts.host, ':') ? "]" : "", s->port);
    *out = s;
    if (s->opts.ready)
        s->opts.ready(s, s->opts.ready_ud);
    /* Messages may have been queued for the app before: look once. */
    uv_async_send(&s->async);
    return 0;
}

int cch_ws_server_start(cch_ws_server **out, cch_app *app, struct uv_loop_s *loop,
                        const cch_ws_options *opts)
{
    return server_start(out, app, loop, opts, NULL, 0);
}

int ws_server_start_owned(ws_server **out, cch_app *app, uv_loop_t *loop,
                          const cch_ws_options *opts, struct ws_loop *owner, int index)
{
    return server_start(out, app, loop, opts, owner, index);
}

int cch_ws_server_port(const cch_ws_server *s)
{
    return s ? s->port : CCH_EINVAL;
}

void cch_ws_server_stats(const cch_ws_server *s, cch_ws_stats *out)
{
    if (!out)
        return;
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = s->stats;
}

/* ---- stopping -------------------------------------------------------------------- */

void ws_server_maybe_done(ws_server *s)
{
    /* Called after every connection's end (conn.c): the acceptor of several loops
     * learns the new count here. */
    if (s->owner)
        ws_loop_publish(s->owner, s->n_conns);
    if (!s->stopping || s->stats.tcp_active > 0 || s->closing_handles)
        return;
    s->closing_handles = true;
    /* No wakeup may signal the async once it is closing: a loop of cch_ws_run_loops
     * is woken from other threads, so its loop detaches under its lock. */
    if (s->owner)
        ws_loop_detach(s->owner);
    else
        cch_app_set_wakeup(s->app, NULL, NULL);
    uv_close((uv_handle_t *)&s->prepare, handle_closed);
    uv_close((uv_handle_t *)&s->async, handle_closed);
    uv_close((uv_handle_t *)&s->timer, handle_closed);
}

int cch_ws_server_stop(cch_ws_server *s, cch_ws_stopped_fn done, void *ud)
{
    if (!s)
        return CCH_EINVAL;
    if (s->stopping) {
        /* Second call: drop everything that is left. */
        for (int which = 1; which < WS_TL_COUNT; which++)
            while (s->lists[which].head)
                ws_conn_kill(s->lists[which].head);
        if (done && !s->stopped) {
            s->stopped = done;
            s->stopped_ud = ud;
        }
        return 0;
    }
    s->stopping = true;
    s->stopped = done;
    s->stopped_ud = ud;
    ws_flow_resume(s, false); /* paused clients must read their close */
    ws_log(s, CCH_LOG_INFO, "shutting down: %llu connection(s) open",
           (unsigned long long)s->stats.tcp_active);
    /* Stop accepting now (loop 0 accepts for a server of several loops). */
    if (!s->owner)
        uv_close((uv_handle_t *)&s->listener, handle_closed);
    ws_conn *c;
    while ((c = s->lists[WS_TL_HANDSHAKE].head) != NULL)
        ws_conn_kill(c);
    while ((c = s->lists[WS_TL_IDLE].head) != NULL) {
        if (c->state == WS_OPEN)
            ws_conn_close(c, 1001, "server shutting down");
        if (s->lists[WS_TL_IDLE].head == c)
            ws_conn_kill(c);
    }
    ws_server_maybe_done(s);
    return 0;
}
