/* tests/redis/redis_peer.c - a C process on the Redis layer, driven line by line on
 * stdin, for the interop tests (tests/redis/test_interop.py) and the benchmark.
 *
 *   redis_peer [--prefix P] [--capacity N] [--expiry S] [--group-expiry S] URL...
 *
 * It prints "ready <process part>" once connected, then answers each command with one
 * line. Every message that reaches one of its channels is printed as
 * "msg <channel> <type> <JSON body>". Commands (JSON is the rest of the line):
 *   new                          -> channel <name>   (bound to the peer's receiver)
 *   add <group> <channel>        -> add <rc>
 *   discard <group> <channel>    -> discard <rc>
 *   gsend <group> <type> <json>  -> gsend <rc>
 *   gsendx <group> <exclude> <type> <json> -> gsend <rc>
 *   send <channel> <type> <json> -> send <rc>
 *   members <group>              -> members <status> ["name", ...]
 *   release <channel>            -> release <rc>
 *   sync                         -> sync <rc>
 *   stats                        -> stats {"sent": n, ...}
 *   quiet / loud                 -> stop / start printing messages (counted anyway)
 *   count                        -> count <messages received so far>
 *   quit                         -> exits 0 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cchannels/cchannels.h>
#include <cchannels/redis_layer.h>

#define MAX_CHANNELS 1024

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;
static int wakes;
static atomic_bool stop, quiet;
static atomic_ulong received;
static cch_layer *layer;
static cch_receiver *recv_;
static char names[MAX_CHANNELS][CCH_NAME_BUF];
static int n_names;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&out_mu);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
    va_end(ap);
}

static void log_line(void *ud, int level, const char *msg) {
    (void)ud;
    if (level <= CCH_LOG_INFO) fprintf(stderr, "peer %s: %s\n", cch_log_level_name(level), msg);
}

static void wakeup(void *ud) {
    (void)ud;
    pthread_mutex_lock(&wake_mu);
    wakes++;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

static void *poller(void *arg) {
    (void)arg;
    cch_delivery d[64];
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&wake_mu);
        if (!wakes) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += 100000000L;
            if (dl.tv_nsec >= 1000000000L) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&wake_cv, &wake_mu, &dl);
        }
        wakes = 0;
        pthread_mutex_unlock(&wake_mu);
        int n;
        while ((n = cch_layer_poll(layer, recv_, d, 64)) > 0) {
            for (int i = 0; i < n; i++) {
                int idx = (int)(intptr_t)d[i].channel_ud - 1;
                atomic_fetch_add(&received, 1);
                if (!atomic_load(&quiet))
                    say("msg %s %s %s", idx >= 0 && idx < n_names ? names[idx] : "?",
                        cch_msg_type(d[i].msg), cch_msg_body(d[i].msg));
                cch_msg_unref(d[i].msg);
            }
        }
    }
    return NULL;
}

static void members_cb(void *ud, int status, const char *const *n, size_t count) {
    (void)ud;
    char line[16384];
    size_t off = (size_t)snprintf(line, sizeof line, "members %d [", status);
    for (size_t i = 0; i < count && off < sizeof line - 200; i++)
        off += (size_t)snprintf(line + off, sizeof line - off, "%s\"%s\"", i ? ", " : "", n[i]);
    snprintf(line + off, sizeof line - off, "]");
    say("%s", line);
}

/* Splits off the next space-separated word of *s. */
static char *word(char **s) {
    while (**s == ' ') (*s)++;
    if (!**s) return NULL;
    char *w = *s;
    while (**s && **s != ' ') (*s)++;
    if (**s) *(*s)++ = '\0';
    return w;
}

static int make_msg(const char *type, const char *json, cch_msg **out) {
    return cch_msg_create(out, type, json, json ? strlen(json) : 0);
}

