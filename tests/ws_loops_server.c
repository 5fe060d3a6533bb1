/* tests/ws_loops_server.c - the test server of cch_ws_run_loops (several loops, one layer).
 *
 * Started by tests/ws/test_ws_loops.py on a free port: it prints "PORT <n>" on
 * stdout once listening and exits 0 after SIGTERM or SIGINT. Options: --loops N
 * (default 2), --host, --port, --max-conns, --close-timeout, --capacity (the
 * memory layer's, default 10000), --log-level (0..3; the log goes to stderr, each
 * adapter line naming its loop), --nofile N (sets the descriptor limit to N; by
 * default the soft limit is raised to the hard one), --idle-timeout MS, and for
 * the flow-control tests (tests/ws/test_ws_flow.py): --slow-loop K (loop K's
 * members take --slow-us microseconds, default 50, per room message: that loop falls
 * behind), --stuck ROOM (a channel of a receiver that is never polled, in ROOM,
 * filled over half its capacity before the loops start: the layer is congested until
 * the room's messages fill it). At exit it
 * prints the layer's counters on stderr: "LAYER sent N full N congested N".
 * One route, on every loop's app:
 *   /ws/room/{room}/   the example room (examples/room_consumer.c) that also sends
 *                      {"loop": <its loop>, "channel": "<its channel>"} on connect;
 *                      a text message "to <channel> <json>" goes to that channel
 *                      only, any other (a JSON object) to the whole room. */
#include <cchannels/cchannels.h>
#include <cchannels/ws.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "room_consumer.h"

static int loop_index[CCH_WS_MAX_LOOPS];
static int slow_loop = -1;
static long slow_us = 50;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* room.message: as the room's, but slow on loop slow_loop (busy: the loop must not
 * sleep, only fall behind). */
static void slow_room_message(cch_conn *c, const cch_msg *m)
{
    const int *loop = cch_class_data(c);
    if (*loop == slow_loop)
        for (uint64_t end = now_us() + (uint64_t)slow_us; now_us() < end;)
            ;
    (void)cch_send_body(c, m);
}

static const cch_handler loop_room_handlers[] = {{"room.message", slow_room_message},
                                                 {NULL, NULL}};

static int loop_room_connect(cch_conn *c)
{
    const int *loop = cch_class_data(c);
    int rc = room_connect(c);
    if (rc < 0)
        return rc;
    char hello[CCH_NAME_BUF + 64];
    int n = snprintf(hello, sizeof hello, "{\"loop\": %d, \"channel\": \"%s\"}", *loop,
                     cch_channel_name(c));
    return cch_send_text(c, hello, (size_t)n);
}

static void loop_room_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    room_state *st = cch_state(c);
    if (binary)
        return;
    char to[CCH_NAME_BUF];
    const char *body = data;
    size_t body_len = len;
    bool direct = len > 3 && memcmp(data, "to ", 3) == 0;
    if (direct) {
        const char *sp = memchr(data + 3, ' ', len - 3);
        size_t n = sp ? (size_t)(sp - data) - 3 : 0;
        if (!sp || n == 0 || n >= sizeof to) {
            cch_close(c, 1003, "expected: to CHANNEL JSON");
            return;
        }
        memcpy(to, data + 3, n);
        to[n] = '\0';
        body = sp + 1;
        body_len = len - (size_t)(body - data);
    }
    cch_msg *m = cch_msg_new("room.message", body, body_len);
    if (!m) {
        cch_close(c, 1003, "not a JSON object");
        return;
    }
    int rc = direct ? cch_channel_send(c, to, m) : cch_group_send(c, st->group, m);
    cch_msg_unref(m);
    if (rc < 0)
        fprintf(stderr, "[error] send failed: %s\n", cch_strerror(rc));
}

static const cch_consumer_class loop_room_consumer = {
    .state_size = sizeof(room_state),
    .connect = loop_room_connect,
    .receive = loop_room_receive,
    .handlers = loop_room_handlers,
};

static void log_line(void *ud, int level, const char *msg)
{
    (void)ud;
    fprintf(stderr, "[%s] %s\n", cch_log_level_name(level), msg);
}

static int setup(cch_app *app, int index, void *ud)
{
    const cch_ws_options *o = ud;
    loop_index[index] = index;
    if (o->log)
        cch_app_set_log(app, log_line, NULL);
    return cch_app_route(app, "/ws/room/{room}/", &loop_room_consumer, &loop_index[index]);
}

static void on_ready(cch_ws_server *s, void *ud)
{
    (void)ud;
    printf("PORT %d\n", cch_ws_server_port(s));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT, .ready = on_ready,
                        .loops = 2};
    cch_memory_layer_options lo = {.capacity = 10000};
    long nofile = 0;
    const char *stuck_room = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "missing value for %s\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--loops") == 0) o.loops = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--host") == 0) o.host = v;
        else if (strcmp(a, "--port") == 0) o.port = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--max-conns") == 0) o.max_connections = strtoull(v, NULL, 10);
        else if (strcmp(a, "--close-timeout") == 0) o.close_timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--capacity") == 0) lo.capacity = strtoull(v, NULL, 10);
        else if (strcmp(a, "--nofile") == 0) nofile = strtol(v, NULL, 10);
        else if (strcmp(a, "--idle-timeout") == 0) o.idle_timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--slow-loop") == 0) slow_loop = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--slow-us") == 0) slow_us = strtol(v, NULL, 10);
        else if (strcmp(a, "--stuck") == 0) stuck_room = v;
        else if (strcmp(a, "--log-level") == 0) { o.log = log_line; o.log_level = (int)strtol(v, NULL, 10); }
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (nofile > 0 || rl.rlim_cur < rl.rlim_max)) {
        rl.rlim_cur = nofile > 0 && (rlim_t)nofile < rl.rlim_max ? (rlim_t)nofile : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("setrlimit");
    }
    cch_layer *layer = cch_memory_layer_new(&lo);
    if (!layer) {
        fprintf(stderr, "cannot create the layer\n");
        return 1;
    }
    /* A receiver nobody polls, with a full channel in the room: congested for good. */
    cch_receiver *stuck = NULL;
    char stuck_name[CCH_NAME_BUF], group[CCH_NAME_BUF];
    if (stuck_room) {
        cch_msg *m = cch_msg_new("room.message", "{}", 2);
        snprintf(group, sizeof group, "room_%s", stuck_room);
        if (!m || !(stuck = cch_layer_receiver_new(layer, NULL, NULL)) ||
            cch_layer_new_channel(layer, "stuck", stuck, NULL, stuck_name, sizeof stuck_name) < 0 ||
            cch_layer_group_add(layer, group, stuck_name) < 0) {
            fprintf(stderr, "cannot make the stuck receiver\n");
            return 1;
        }
        for (size_t i = 0; i <= lo.capacity / 2; i++) /* over the mark: congested */
            cch_layer_send(layer, stuck_name, m);
        cch_msg_unref(m);
    }
    int rc = cch_ws_run_loops(&o, layer, setup, &o);
    if (stuck) {
        cch_layer_release_channel(layer, stuck_name);
        cch_layer_receiver_free(layer, stuck);
    }
    cch_layer_stats st;
    cch_layer_stats_get(layer, &st);
    fprintf(stderr, "LAYER sent %llu full %llu congested %llu\n", (unsigned long long)st.sent,
            (unsigned long long)st.full, (unsigned long long)st.congested);
    cch_layer_unref(layer);
    if (rc < 0) {
        fprintf(stderr, "cch_ws_run_loops: %s\n", cch_strerror(rc));
        return 1;
    }
    return 0;
}
