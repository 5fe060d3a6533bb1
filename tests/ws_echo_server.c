/* tests/ws_echo_server.c - the WebSocket adapter's test server (cch_ws_run).
 *
 * Started by the Python conformance tests in tests/ws/, one per test class, on a free
 * port: it prints "PORT <n>" on stdout once listening, and exits 0 after SIGTERM or
 * SIGINT. Every limit of cch_ws_options can be set from the command line. Routes:
 *   /ws/echo/            the echo consumer (examples/echo_consumer.c)
 *   /ws/room/{room}/     every text message (a JSON object) goes to the whole room
 *                        (examples/room_consumer.c)
 *   /ws/reject/          the consumer rejects (403) (tests/ws_consumers.c)
 *   /ws/proto/           accepts the first offered of "chat", "superchat" (ditto)
 *   /ws/later/           decides later: accepts from a layer message handler
 *   /ws/cmd/             commands: "close CODE REASON", "send N SIZE"
 *   /ws/stats/           sends the server's counters (JSON) on connect
 * Middleware answers 403 to requests carrying an "X-Test-Reject" header.
 * With --count-alloc the library's allocator counts live bytes (reported by
 * /ws/stats/ as "live_bytes"), to measure what an idle connection costs.
 * --capacity sets the memory layer's per-channel capacity (default here 10000);
 * /ws/stats/ also reports the layer's counters ("layer_sent", "layer_full",
 * "layer_delivered"). */
#include <cchannels/cchannels.h>
#include <cchannels/ws.h>

#include <inttypes.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "echo_consumer.h"
#include "room_consumer.h"
#include "ws_consumers.h"

static cch_ws_server *server;
static atomic_llong live_bytes;

/* ---- counting allocator ---------------------------------------------------------- */

static void *count_malloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p));
    return p;
}

static void *count_calloc(size_t k, size_t n)
{
    void *p = calloc(k, n);
    if (p)
        atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p));
    return p;
}

static void *count_realloc(void *old, size_t n)
{
    long long before = old ? (long long)malloc_usable_size(old) : 0;
    void *p = realloc(old, n);
    if (p)
        atomic_fetch_add(&live_bytes, (long long)malloc_usable_size(p) - before);
    return p;
}

static void count_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live_bytes, (long long)malloc_usable_size(p));
    free(p);
}

/* ---- later ----------------------------------------------------------------------- */

static int later_connect(cch_conn *c)
{
    cch_msg *m = cch_msg_new("later.accept", NULL, 0);
    if (!m)
        return CCH_ENOMEM;
    int rc = cch_channel_send(c, cch_channel_name(c), m);
    cch_msg_unref(m);
    return rc; /* undecided: the handler decides */
}

static void later_accept(cch_conn *c, const cch_msg *m)
{
    (void)m;
    cch_accept(c, NULL);
}

static const cch_consumer_class later_consumer = {
    .connect = later_connect,
    .receive = NULL,
    .handlers = (const cch_handler[]){{"later.accept", later_accept}, {NULL, NULL}},
};

/* ---- commands ------------------------------------------------------------------- */

static void cmd_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    char buf[256];
    if (binary || len >= sizeof buf)
        return;
    memcpy(buf, data, len);
    buf[len] = '\0';
    int code;
    char reason[128] = "";
    unsigned n, size;
    if (sscanf(buf, "close %d %127[^\n]", &code, reason) >= 1) {
        cch_close(c, code, reason);
    } else if (sscanf(buf, "send %u %u", &n, &size) == 2) {
        char *payload = malloc(size ? size : 1);
        if (!payload)
            return;
        memset(payload, 'x', size);
        for (unsigned i = 0; i < n; i++) {
            int rc = cch_send_text(c, payload, size);
            if (rc < 0)
                break;
        }
        free(payload);
    }
}

static const cch_consumer_class cmd_consumer = {.receive = cmd_receive};

/* ---- stats ------------------------------------------------------------------------ */

