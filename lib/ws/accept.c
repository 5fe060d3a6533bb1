/* lib/ws/accept.c - the acceptor of cch_ws_run_loops: loop 0 accepts for every loop.
 *
 * One listening socket, watched by a uv_poll on loop 0, which accepts (accept4) and
 * hands each socket to the loop with the fewest connections (ties go round-robin):
 * to its own server directly, to another loop through that loop's inbox (loops.c).
 * Each loop publishes its count of connections (an atomic, written by its server
 * after every accept and close); the sockets queued for it count too. Once all loops
 * together hold max_connections, the socket still goes to a loop, marked busy: that
 * loop answers 503. Out of descriptors, the acceptor does what libuv does: spends a
 * reserve descriptor to accept and close what waits.
 *
 * Why hand-off and not SO_REUSEPORT: Debian 12's libuv (1.44) has no
 * UV_TCP_REUSEPORT, which would be easy to work around, but SO_REUSEPORT also lets a
 * second process of the same user bind the same port and silently take half of the
 * connections, spreads clients by a hash of their addresses (unevenly for a few
 * clients, never by load), and resets what waits in a closing listener's backlog.
 * One socket keeps EADDRINUSE, CCH_WS_ANY_PORT and the backlog as they are for one
 * loop, and balances by load. The cost is one lock and one wakeup per new
 * connection, nothing per message. */
#include "loops_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void listen_fd_closed(uv_handle_t *h)
{
    ws_group *g = h->data;
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    g->listen_fd = -1;
}

/* Stops accepting for good: the poll, then the socket (in the poll's close callback,
 * as libuv wants), and the retry timer. */
void ws_acceptor_close(ws_group *g)
{
    g->accepting = false;
    if (g->retry_ready)
        ws_close_if_open((uv_handle_t *)&g->retry);
    if (g->poll_ready) {
        if (!uv_is_closing((uv_handle_t *)&g->poll))
            uv_close((uv_handle_t *)&g->poll, listen_fd_closed);
    } else if (g->listen_fd >= 0) {
        close(g->listen_fd);
        g->listen_fd = -1;
    }
    if (g->reserve_fd >= 0) {
        close(g->reserve_fd);
        g->reserve_fd = -1;
    }
}

/* The loop with the fewest connections (open + queued), ties round-robin; *busy when
 * all loops together hold max_connections. */
static ws_loop *pick_loop(ws_group *g, bool *busy)
{
    size_t best = SIZE_MAX, total = 0;
    int pick = 0;
    for (int i = 0; i < g->n; i++) {
        int k = (int)((g->rr + (unsigned)i) % (unsigned)g->n);
        ws_loop *l = &g->loops[k];
        size_t load = atomic_load_explicit(&l->open, memory_order_relaxed) +
                      atomic_load_explicit(&l->queued, memory_order_relaxed);
        total += load;
        if (load < best) {
            best = load;
            pick = k;
        }
    }
    g->rr = (unsigned)(pick + 1) % (unsigned)g->n;
    *busy = total >= g->max_conns;
    return &g->loops[pick];
}

static void hand_off(ws_group *g, int fd)
{
    bool busy;
    ws_loop *l = pick_loop(g, &busy);
    if (l->index != 0) {
        ws_loop_push(l, fd, busy);
        return;
    }
    /* Loop 0 is this thread: straight to its server. */
    if (!l->srv || l->stop_done > 0 || ws_server_take(l->srv, fd, busy) < 0)
        close(fd);
}

static void on_acceptable(uv_poll_t *p, int status, int events);

static void retry_cb(uv_timer_t *t)
{
    ws_group *g = t->data;
    if (g->accepting)
        uv_poll_start(&g->poll, UV_READABLE, on_acceptable);
}

/* Out of descriptors: as libuv does, spend the reserve one to accept and close what
 * waits (the clients see the connection closed rather than hang), then take it back.
 * Without a reserve, pause for 100 ms. */
static void accept_starved(ws_group *g, int err)
{
    ws_group_log(g, CCH_LOG_WARN, "loop 0: accept failed: %s", strerror(err));
    if (g->reserve_fd >= 0) {
        close(g->reserve_fd);
        g->reserve_fd = -1;
        for (;;) {
            int fd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0 && errno == EINTR)
                continue;
            if (fd < 0)
                break;
            close(fd);
        }
        g->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (g->reserve_fd >= 0)
            return;
    }
    uv_poll_stop(&g->poll);
    uv_timer_start(&g->retry, retry_cb, 100, 0);
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
    (void)events;
    ws_group *g = p->data;
    if (!g->accepting)
        return;
    if (status < 0) {
        ws_group_log(g, CCH_LOG_WARN, "loop 0: accept failed: %s", uv_strerror(status));
        return;
    }
    /* A bounded batch per callback: the poll is level-triggered. */
    for (int i = 0; i < 256; i++) {
        int fd = accept4(g->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            hand_off(g, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
        case EPERM:
            continue; /* this client's trouble (accept(2): treat like EAGAIN's retry) */
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            accept_starved(g, errno);
            return;
        default:
            ws_group_log(g, CCH_LOG_ERROR, "loop 0: accept failed: %s", strerror(errno));
            uv_poll_stop(&g->poll);
            uv_timer_start(&g->retry, retry_cb, 100, 0);
            return;
        }
    }
}

int ws_acceptor_start(ws_group *g)
{
    uv_loop_t *loop0 = &g->loops[0].loop;
    uv_timer_init(loop0, &g->retry);
    g->retry.data = g;
    g->retry_ready = true;
    if (uv_poll_init_socket(loop0, &g->poll, g->listen_fd) != 0) {
        ws_group_log(g, CCH_LOG_ERROR, "cannot watch the listening socket");
        return CCH_EIO;
    }
    g->poll.data = g;
    g->poll_ready = true;
    g->accepting = true;
    g->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uv_poll_start(&g->poll, UV_READABLE, on_acceptable);
    return 0;
}
