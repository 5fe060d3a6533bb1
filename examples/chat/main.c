/* main.c - the example chat server: command line flags, a log on stderr, the chat
 * and echo routes, and the WebSocket server (cchannels/ws.h) that also serves the
 * chat's web page, on one or (--threads) several loops over one channel layer. Run
 * it and open http://127.0.0.1:8000/ in a browser. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <cchannels/cchannels.h>
#include <cchannels/ws.h>
#ifdef CHAT_HAVE_REDIS
#include <cchannels/redis_layer.h>
#endif

#include "chat.h"
#include "echo_consumer.h"

#ifndef CHAT_STATIC_DIR
#define CHAT_STATIC_DIR "static"
#endif

static const char usage[] =
    "Usage: %s [OPTIONS]\n"
    "The Django Channels tutorial chat, in C. Open http://HOST:PORT/ in a browser.\n"
    "\n"
    "  --host ADDR              address to listen on (default 127.0.0.1; \"::\" for all)\n"
    "  --port PORT              port to listen on (default 8000; 0: any free port)\n"
    "  --static DIR             the web page's directory (default: the bundled one)\n"
    "  --layer memory|URL[,URL...]\n"
    "                           the channel layer: memory (default), or Redis shared\n"
    "                           with other processes and with Django Channels\n"
    "                           (channels_redis): redis://[:PASSWORD@]HOST:PORT[/DB],\n"
    "                           or redis+pubsub://... for RedisPubSubChannelLayer;\n"
    "                           several URLs shard over several servers\n"
    "  --threads N              event loops, one thread each (default 1; at most 64):\n"
    "                           the clients are spread over them, the rooms and the\n"
    "                           channel layer are shared\n"
    "  --capacity N             messages a channel holds before group messages to it\n"
    "                           are dropped (default 100, as in Channels)\n"
    "  --log-level LEVEL        error, warn, info (default) or debug\n"
    "  --allowed-origins LIST   accept WebSocket connections only from these Origin\n"
    "                           hosts, comma-separated (\"example.com,.example.org,\n"
    "                           localhost:8000\"); default: any origin\n"
    "  --help                   show this help\n"
    "\n"
    "Endpoints: ws://HOST:PORT/ws/chat/ROOM/?name=NAME (chat), ws://HOST:PORT/ws/echo/\n"
    "(echo). SIGINT or SIGTERM closes every client with 1001 and exits 0; the exit\n"
    "status is 1 when the server cannot start, 2 for a usage error.\n";

static int log_level = CCH_LOG_INFO;

/* Every log line: "2025-01-31 12:00:00.123 info  ...", on stderr. */
static void log_line(void *ud, int level, const char *msg)
{
    (void)ud;
    if (level > log_level)
        return;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ld %-5s %s\n", when, ts.tv_nsec / 1000000L,
            cch_log_level_name(level), msg);
}

/* The adapter's lines. Below debug, its lines for an accepted or closed chat
 * connection are left out (the chat logs those events itself, naming the room and
 * the user), and so is its "listening on" (on_ready says it with the URL). */
static void adapter_log(void *ud, int level, const char *msg)
{
    size_t n = strlen(msg);
    bool chat_event = strstr(msg, "/ws/chat/") &&
                      ((n > 4 && !strcmp(msg + n - 4, " 101")) || strstr(msg, "/ closed "));
    if (level == CCH_LOG_INFO && log_level < CCH_LOG_DEBUG &&
        (chat_event || !strncmp(msg, "listening on ", 13)))
        return;
    log_line(ud, level, msg);
}

static void on_ready(cch_ws_server *s, void *ud)
{
    const cch_ws_options *o = ud;
    char line[PATH_MAX + 128];
    bool v6 = strchr(o->host, ':') != NULL;
    char threads[32] = "";
    if (o->loops > 1)
        snprintf(threads, sizeof threads, ", %d threads", o->loops);
    snprintf(line, sizeof line, "listening on http://%s%s%s:%d/ (static files from %s%s)",
             v6 ? "[" : "", o->host, v6 ? "]" : "", cch_ws_server_port(s),
             o->static_dir ? o->static_dir : "nowhere", threads);
    log_line(NULL, CCH_LOG_INFO, line);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int parse_level(const char *s)
{
    for (int l = CCH_LOG_ERROR; l <= CCH_LOG_DEBUG; l++)
        if (!strcmp(s, cch_log_level_name(l)))
            return l;
    return -1;
}

/* Splits "a, b,c" into at most `max` trimmed entries, in place. Returns the count,
 * or -1 for an empty entry or too many. */
static int split_list(char *s, char **out, int max)
{
    int n = 0;
    for (char *tok; (tok = strsep(&s, ",")) != NULL;) {
        while (*tok == ' ')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && end[-1] == ' ')
            *--end = '\0';
        if (!*tok || n == max)
            return -1;
        out[n++] = tok;
    }
    return n;
}