static int stats_connect(cch_conn *c)
{
    int rc = cch_accept(c, NULL);
    if (rc < 0)
        return rc;
    cch_ws_stats s;
    cch_ws_server_stats(server, &s);
    cch_app_stats a;
    cch_app_stats_get(cch_conn_app(c), &a);
    cch_layer_stats l;
    cch_layer_stats_get(cch_conn_layer(c), &l);
    char buf[2048];
    int n = snprintf(buf, sizeof buf,
        "{\"tcp_accepted\":%" PRIu64 ",\"tcp_active\":%" PRIu64 ",\"ws_active\":%" PRIu64
        ",\"handshakes\":%" PRIu64 ",\"http_errors\":%" PRIu64 ",\"rejected_busy\":%" PRIu64
        ",\"rejected_header_size\":%" PRIu64 ",\"handshake_timeouts\":%" PRIu64
        ",\"static_served\":%" PRIu64 ",\"messages_in\":%" PRIu64 ",\"messages_out\":%" PRIu64
        ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"writes\":%" PRIu64
        ",\"frames_built\":%" PRIu64 ",\"frames_shared\":%" PRIu64 ",\"closed_slow\":%" PRIu64
        ",\"closed_too_big\":%" PRIu64 ",\"closed_protocol\":%" PRIu64 ",\"pings_sent\":%" PRIu64
        ",\"idle_closed\":%" PRIu64 ",\"close_timeouts\":%" PRIu64 ",\"input_contexts\":%" PRIu64
        ",\"outbound_bytes\":%" PRIu64 ",\"app_active\":%" PRIu64 ",\"app_opened\":%" PRIu64
        ",\"live_bytes\":%lld,\"layer_sent\":%" PRIu64 ",\"layer_full\":%" PRIu64
        ",\"layer_delivered\":%" PRIu64 "}",
        s.tcp_accepted, s.tcp_active, s.ws_active, s.handshakes, s.http_errors, s.rejected_busy,
        s.rejected_header_size, s.handshake_timeouts, s.static_served, s.messages_in,
        s.messages_out, s.bytes_in, s.bytes_out, s.writes, s.frames_built, s.frames_shared,
        s.closed_slow, s.closed_too_big, s.closed_protocol, s.pings_sent, s.idle_closed,
        s.close_timeouts, s.input_contexts, s.outbound_bytes, a.connections_active,
        a.connections_opened, (long long)atomic_load(&live_bytes), l.sent, l.full,
        l.delivered);
    return cch_send_text(c, buf, (size_t)n);
}

static const cch_consumer_class stats_consumer = {.connect = stats_connect};

/* ---- middleware ------------------------------------------------------------------- */

static int test_reject_mw(cch_scope *s, void *ud)
{
    (void)ud;
    return cch_scope_header(s, "X-Test-Reject") ? 403 : 0;
}

static const cch_middleware test_mw = {.name = "test-reject", .process = test_reject_mw};

/* ---- main ----------------------------------------------------------------------------- */

static void on_ready(cch_ws_server *s, void *ud)
{
    (void)ud;
    server = s;
    printf("PORT %d\n", cch_ws_server_port(s));
    fflush(stdout);
}

static void log_line(void *ud, int level, const char *msg)
{
    (void)ud;
    fprintf(stderr, "[%s] %s\n", cch_log_level_name(level), msg);
}

static unsigned long long num(const char *s)
{
    return strtoull(s, NULL, 10);
}

int main(int argc, char **argv)
{
    cch_ws_options o = {.host = "127.0.0.1", .port = CCH_WS_ANY_PORT, .ready = on_ready};
    cch_memory_layer_options lo = {.capacity = 10000};
    bool count = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--count-alloc") == 0) {
            count = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "missing value for %s\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--host") == 0) o.host = v;
        else if (strcmp(a, "--port") == 0) o.port = (int)strtol(v, NULL, 10);
        else if (strcmp(a, "--static") == 0) o.static_dir = v;
        else if (strcmp(a, "--max-header") == 0) o.max_header_bytes = num(v);
        else if (strcmp(a, "--max-message") == 0) o.max_message_bytes = num(v);
        else if (strcmp(a, "--max-conns") == 0) o.max_connections = num(v);
        else if (strcmp(a, "--max-outbound") == 0) o.max_outbound_bytes = num(v);
        else if (strcmp(a, "--handshake-timeout") == 0) o.handshake_timeout_ms = (uint32_t)num(v);
        else if (strcmp(a, "--idle-timeout") == 0) o.idle_timeout_ms = (uint32_t)num(v);
        else if (strcmp(a, "--close-timeout") == 0) o.close_timeout_ms = (uint32_t)num(v);
        else if (strcmp(a, "--log-level") == 0) { o.log = log_line; o.log_level = (int)num(v); }
        else if (strcmp(a, "--capacity") == 0) lo.capacity = num(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (count)
        cch_replace_allocator(count_malloc, count_realloc, count_calloc, count_free);

    /* Many clients: lift the soft descriptor limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    cch_app *app = cch_app_new(cch_memory_layer_new(&lo));
    if (!app) {
        fprintf(stderr, "cannot create the app\n");
        return 1;
    }
    if (cch_app_use(app, &test_mw, NULL) < 0 ||
        cch_app_route(app, "/ws/echo/", &echo_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/room/{room}/", &room_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/reject/", &reject_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/proto/", &proto_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/later/", &later_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/cmd/", &cmd_consumer, NULL) < 0 ||
        cch_app_route(app, "/ws/stats/", &stats_consumer, NULL) < 0) {
        fprintf(stderr, "cannot add the routes\n");
        cch_app_free(app);
        return 1;
    }
    int rc = cch_ws_run(app, &o);
    int frc = cch_app_free(app);
    if (rc < 0) {
        fprintf(stderr, "cch_ws_run: %s\n", cch_strerror(rc));
        return 1;
    }
    if (frc < 0) {
        fprintf(stderr, "cch_app_free: %s\n", cch_strerror(frc));
        return 1;
    }
    if (count && atomic_load(&live_bytes) != 0) {
        fprintf(stderr, "%lld bytes still allocated at exit\n", (long long)atomic_load(&live_bytes));
        return 1;
    }
    return 0;
}
