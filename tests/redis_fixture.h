/* tests/redis_fixture.h - helpers for the Redis layer's tests: a redis-server of our
 * own on a free loopback port (persistence off, stopped at the end), a receiver that
 * waits for deliveries on a condition variable (bounded, no sleeps), and a raw hiredis
 * connection to look at what Redis holds. Header-only: each test includes it once. */
#ifndef CCH_TEST_REDIS_FIXTURE_H
#define CCH_TEST_REDIS_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <cchannels/cchannels.h>
#include <cchannels/redis_layer.h>

#define FX_WAIT_MS 5000 /* the longest any one wait may take */

/* ---- a redis-server ------------------------------------------------------------------- */

typedef struct fx_redis {
    pid_t pid;
    int port;
    char url[64];
} fx_redis;

static inline int fx_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static inline bool fx_redis_available(void) {
    return access("/usr/bin/redis-server", X_OK) == 0;
}

/* A raw connection to the server (NULL when it does not answer). */
static inline redisContext *fx_raw(const fx_redis *r) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static inline bool fx_ping(const fx_redis *r) {
    redisContext *c = fx_raw(r);
    if (!c) return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    freeReplyObject(rep);
    redisFree(c);
    return ok;
}

/* Starts redis-server on r->port (a free one when 0). Returns 0 or -1. */
static inline int fx_redis_start(fx_redis *r) {
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = r->port ? r->port : fx_free_port();
        char portbuf[16];
        snprintf(portbuf, sizeof portbuf, "%d", port);
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            int devnull = open("/dev/null", 1);
            if (devnull >= 0) {
                dup2(devnull, 1);
                dup2(devnull, 2);
            }
            execl("/usr/bin/redis-server", "redis-server", "--port", portbuf, "--bind",
                  "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
            _exit(127);
        }
        r->pid = pid;
        r->port = port;
        snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", port);
        for (int i = 0; i < 250; i++) { /* up to 5 s */
            if (fx_ping(r)) return 0;
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) break; /* exited: port taken? */
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        r->pid = 0;
    }
    return -1;
}

static inline void fx_redis_stop(fx_redis *r) {
    if (r->pid <= 0) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

/* ---- a receiver that can be waited on ------------------------------------------------------ */

typedef struct fx_recv {
    cch_layer *layer;
    cch_receiver *r;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wakes;
} fx_recv;

static inline void fx_wakeup(void *ud) {
    fx_recv *w = ud;
    pthread_mutex_lock(&w->mu);
    w->wakes++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static inline void fx_recv_init(fx_recv *w, cch_layer *l) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->layer = l;
    w->r = cch_layer_receiver_new(l, fx_wakeup, w);
}

static inline void fx_recv_free(fx_recv *w) {
    cch_layer_receiver_free(w->layer, w->r);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static inline void fx_deadline(struct timespec *dl, long ms) {
    clock_gettime(CLOCK_REALTIME, dl);
    dl->tv_sec += ms / 1000;
    dl->tv_nsec += (ms % 1000) * 1000000L;
    if (dl->tv_nsec >= 1000000000L) {
        dl->tv_sec++;
        dl->tv_nsec -= 1000000000L;
    }
}

/* Collects deliveries until `want` arrived or `ms` passed; returns how many. */
static inline int fx_collect(fx_recv *w, cch_delivery *out, int want, long ms) {
    struct timespec dl;
    fx_deadline(&dl, ms);
    int n = 0;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int seen = w->wakes;
        pthread_mutex_unlock(&w->mu);
        int k = cch_layer_poll(w->layer, w->r, out + n, (size_t)(want - n));
        if (k > 0) n += k;
        if (n >= want) return n;
        pthread_mutex_lock(&w->mu);
        int rc = 0;
        while (w->wakes == seen && rc == 0) rc = pthread_cond_timedwait(&w->cv, &w->mu, &dl);
        pthread_mutex_unlock(&w->mu);
        if (rc == ETIMEDOUT) {
            k = cch_layer_poll(w->layer, w->r, out + n, (size_t)(want - n));
            return k > 0 ? n + k : n;
        }
    }
}

static inline void fx_drop(cch_delivery *d, int n) {
    for (int i = 0; i < n; i++) cch_msg_unref(d[i].msg);
}

#endif
