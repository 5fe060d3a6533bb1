/* lib/core/app.c - the app: routes, the middleware chain, logging, the layer
 * receiver and the dispatch of layer messages to connection handlers
 * (cchannels/app.h).
 *
 * Dispatch is the hot path of a group_send fanout: the layer hands over a batch of
 * (connection, message) pairs in an array the app owns, and the handler for a
 * (route, message) pair is looked up once and reused while the batch keeps
 * delivering the same message to connections of the same route. */
#include "alloc.h"
/* A failed allocation inside uthash must be reported, never exit(). */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app_internal.h"
#include "cchannels/error.h"
#include "cchannels/layer.h"
#include "cchannels/msg.h"
#include "msg_internal.h"

struct cch__handler_entry {
    UT_hash_handle hh;
    cch_handler_fn fn;
    char key[];
};

/* ---- logging --------------------------------------------------------------------- */

void cch__app_log(cch_app *app, int level, const char *fmt, ...) {
    if (!app || !app->log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    app->log(app->log_ud, level, line);
}

/* ---- life cycle ------------------------------------------------------------------ */

static void app_wakeup(void *ud) {
    cch_app *app = ud;
    /* The callback only schedules work (cch_wakeup_fn), so it may run under the lock. */
    pthread_mutex_lock(&app->wakeup_lock);
    if (app->wakeup) app->wakeup(app->wakeup_ud);
    pthread_mutex_unlock(&app->wakeup_lock);
}

cch_app *cch_app_new(cch_layer *layer) {
    if (!layer) return NULL;
    cch_app *app = cch__calloc(1, sizeof *app);
    if (!app) {
        cch_layer_unref(layer);
        return NULL;
    }
    app->layer = layer;
    app->routes_tail = &app->routes;
    pthread_mutex_init(&app->wakeup_lock, NULL);
    app->receiver = cch_layer_receiver_new(layer, app_wakeup, app);
    if (!app->receiver) {
        pthread_mutex_destroy(&app->wakeup_lock);
        cch__free(app);
        cch_layer_unref(layer);
        return NULL;
    }
    return app;
}

static void free_handlers(cch__route_entry *r) {
    struct cch__handler_entry *e, *tmp;
    HASH_ITER(hh, r->handlers, e, tmp) {
        HASH_DEL(r->handlers, e);
        cch__free(e);
    }
}

int cch_app_free(cch_app *app) {
    if (!app) return CCH_EINVAL;
    if (app->stats.connections_active > 0 || app->dispatching) return CCH_ESTATE;
    cch__route_entry *r = app->routes;
    while (r) {
        cch__route_entry *next = r->next;
        free_handlers(r);
        cch__route_free(r->pattern);
        cch__free(r);
        r = next;
    }
    for (size_t i = 0; i < app->n_mws; i++)
        if (app->mws[i].mw->destroy) app->mws[i].mw->destroy(app->mws[i].ud);
    cch__free(app->mws);
    cch_layer_receiver_free(app->layer, app->receiver);
    cch_layer_unref(app->layer);
    pthread_mutex_destroy(&app->wakeup_lock);
    cch__free(app);
    return 0;
}

cch_layer *cch_app_layer(cch_app *app) { return app ? app->layer : NULL; }

void cch_app_set_log(cch_app *app, cch_log_fn fn, void *ud) {
    if (!app) return;
    app->log = fn;
    app->log_ud = ud;
}

void cch_app_set_wakeup(cch_app *app, cch_wakeup_fn fn, void *ud) {
    if (!app) return;
    pthread_mutex_lock(&app->wakeup_lock);
    app->wakeup = fn;
    app->wakeup_ud = ud;
    pthread_mutex_unlock(&app->wakeup_lock);
}

void cch_app_stats_get(cch_app *app, cch_app_stats *out) {
    if (!out) return;
    if (!app) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = app->stats;
}

/* ---- routes ---------------------------------------------------------------------- */

/* Writes `type` with '.' turned into '_' into key (CCH_MSG_TYPE_MAX + 1 bytes).
 * Returns its length, or 0 when it is empty or too long. */
static size_t normalise_type(const char *type, char *key) {
    size_t n = 0;
    for (; type[n]; n++) {
        if (n == CCH_MSG_TYPE_MAX) return 0;
        key[n] = type[n] == '.' ? '_' : type[n];
    }
    key[n] = '\0';
    return n;
}

static int compile_handlers(cch_app *app, cch__route_entry *r) {
    if (!r->cls->handlers) return 0;
    for (const cch_handler *h = r->cls->handlers; h->type; h++) {
        char key[CCH_MSG_TYPE_MAX + 1];
        size_t n = normalise_type(h->type, key);
        if (n == 0) {
            cch__app_log(app, CCH_LOG_ERROR, "route '%s': invalid handler type '%.120s'",
                         r->pattern->pattern, h->type);
            return CCH_EINVAL;
        }
        if (!h->fn) {
            cch__app_log(app, CCH_LOG_ERROR, "route '%s': handler for '%s' has no function",
                         r->pattern->pattern, h->type);
            return CCH_EINVAL;
        }
        struct cch__handler_entry *e;
        HASH_FIND(hh, r->handlers, key, n, e);
        if (e) continue; /* the first entry for a type wins */
        e = cch__malloc(sizeof *e + n + 1);
        if (!e) return CCH_ENOMEM;
        memcpy(e->key, key, n + 1);
        e->fn = h->fn;
        HASH_ADD_KEYPTR(hh, r->handlers, e->key, n, e);
        /* uthash reports a failed bucket allocation through uthash_nonfatal_oom,
         * which by default does nothing: check that the entry went in. */
        struct cch__handler_entry *check;
        HASH_FIND(hh, r->handlers, key, n, check);
        if (check != e) {
            cch__free(e);
            return CCH_ENOMEM;
        }
    }
    return 0;
}

int cch_app_route(cch_app *app, const char *pattern, const cch_consumer_class *cls,
                  void *class_ud) {
    if (!app || !pattern || !cls) return CCH_EINVAL;
    char why[160];
    cch__route *compiled;
    int rc = cch__route_compile(pattern, &compiled, why, sizeof why);
    if (rc == CCH_EPATTERN)
        cch__app_log(app, CCH_LOG_ERROR, "bad route pattern '%.200s': %s", pattern, why);
    if (rc < 0) return rc;
    cch__route_entry *r = cch__calloc(1, sizeof *r);
    if (!r) {
        cch__route_free(compiled);
        return CCH_ENOMEM;
    }
    r->pattern = compiled;
    r->cls = cls;
    r->class_ud = class_ud;
    rc = compile_handlers(app, r);
    if (rc < 0) {
        free_handlers(r);
        cch__route_free(compiled);
        cch__free(r);
        return rc;
    }
    *app->routes_tail = r;
    app->routes_tail = &r->next;
    return 0;
}

const cch__route_entry *cch__app_match(cch_app *app, const char *path, cch__route_span *spans) {
    size_t len = strlen(path);
    for (const cch__route_entry *r = app->routes; r; r = r->next)
        if (cch__route_match(r->pattern, path, len, spans)) return r;
    return NULL;
}

/* ---- middleware ------------------------------------------------------------------ */

int cch_app_use(cch_app *app, const cch_middleware *mw, void *ud) {
    if (!app || !mw || !mw->process) return CCH_EINVAL;
    cch__middleware_entry *grown =
        cch__realloc(app->mws, (app->n_mws + 1) * sizeof *app->mws);
    if (!grown) return CCH_ENOMEM;
    app->mws = grown;
    app->mws[app->n_mws++] = (cch__middleware_entry){mw, ud};
    return 0;
}

int cch__app_run_middleware(cch_app *app, cch_scope *s) {
    for (size_t i = 0; i < app->n_mws; i++) {
        const cch_middleware *mw = app->mws[i].mw;
        int rc = mw->process(s, app->mws[i].ud);
        if (rc == 0) continue;
        const char *name = mw->name ? mw->name : "?";
        if (rc >= 400 && rc <= 599) {
            cch__app_log(app, CCH_LOG_INFO, "middleware %s rejected %.200s with %d", name,
                         cch_scope_path(s), rc);
            return rc;
        }
        if (rc < 0)
            cch__app_log(app, CCH_LOG_WARN, "middleware %s failed on %.200s: %s", name,
                         cch_scope_path(s), cch_strerror(rc));
        else
            cch__app_log(app, CCH_LOG_WARN, "middleware %s returned invalid status %d", name,
                         rc);
        return 500;
    }
    return 0;
}

/* ---- dispatch -------------------------------------------------------------------- */

static int resolve(const cch__route_entry *r, const cch_msg *m, cch_handler_fn *fn) {
    char key[CCH_MSG_TYPE_MAX + 1];
    size_t n = normalise_type(cch_msg_type(m), key);
    if (n > 0 && r->handlers) {
        struct cch__handler_entry *e;
        HASH_FIND(hh, r->handlers, key, n, e);
        if (e) {
            *fn = e->fn;
            return CCH__H_HANDLER;
        }
    }
    if (n == 14 && memcmp(key, "websocket_send", 14) == 0) return CCH__H_SEND;
    if (n == 15 && memcmp(key, "websocket_close", 15) == 0) return CCH__H_CLOSE;
    if (r->cls->default_handler) {
        *fn = r->cls->default_handler;
        return CCH__H_DEFAULT;
    }
    return CCH__H_UNKNOWN;
}

void cch__app_forget_conn(cch_app *app, cch_conn *c) {
    if (!app->dispatching) return;
    for (size_t i = app->batch_pos; i < app->batch_n; i++)
        if (app->batch[i].channel_ud == c) app->batch[i].channel_ud = NULL;
}

/* Dispatch resolves the handling of a (message, route) pair once per call, not once
 * per delivery: the layer hands out a message's fanout channel by channel, so the
 * deliveries of one message are not adjacent (each channel's batch holds the same
 * run of messages). A small open-addressed table keyed by the message pointer
 * remembers each pair, and counts the deliveries made with it, so that their
 * references are dropped with one atomic operation when the slot is reused or the
 * call ends. The slot's references keep its message alive, so an equal pointer is
 * the same message. It has room for a few hundred messages per call: one loop turn of
 * a busy room (a direct-mapped table of 64 thrashed with 64 messages in flight). */
#define DISPATCH_SLOTS CCH__DISPATCH_SLOTS
#define DISPATCH_PROBES 8u

typedef struct cch__dispatch_slot dispatch_slot;

static void slot_flush(dispatch_slot *sl) {
    if (sl->msg) cch__msg_unref_n(sl->msg, sl->refs);
    sl->msg = NULL;
    sl->refs = 0;
}

/* The slot for (m, r): a matching one, else a free one near its home, else its home
 * (whose message is flushed by the caller). */
static inline dispatch_slot *slot_find(dispatch_slot *slots, const cch_msg *m,
                                       const cch__route_entry *r) {
    uint64_t h = ((uint64_t)(uintptr_t)m ^ ((uint64_t)(uintptr_t)r << 7)) * 0x9E3779B97F4A7C15u;
    size_t home = (size_t)(h >> 55); /* 9 bits: DISPATCH_SLOTS */
    for (size_t i = 0; i < DISPATCH_PROBES; i++) {
        dispatch_slot *sl = &slots[(home + i) & (DISPATCH_SLOTS - 1)];
        if ((sl->msg == m && sl->route == r) || !sl->msg) return sl;
    }
    return &slots[home];
}

int cch_app_dispatch(cch_app *app, size_t max) {
    if (!app) return CCH_EINVAL;
    if (app->dispatching) return CCH_ESTATE;
    app->dispatching = true;
    size_t total = 0;
    int err = 0;
    uint64_t dispatched = 0, unknown = 0, dropped = 0;
    dispatch_slot *slots = app->slots;
    for (;;) {
        size_t want = CCH__APP_BATCH;
        if (max > 0 && max - total < want) want = max - total;
        if (want == 0) break;
        int n = cch_layer_poll(app->layer, app->receiver, app->batch, want);
        if (n < 0) {
            err = n;
            break;
        }
        if (n == 0) break;
        app->batch_n = (size_t)n;
        for (size_t i = 0; i < (size_t)n; i++) {
            app->batch_pos = i + 1;
            cch_conn *c = app->batch[i].channel_ud;
            cch_msg *m = app->batch[i].msg;
            if (!c || c->state > CCH__CONN_ACCEPTED) {
                dropped++;
                cch_msg_unref(m);
                continue;
            }
            dispatch_slot *sl = slot_find(slots, m, c->route);
            if (sl->msg != m || sl->route != c->route) {
                slot_flush(sl);
                sl->msg = m;
                sl->route = c->route;
                sl->how = resolve(c->route, m, &sl->fn);
                if (sl->how == CCH__H_UNKNOWN)
                    cch__app_log(app, CCH_LOG_WARN,
                                 "no handler for message type '%s' (route '%.200s'): dropped",
                                 cch_msg_type(m), c->route->pattern->pattern);
            }
            sl->refs++; /* this delivery's reference, dropped with the slot's */
            dispatched++;
            switch (sl->how) {
            case CCH__H_HANDLER:
            case CCH__H_DEFAULT:
                sl->fn(c, m);
                break;
            case CCH__H_SEND:
                cch__conn_builtin_send(c, m);
                break;
            case CCH__H_CLOSE:
                cch__conn_builtin_close(c, m);
                break;
            default:
                unknown++;
                break;
            }
        }
        app->batch_n = 0;
        app->batch_pos = 0;
        total += (size_t)n;
        if ((size_t)n < want) break;
    }
    for (size_t i = 0; i < DISPATCH_SLOTS; i++)
        if (slots[i].msg) slot_flush(&slots[i]);
    app->dispatching = false;
    app->stats.messages_dispatched += dispatched;
    app->stats.unknown_type += unknown;
    app->stats.dropped_closed += dropped;
    if (err < 0 && total == 0) return err;
    return total > (size_t)INT32_MAX ? INT32_MAX : (int)total;
}
