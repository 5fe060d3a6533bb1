/* bench/bench_fanout.c - in-process group_send fanout: deliveries per second and
 * allocations per delivery, for groups of 1, 100 and 10 000 members.
 *
 * Two measurements per group size:
 *  app    the full path: one app (cch_app_new) on a memory layer, N connections opened
 *         with cch_conn_open on a no-op transport, each joined to the group in its
 *         connect callback. Each round creates a message, group_sends it
 *         (cch_layer_group_send), and runs cch_app_dispatch until it returns 0: every
 *         delivery runs the consumer's handler for the type, which counts it.
 *  layer  the layer alone: N channels bound to one receiver; each round group_sends
 *         and polls, calling a handler function per delivery and dropping the
 *         reference, as a host without the app would.
 * Allocations are counted with cch_replace_allocator; one round is run before timing
 * so the per-channel rings have their working size.
 *
 * Usage: bench_fanout [total deliveries per measurement, default 20000000] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cchannels/cchannels.h"

/* ---- counting allocator ----------------------------------------------------------- */

static uint64_t n_allocs;
static void *count_malloc(size_t n) {
    n_allocs++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
    n_allocs++;
    return realloc(p, n);
}
static void *count_calloc(size_t c, size_t n) {
    n_allocs++;
    return calloc(c, n);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char BODY[] = "{\"text\":\"hello, room\"}";

typedef struct result {
    uint64_t deliveries;
    uint64_t sends;
    uint64_t allocs;
    double seconds;
} result;

/* ---- the app path -------------------------------------------------------------------- */

static uint64_t handled;

static void on_msg(cch_conn *c, const cch_msg *m) {
    (void)c;
    (void)m;
    handled++;
}

static int on_connect(cch_conn *c) {
    if (cch_group_add(c, "bench") != 0) return -1;
    return cch_accept(c, NULL);
}

static const cch_handler handlers[] = {{"bench.message", on_msg}, {NULL, NULL}};
static const cch_consumer_class bench_class = {
    .connect = on_connect,
    .handlers = handlers,
};

static int tp_accept(void *t, const char *sub) { (void)t, (void)sub; return 0; }
static int tp_reject(void *t, int status) { (void)t, (void)status; return 0; }
static int tp_send(void *t, const void *d, size_t n, bool bin) {
    (void)t, (void)d, (void)n, (void)bin;
    return 0;
}
static int tp_close(void *t, int code, const char *reason) {
    (void)t, (void)code, (void)reason;
    return 0;
}
static const cch_transport noop_transport = {
    .accept = tp_accept, .reject = tp_reject, .send = tp_send, .close = tp_close,
};

static int app_round(cch_app *app, cch_layer *l) {
    cch_msg *m = cch_msg_new("bench.message", BODY, sizeof BODY - 1);
    if (!m) return -1;
    int rc = cch_layer_group_send(l, "bench", m, NULL, NULL);
    cch_msg_unref(m);
    if (rc != 0) return rc;
    while ((rc = cch_app_dispatch(app, 0)) > 0) {
    }
    return rc;
}

static int bench_app(size_t members, uint64_t rounds, result *out) {
    cch_layer *l = cch_memory_layer_new(NULL);
    cch_app *app = cch_app_new(cch_layer_ref(l));
    if (!l || !app) return -1;
    if (cch_app_route(app, "/bench/", &bench_class, NULL) != 0) return -1;
    cch_conn **conns = calloc(members, sizeof *conns);
    if (!conns) return -1;
    cch_request req = {.path = "/bench/"};
    for (size_t i = 0; i < members; i++) {
        if (cch_conn_open(app, &req, &noop_transport, NULL, &conns[i]) != 0 || !conns[i])
            return -1;
        if (!cch_is_open(conns[i])) return -1;
    }
    handled = 0;
    if (app_round(app, l) != 0 || handled != members) return -1; /* warm-up */
    handled = 0;
    uint64_t a0 = n_allocs;
    double t0 = now_s();
    for (uint64_t r = 0; r < rounds; r++)
        if (app_round(app, l) != 0) return -1;
    double t1 = now_s();
    out->allocs = n_allocs - a0;
    out->seconds = t1 - t0;
    out->deliveries = handled;
    out->sends = rounds;
    if (handled != rounds * members) {
        fprintf(stderr, "app: %llu deliveries, expected %llu\n", (unsigned long long)handled,
                (unsigned long long)(rounds * members));
        return -1;
    }
    for (size_t i = 0; i < members; i++) cch_conn_disconnected(conns[i], 1000);
    free(conns);
    if (cch_app_free(app) != 0) return -1;
    cch_layer_unref(l);
    return 0;
}

/* ---- the layer path ------------------------------------------------------------------ */

static uint64_t layer_handled;

/* What a host's loop does per delivery: call something with the channel's pointer. */
static void __attribute__((noinline)) layer_handler(void *ud, const cch_msg *m) {
    (void)m;
    (*(uint64_t *)ud)++;
}

static int layer_round(cch_layer *l, cch_receiver *r, cch_delivery *batch, size_t cap) {
    cch_msg *m = cch_msg_new("bench.message", BODY, sizeof BODY - 1);
    if (!m) return -1;
    int rc = cch_layer_group_send(l, "bench", m, NULL, NULL);
    cch_msg_unref(m);
    if (rc != 0) return rc;
    int n;
    while ((n = cch_layer_poll(l, r, batch, cap)) > 0) {
        for (int i = 0; i < n; i++) {
            layer_handler(batch[i].channel_ud, batch[i].msg);
            cch_msg_unref(batch[i].msg);
        }
        if ((size_t)n < cap) break;
    }
    return n < 0 ? n : 0;
}

static int bench_layer(size_t members, uint64_t rounds, result *out) {
    cch_layer *l = cch_memory_layer_new(NULL);
    if (!l) return -1;
    cch_receiver *r = cch_layer_receiver_new(l, NULL, NULL);
    char (*names)[CCH_NAME_BUF] = calloc(members, sizeof *names);
    if (!r || !names) return -1;
    for (size_t i = 0; i < members; i++) {
        if (cch_layer_new_channel(l, NULL, r, &layer_handled, names[i], CCH_NAME_BUF) != 0)
            return -1;
        if (cch_layer_group_add(l, "bench", names[i]) != 0) return -1;
    }
    cch_delivery batch[256];
    layer_handled = 0;
    if (layer_round(l, r, batch, 256) != 0 || layer_handled != members) return -1;
    layer_handled = 0;
    uint64_t a0 = n_allocs;
    double t0 = now_s();
    for (uint64_t i = 0; i < rounds; i++)
        if (layer_round(l, r, batch, 256) != 0) return -1;
    double t1 = now_s();
    out->allocs = n_allocs - a0;
    out->seconds = t1 - t0;
    out->deliveries = layer_handled;
    out->sends = rounds;
    if (layer_handled != rounds * members) return -1;
    for (size_t i = 0; i < members; i++) cch_layer_release_channel(l, names[i]);
    free(names);
    cch_layer_receiver_free(l, r);
    cch_layer_unref(l);
    return 0;
}

static void print_row(const char *path, size_t members, const result *r) {
    printf("| %-5s | %7zu | %9llu | %11llu | %6.3f | %14.0f | %9.1f | %13.4f | %11.2f |\n", path,
           members, (unsigned long long)r->sends, (unsigned long long)r->deliveries, r->seconds,
           (double)r->deliveries / r->seconds, r->seconds * 1e9 / (double)r->deliveries,
           (double)r->allocs / (double)r->deliveries, (double)r->allocs / (double)r->sends);
}

int main(int argc, char **argv) {
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000ull;
    if (total == 0) total = 20000000ull;
    if (cch_replace_allocator(count_malloc, count_realloc, count_calloc, free) != 0) return 1;
    static const size_t sizes[] = {1, 100, 10000};
    printf("| path  | members |     sends |  deliveries |   secs |   deliveries/s | ns/deliv. | allocs/deliv. | allocs/send |\n");
    printf("|-------|--------:|----------:|------------:|-------:|---------------:|----------:|--------------:|------------:|\n");
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        uint64_t rounds = total / n;
        if (rounds < 10) rounds = 10;
        result ra, rl;
        if (bench_app(n, rounds, &ra) != 0) {
            fprintf(stderr, "app benchmark failed for %zu members\n", n);
            return 1;
        }
        print_row("app", n, &ra);
        if (bench_layer(n, rounds, &rl) != 0) {
            fprintf(stderr, "layer benchmark failed for %zu members\n", n);
            return 1;
        }
        print_row("layer", n, &rl);
    }
    return 0;
}