int main(int argc, char **argv) {
    cch_redis_layer_options o = {.log = log_line};
    const char *urls[CCH_REDIS_MAX_SERVERS];
    size_t n_urls = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--prefix") && i + 1 < argc) o.prefix = argv[++i];
        else if (!strcmp(argv[i], "--capacity") && i + 1 < argc) o.capacity = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--expiry") && i + 1 < argc) o.expiry_s = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--group-expiry") && i + 1 < argc)
            o.group_expiry_s = (unsigned)atoi(argv[++i]);
        else if (n_urls < CCH_REDIS_MAX_SERVERS) urls[n_urls++] = argv[i];
    }
    o.urls = urls;
    o.n_urls = n_urls;
    int rc = cch_redis_layer_new(&o, &layer);
    if (rc < 0) {
        fprintf(stderr, "peer: %s\n", cch_strerror(rc));
        return 1;
    }
    recv_ = cch_layer_receiver_new(layer, wakeup, NULL);
    if (cch_redis_layer_sync(layer, 10000) != 0) {
        fprintf(stderr, "peer: Redis is not reachable\n");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, poller, NULL);
    say("ready %s", cch_redis_layer_process(layer));
    char line[65536];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *s = line, *cmd = word(&s);
        if (!cmd) continue;
        if (!strcmp(cmd, "quit")) break;
        if (!strcmp(cmd, "new")) {
            if (n_names == MAX_CHANNELS) {
                say("channel -");
                continue;
            }
            rc = cch_layer_new_channel(layer, NULL, recv_, (void *)(intptr_t)(n_names + 1),
                                       names[n_names], CCH_NAME_BUF);
            say("channel %s", rc == 0 ? names[n_names++] : "-");
        } else if (!strcmp(cmd, "add") || !strcmp(cmd, "discard")) {
            char *g = word(&s), *c = word(&s);
            rc = !g || !c ? CCH_EINVAL
                 : cmd[0] == 'a' ? cch_layer_group_add(layer, g, c)
                                 : cch_layer_group_discard(layer, g, c);
            say("%s %d", cmd, rc);
        } else if (!strcmp(cmd, "gsend") || !strcmp(cmd, "gsendx") || !strcmp(cmd, "send")) {
            char *target = word(&s), *exclude = cmd[5] == 'x' ? word(&s) : NULL, *type = word(&s);
            cch_msg *m = NULL;
            rc = !target || !type ? CCH_EINVAL : make_msg(type, s, &m);
            if (rc == 0)
                rc = cmd[0] == 'g' ? cch_layer_group_send(layer, target, m, exclude, NULL)
                                   : cch_layer_send(layer, target, m);
            cch_msg_unref(m);
            say("%s %d", cmd[0] == 'g' ? "gsend" : "send", rc);
        } else if (!strcmp(cmd, "members")) {
            char *g = word(&s);
            rc = g ? cch_layer_group_members(layer, g, members_cb, NULL) : CCH_EINVAL;
            if (rc < 0) say("members %d []", rc);
        } else if (!strcmp(cmd, "release")) {
            char *c = word(&s);
            say("release %d", c ? cch_layer_release_channel(layer, c) : CCH_EINVAL);
        } else if (!strcmp(cmd, "sync")) {
            say("sync %d", cch_redis_layer_sync(layer, 10000));
        } else if (!strcmp(cmd, "stats")) {
            cch_layer_stats st;
            cch_layer_stats_get(layer, &st);
            say("stats {\"sent\": %llu, \"delivered\": %llu, \"full\": %llu, \"expired\": %llu, "
                "\"groups_expired\": %llu, \"dropped\": %llu, \"errors\": %llu}",
                (unsigned long long)st.sent, (unsigned long long)st.delivered,
                (unsigned long long)st.full, (unsigned long long)st.expired,
                (unsigned long long)st.groups_expired, (unsigned long long)st.dropped,
                (unsigned long long)st.errors);
        } else if (!strcmp(cmd, "quiet") || !strcmp(cmd, "loud")) {
            atomic_store(&quiet, cmd[0] == 'q');
            say("%s 0", cmd);
        } else if (!strcmp(cmd, "count")) {
            say("count %lu", atomic_load(&received));
        } else {
            say("error unknown command %s", cmd);
        }
    }
    cch_redis_layer_sync(layer, 2000);
    atomic_store(&stop, true);
    pthread_join(th, NULL);
    for (int i = 0; i < n_names; i++) cch_layer_release_channel(layer, names[i]);
    cch_layer_receiver_free(layer, recv_);
    cch_layer_unref(layer);
    return 0;
}