/* What the command line asks for. */
typedef struct config {
    cch_ws_options ws;
    const char *layer;          /* "memory" or Redis URLs */
    size_t capacity;            /* per channel; 0: the layer's default */
    char *origins[64];
    int n_origins;              /* 0: any origin */
} config;

/* Reads the flags into *cfg. Returns -1 to go on, or the exit status (0 after
 * --help, 2 for a usage error, with a message on stderr). */
static int parse_args(int argc, char **argv, config *cfg)
{
    enum { O_HOST = 1, O_PORT, O_STATIC, O_LAYER, O_LOG, O_ORIGINS, O_THREADS, O_CAPACITY };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"static", required_argument, NULL, O_STATIC},
        {"layer", required_argument, NULL, O_LAYER},
        {"log-level", required_argument, NULL, O_LOG},
        {"allowed-origins", required_argument, NULL, O_ORIGINS},
        {"threads", required_argument, NULL, O_THREADS},
        {"capacity", required_argument, NULL, O_CAPACITY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *layer = "memory";
    char *end;
    long port;
    for (int o; (o = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (o) {
        case O_HOST: cfg->ws.host = optarg; break;
        case O_PORT:
            errno = 0;
            port = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || port < 0 || port > 65535) {
                fprintf(stderr, "chat: --port: expected 0..65535, got \"%s\"\n", optarg);
                return 2;
            }
            cfg->ws.port = port == 0 ? CCH_WS_ANY_PORT : (int)port;
            break;
        case O_THREADS:
            errno = 0;
            port = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || port < 1 || port > CCH_WS_MAX_LOOPS) {
                fprintf(stderr, "chat: --threads: expected 1..%d, got \"%s\"\n",
                        CCH_WS_MAX_LOOPS, optarg);
                return 2;
            }
            cfg->ws.loops = (int)port;
            break;
        case O_CAPACITY:
            errno = 0;
            port = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || port < 1 || port > 10000000) {
                fprintf(stderr, "chat: --capacity: expected 1..10000000, got \"%s\"\n", optarg);
                return 2;
            }
            cfg->capacity = (size_t)port;
            break;
        case O_STATIC:
            if (!is_dir(optarg)) {
                fprintf(stderr, "chat: --static %s: not a directory\n", optarg);
                return 2;
            }
            cfg->ws.static_dir = optarg;
            break;
        case O_LAYER: layer = optarg; break;
        case O_LOG:
            if ((log_level = parse_level(optarg)) < 0) {
                fprintf(stderr, "chat: --log-level: expected error, warn, info or debug\n");
                return 2;
            }
            break;
        case O_ORIGINS:
            cfg->n_origins = split_list(optarg, cfg->origins, 64);
            if (cfg->n_origins <= 0) {
                fprintf(stderr, "chat: --allowed-origins: expected a comma-separated list "
                                "of hosts\n");
                return 2;
            }
            break;
        case 'h': printf(usage, argv[0]); return 0;
        default: fprintf(stderr, usage, argv[0]); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chat: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    bool redis = !strncmp(layer, "redis://", 8) || !strncmp(layer, "redis+pubsub://", 15);
#ifndef CHAT_HAVE_REDIS
    if (redis) {
        fprintf(stderr, "chat: --layer %s: this build has no Redis layer (meson -Dredis=enabled)\n",
                layer);
        return 2;
    }
#endif
    if (!redis && strcmp(layer, "memory") != 0) {
        fprintf(stderr, "chat: --layer: expected memory or redis://HOST:PORT, got \"%s\"\n",
                layer);
        return 2;
    }
    cfg->layer = layer;
    return -1;
}

/* The channel layer named by --layer. The Redis layer connects in the background; a
 * short wait here only makes the log say early whether Redis is there (the chat works
 * in-process meanwhile, and reconnects by itself). */
