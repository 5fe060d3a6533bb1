/* bench/bench_redis.c - group_send through Redis between two processes, on the
 * Redis layer (the C half of bench/run_redis_bench.py; bench/bench_redis.py is the
 * channels_redis half, doing the same work).
 *
 *   bench_redis recv URL GROUP MEMBERS COUNT   joins MEMBERS channels to GROUP, prints
 *       "ready", then receives COUNT messages on each and prints one JSON line:
 *       {"received": n, "first_sent_ns": t, "last_recv_ns": t, "lat_us": [p50, p90, p99, max]}
 *   bench_redis send URL GROUP COUNT RATE      group_sends COUNT messages (RATE per
 *       second, 0: as fast as it can), then prints {"sent": n, "secs": s}
 *
 * Each message is {"type": "bench.message", "t": <send time, ns>, "i": <index>,
 * "message": "hello world"}; latency is receive time minus "t" (one machine, one
 * clock). Both sides use capacity 100000 so that nothing is dropped for capacity. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cchannels/cchannels.h>
#include <cchannels/redis_layer.h>

#define CAPACITY 100000

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void log_line(void *ud, int level, const char *msg) {
    (void)ud;
    if (level <= CCH_LOG_WARN) fprintf(stderr, "bench_redis: %s\n", msg);
}

static cch_layer *open_layer(const char *url) {
    const char *urls[1] = {url};
    cch_redis_layer_options o = {.urls = urls, .n_urls = 1, .capacity = CAPACITY,
                                 .max_pending = 100000, .log = log_line};
    cch_layer *l = NULL;
    if (cch_redis_layer_new(&o, &l) != 0 || cch_redis_layer_sync(l, 10000) != 0) {
        fprintf(stderr, "bench_redis: cannot use %s\n", url);
        exit(1);
    }
    return l;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int woken;

static void wakeup(void *ud) {
    (void)ud;
    pthread_mutex_lock(&mu);
    woken = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int do_recv(const char *url, const char *group, int members, long count) {
    cch_layer *l = open_layer(url);
    cch_receiver *r = cch_layer_receiver_new(l, wakeup, NULL);
    char (*names)[CCH_NAME_BUF] = calloc((size_t)members, CCH_NAME_BUF);
    for (int i = 0; i < members; i++) {
        cch_layer_new_channel(l, NULL, r, NULL, names[i], CCH_NAME_BUF);
        cch_layer_group_add(l, group, names[i]);
    }
    cch_redis_layer_sync(l, 10000);
    printf("ready\n");
    fflush(stdout);
    long want = count * members, got = 0;
    uint64_t *lat = malloc(sizeof *lat * (size_t)want);
    uint64_t first_sent = UINT64_MAX, last_recv = 0, idle_since = now_ns();
    cch_delivery d[256];
    while (got < want) {
        pthread_mutex_lock(&mu);
        if (!woken) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += 1;
            pthread_cond_timedwait(&cv, &mu, &dl);
        }
        woken = 0;
        pthread_mutex_unlock(&mu);
        int n;
        bool any = false;
        while ((n = cch_layer_poll(l, r, d, 256)) > 0) {
            uint64_t t = now_ns();
            any = true;
            for (int i = 0; i < n; i++) {
                int64_t sent = 0;
                cch_msg_field_int(d[i].msg, "t", &sent);
                if ((uint64_t)sent < first_sent) first_sent = (uint64_t)sent;
                if (got < want) lat[got++] = t > (uint64_t)sent ? t - (uint64_t)sent : 0;
                cch_msg_unref(d[i].msg);
            }
            last_recv = t;
        }
        if (any) idle_since = now_ns();
        else if (now_ns() - idle_since > 10000000000ull) break; /* 10 s without anything */
    }
    qsort(lat, (size_t)got, sizeof *lat, cmp_u64);
#define PCT(p) (got ? lat[(size_t)((double)(got - 1) * (p))] / 1000 : 0)
    printf("{\"received\": %ld, \"first_sent_ns\": %" PRIu64 ", \"last_recv_ns\": %" PRIu64
           ", \"lat_us\": [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "]}\n",
           got, first_sent, last_recv, PCT(0.5), PCT(0.9), PCT(0.99), PCT(1.0));
    fflush(stdout);
    for (int i = 0; i < members; i++) {
        cch_layer_group_discard(l, group, names[i]);
        cch_layer_release_channel(l, names[i]);
    }
    cch_redis_layer_sync(l, 10000);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    free(names);
    free(lat);
    return got == want ? 0 : 1;
}

static int do_send(const char *url, const char *group, long count, double rate) {
    cch_layer *l = open_layer(url);
    uint64_t start = now_ns();
    char body[160];
    for (long i = 0; i < count; i++) {
        if (rate > 0) { /* paced: wait for this message's slot */
            uint64_t due = start + (uint64_t)((double)i * 1e9 / rate);
            struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
            while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {
            }
        }
        int n = snprintf(body, sizeof body, "{\"t\":%" PRIu64 ",\"i\":%ld,\"message\":\"hello world\"}",
                         now_ns(), i);
        cch_msg *m = NULL;
        cch_msg_create(&m, "bench.message", body, (size_t)n);
        int rc;
        while ((rc = cch_layer_group_send(l, group, m, NULL, NULL)) == CCH_ELIMIT)
            cch_redis_layer_sync(l, 1000); /* let the queue drain */
        cch_msg_unref(m);
        if (rc < 0) {
            fprintf(stderr, "bench_redis: group_send: %s\n", cch_strerror(rc));
            return 1;
        }
    }
    cch_redis_layer_sync(l, 30000);
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"sent\": %ld, \"secs\": %.6f}\n", count, secs);
    cch_layer_unref(l);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "recv"))
        return do_recv(argv[2], argv[3], atoi(argv[4]), atol(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "send"))
        return do_send(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: %s recv URL GROUP MEMBERS COUNT | send URL GROUP COUNT RATE\n",
            argv[0]);
    return 2;
}
