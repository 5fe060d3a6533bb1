/* lib/ws/loops_internal.h - the state of cch_ws_run_loops, shared by loops.c (threads,
 * inboxes, shutdown) and accept.c (the acceptor on loop 0). */
#ifndef CCH_WS_LOOPS_INTERNAL_H
#define CCH_WS_LOOPS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "ws_internal.h"

/* A socket on its way to a loop. */
typedef struct ws_handoff {
    int fd;
    bool busy;              /* answer 503: the loops are full */
} ws_handoff;

typedef struct ws_group ws_group;

typedef struct ws_loop {
    ws_group *g;
    int index;
    uv_loop_t loop;
    bool loop_ready;        /* uv_loop_init done */
    cch_app *app;
    ws_server *srv;         /* this loop's thread only; NULL once gone */
    pthread_t thread;
    bool thread_started;

    uv_async_t inbox;       /* sockets handed over, stop requests */
    bool inbox_ready;       /* initialised */
    bool inbox_closed;      /* this loop's thread only */
    int stop_done;          /* this loop's thread only: stop level acted on */

    /* shared, under mu */
    pthread_mutex_t mu;
    bool mu_ready;
    ws_server *wake_target; /* the server whose async the app's wakeup signals */
    bool inbox_open;
    ws_handoff *q;          /* sockets queued for this loop */
    size_t qn, qcap;
    int stop_req;           /* stop level asked for: 1 graceful, 2 drop */

    /* this loop's thread only: the batch being taken over */
    ws_handoff *take;
    size_t take_cap;

    /* read by the acceptor */
    atomic_size_t open;     /* the server's n_conns */
    atomic_size_t queued;   /* sockets (not busy) queued and not yet taken */
} ws_loop;

struct ws_group {
    int n;
    ws_loop *loops;
    cch_ws_options opts;    /* as given, with loops = 0 and no ready callback */
    size_t max_conns;

    /* loop 0: the acceptor */
    int listen_fd;
    uv_poll_t poll;
    uv_timer_t retry;       /* resumes accepting after an error */
    bool poll_ready, retry_ready, accepting;
    int reserve_fd;         /* spent to accept-and-close when out of descriptors */
    unsigned rr;            /* where the next tie-break starts */

    /* loop 0: signals and the end */
    uv_signal_t sigint, sigterm;
    bool signals_ready;
    int signals;
    uv_async_t done;        /* a loop is gone */
    bool done_ready;

    /* shared, under mu */
    pthread_mutex_t mu;
    int n_gone;
    bool done_open;
};

/* loops.c: a line for the group's log (opts.log), closing a handle unless it is
 * already closing, and queueing a socket for loop l (from loop 0; closed when l no
 * longer takes any). */
void ws_group_log(ws_group *g, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void ws_close_if_open(uv_handle_t *h);
void ws_loop_push(ws_loop *l, int fd, bool busy);

/* accept.c: starts watching g->listen_fd on loop 0 (0 or CCH_EIO), and stops
 * accepting for good (closes the socket). */
int ws_acceptor_start(ws_group *g);
void ws_acceptor_close(ws_group *g);

#endif