static int make_layer(const char *spec, size_t capacity, cch_layer **out)
{
    if (!strcmp(spec, "memory")) {
        *out = cch_memory_layer_new(&(cch_memory_layer_options){.capacity = capacity});
        return *out ? 0 : CCH_ENOMEM;
    }
#ifdef CHAT_HAVE_REDIS
    char *copy = strdup(spec);
    char *urls[CCH_REDIS_MAX_SERVERS];
    int n = copy ? split_list(copy, urls, CCH_REDIS_MAX_SERVERS) : 0;
    if (!copy || n <= 0) {
        free(copy);
        return copy ? CCH_EINVAL : CCH_ENOMEM;
    }
    cch_redis_layer_options o = {.urls = (const char *const *)urls, .n_urls = (size_t)n,
                                 .capacity = capacity, .log = log_line};
    int rc = cch_redis_layer_new(&o, out);
    free(copy);
    if (rc == 0 && cch_redis_layer_sync(*out, 2000) != 0)
        log_line(NULL, CCH_LOG_WARN, "Redis is not reachable yet: serving this process's "
                                     "rooms only until it is");
    return rc;
#else
    (void)capacity;
    *out = NULL;
    return CCH_ENOTSUP;
#endif
}

/* What every loop's app gets (cch_ws_run_loops calls this once per loop). */
typedef struct app_setup {
    chat_server *chat;          /* shared by every loop: thread-safe */
    config *cfg;
    int failed;                 /* the first error of a setup, 0 if none */
} app_setup;

static int setup_app(cch_app *app, int loop_index, void *ud)
{
    (void)loop_index;
    app_setup *as = ud;
    cch_app_set_log(app, log_line, NULL);
    int rc = cch_app_route(app, "/ws/chat/{room}/", &chat_consumer, as->chat);
    if (rc == 0)
        rc = cch_app_route(app, "/ws/echo/", &echo_consumer, NULL);
    if (rc == 0 && as->cfg->n_origins > 0)
        rc = cch_app_use_origin_check(app, (const char *const *)as->cfg->origins,
                                      (size_t)as->cfg->n_origins);
    if (rc < 0)
        as->failed = rc;
    return rc;
}

/* Every connection is a descriptor: raise the soft RLIMIT_NOFILE to the hard limit,
 * and let the server hold as many connections as that allows (a few descriptors are
 * kept for the listener, the loop and static files). Returns the connection limit. */
static size_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return CCH_WS_DEFAULT_MAX_CONNECTIONS;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 64 + (rlim_t)10000000)
        return 10000000;
    return rl.rlim_cur > 64 + CCH_WS_DEFAULT_MAX_CONNECTIONS ? (size_t)rl.rlim_cur - 64
                                                             : CCH_WS_DEFAULT_MAX_CONNECTIONS;
}

int main(int argc, char **argv)
{
    config cfg = {.ws = {.host = "127.0.0.1", .port = 8000}};
    int status = parse_args(argc, argv, &cfg);
    if (status >= 0)
        return status;
    cfg.ws.max_connections = raise_nofile();
    if (!cfg.ws.static_dir) {       /* the source tree's copy, else the installed one */
        cfg.ws.static_dir = is_dir(CHAT_STATIC_DIR) ? CHAT_STATIC_DIR
#ifdef CHAT_INSTALLED_STATIC_DIR
                            : is_dir(CHAT_INSTALLED_STATIC_DIR) ? CHAT_INSTALLED_STATIC_DIR
#endif
                            : NULL;
        if (!cfg.ws.static_dir)
            log_line(NULL, CCH_LOG_WARN, "no static directory found: use --static DIR");
    }
    cfg.ws.log = adapter_log;
    cfg.ws.log_level = log_level;
    cfg.ws.ready = on_ready;
    cfg.ws.ready_ud = &cfg.ws;

    /* One app per loop (the chat and the echo consumer), all on the chosen layer and
     * sharing one chat_server. */
    cch_layer *layer = NULL;
    int rc = make_layer(cfg.layer, cfg.capacity, &layer);
    if (rc == CCH_EINVAL || rc == CCH_ENOTSUP) {
        fprintf(stderr, "chat: --layer %s: %s\n", cfg.layer, cch_strerror(rc));
        return 2;
    }
    app_setup as = {.chat = chat_server_new(log_line, NULL), .cfg = &cfg};
    rc = layer && as.chat ? 0 : rc < 0 ? rc : CCH_ENOMEM;
    if (rc == 0) {
        cch_layer_set_log(layer, log_line, NULL);
        rc = cch_ws_run_loops(&cfg.ws, layer, setup_app, &as);  /* until SIGINT/SIGTERM */
    }
    if (rc < 0)
        fprintf(stderr, "chat: cannot %s: %s\n",
                as.failed || !as.chat ? "set up the app" : "start the server",
                cch_strerror(rc));
    cch_layer_unref(layer);
    chat_server_free(as.chat);
    return rc == 0 ? 0 : 1;
}
