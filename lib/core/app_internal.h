/* lib/core/app_internal.h - internal: the app, its routes, and the connection struct
 * shared by app.c (routing, middleware, dispatch) and conn.c (one connection). */
#ifndef CCH_INTERNAL_APP_H
#define CCH_INTERNAL_APP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cchannels/app.h"
#include "route.h"
#include "scope_internal.h"

/* Messages collected from the layer per poll, in an array the app owns. */
#define CCH__APP_BATCH 256

struct cch__handler_entry;   /* uthash entry: normalised type -> handler (app.c) */

/* Dispatch's table of (message, route) -> handling, with the deliveries made (app.c). */
#define CCH__DISPATCH_SLOTS 512u
struct cch__route_entry;
struct cch__dispatch_slot {
    const cch_msg *msg;                  /* NULL: free */
    const struct cch__route_entry *route;
    cch_handler_fn fn;
    size_t refs;                         /* deliveries made: references to drop */
    int how;
};

/* One route: a compiled pattern, its class, and the class's handlers compiled into a
 * hash table keyed by the type with '.' turned into '_'. */
typedef struct cch__route_entry {
    struct cch__route_entry *next;
    cch__route *pattern;
    const cch_consumer_class *cls;
    void *class_ud;
    struct cch__handler_entry *handlers;
} cch__route_entry;

typedef struct cch__middleware_entry {
    const cch_middleware *mw;
    void *ud;
} cch__middleware_entry;

/* How a (route, message type) pair is handled. */
enum cch__handling {
    CCH__H_HANDLER = 0,   /* the class's handler for the type */
    CCH__H_SEND,          /* built-in websocket.send */
    CCH__H_CLOSE,         /* built-in websocket.close */
    CCH__H_DEFAULT,       /* the class's default_handler */
    CCH__H_UNKNOWN        /* logged, counted, dropped */
};

struct cch_app {
    cch_layer *layer;
    cch_receiver *receiver;
    cch_log_fn log;
    void *log_ud;
    /* The host's wakeup and its argument, read by layer threads: both change and are
     * called under wakeup_lock, so that once cch_app_set_wakeup returns no thread
     * still calls the old pair (a host clears it before freeing what ud points to). */
    pthread_mutex_t wakeup_lock;
    cch_wakeup_fn wakeup;
    void *wakeup_ud;
    cch__route_entry *routes;
    cch__route_entry **routes_tail;
    cch__middleware_entry *mws;
    size_t n_mws;
    cch_app_stats stats;
    /* Dispatch: the batch being delivered; entries from `batch_pos` on are still to
     * be delivered (a connection that ends meanwhile clears its own). */
    bool dispatching;
    size_t batch_pos;
    size_t batch_n;
    cch_delivery batch[CCH__APP_BATCH];
    struct cch__dispatch_slot slots[CCH__DISPATCH_SLOTS]; /* empty between dispatches */
};

/* Connection states. */
enum cch__conn_state {
    CCH__CONN_PENDING = 0,   /* connect running or undecided */
    CCH__CONN_ACCEPTED,
    CCH__CONN_CLOSING,       /* cch_close sent, or the transport failed */
    CCH__CONN_REJECTED,      /* the handshake was refused */
    CCH__CONN_GONE           /* cch_conn_disconnected is running */
};

/* Bytes of a channel name kept inside the connection; a longer name (a layer with
 * long prefixes) gets a heap buffer of CCH_NAME_BUF. The memory layer's names are 23
 * to 38 bytes ("specific.<12 hex>!<counter in hex>"); what the name leaves free holds
 * the names of the groups joined while they fit (a chat room's one group, usually).
 * 56 keeps the struct a multiple of 16 bytes on LP64. */
#define CCH__CONN_NAME_INLINE 56

/* One connection: a single allocation holding this struct, then the consumer's
 * state (aligned), so an idle connection costs this struct, its scope buffer, what
 * the layer keeps for its channel and, when they do not fit in channel_buf, one
 * buffer of joined group names. */
struct cch_conn {
    cch_app *app;
    const cch__route_entry *route;    /* NULL when rejected before routing */
    const cch_transport *tp;
    void *tctx;
    char *groups;                     /* the groups joined with cch_group_add: names,
                                         each NUL-terminated, back to back; in
                                         channel_buf after the channel's name while
                                         they fit, else a heap buffer */
    uint32_t groups_len;              /* bytes used in `groups` */
    uint32_t n_groups;
    uint8_t state;                    /* enum cch__conn_state */
    bool connect_ran;
    bool has_channel;
    bool channel_big;                 /* the name is on the heap, its pointer in
                                         channel_buf (cch__conn_channel) */
    cch_scope scope;
    char channel_buf[CCH__CONN_NAME_INLINE];
};

/* c's channel name: in channel_buf, or on the heap when longer ("" if none). */
static inline char *cch__conn_channel(const cch_conn *c) {
    char *p = (char *)c->channel_buf;
    if (c->channel_big) memcpy(&p, c->channel_buf, sizeof p);
    return p;
}

/* Where the state starts after the struct. */
#define CCH__CONN_STATE_OFFSET \
    ((sizeof(struct cch_conn) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

/* printf-style report through the app's log sink (nothing when none is set). */
void cch__app_log(cch_app *app, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The first route whose pattern matches `path`, filling spans; NULL when none. */
const cch__route_entry *cch__app_match(cch_app *app, const char *path, cch__route_span *spans);

/* Runs the middleware chain on `s`. Returns 0 to go on, or the HTTP status to
 * reject with (400..599; 500 for a negative code or an invalid status). */
int cch__app_run_middleware(cch_app *app, cch_scope *s);

/* The connection is ending: drops the deliveries for it still in the batch. */
void cch__app_forget_conn(cch_app *app, cch_conn *c);

/* Built-in handlers (conn.c). */
void cch__conn_builtin_send(cch_conn *c, const cch_msg *m);
void cch__conn_builtin_close(cch_conn *c, const cch_msg *m);

#endif
