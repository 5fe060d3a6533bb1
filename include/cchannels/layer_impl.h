/* cchannels/layer_impl.h - the interface a channel layer implements.
 *
 * Only layer authors need this header. A layer is a struct whose first member is a
 * `cch_layer` (the base below) with `ops` pointing at a static table; the public
 * functions in cchannels/layer.h check their arguments (names, NULLs) and then call
 * these operations, so an implementation may assume valid names and non-NULL
 * pointers. Every operation may be called from any thread: the implementation
 * provides its own locking. Semantics and return codes are those documented for the
 * corresponding public function. */
#ifndef CCHANNELS_LAYER_IMPL_H
#define CCHANNELS_LAYER_IMPL_H

#include <stdatomic.h>

#include "layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_layer_ops {
    const char *kind;
    cch_receiver *(*receiver_new)(cch_layer *l, cch_wakeup_fn wakeup, void *ud);
    void (*receiver_free)(cch_layer *l, cch_receiver *r);
    int (*new_channel)(cch_layer *l, const char *prefix, cch_receiver *r, void *channel_ud,
                       char *name, size_t cap);
    int (*release_channel)(cch_layer *l, const char *channel);
    int (*send)(cch_layer *l, const char *channel, const cch_msg *m);
    int (*receive)(cch_layer *l, const char *channel, cch_msg **out);
    int (*poll)(cch_layer *l, cch_receiver *r, cch_delivery *out, size_t max);
    int (*group_add)(cch_layer *l, const char *group, const char *channel);
    int (*group_discard)(cch_layer *l, const char *group, const char *channel);
    int (*group_send)(cch_layer *l, const char *group, const cch_msg *m, const char *exclude,
                      cch_group_send_result *result);
    int (*group_members)(cch_layer *l, const char *group, cch_members_fn cb, void *ud);
    void (*stats)(cch_layer *l, cch_layer_stats *out);
    /* Frees the layer; called by the last cch_layer_unref. */
    void (*destroy)(cch_layer *l);
    /* Optional (NULL: never congested; last, so that tables written before it stay
     * valid): cch_layer_congested. Must be cheap and must not lock: a busy host calls
     * it before every read. */
    bool (*congested)(cch_layer *l);
} cch_layer_ops;

/* The base of every layer. */
struct cch_layer {
    const cch_layer_ops *ops;
    atomic_int refs;
    cch_log_fn log;
    void *log_ud;
};

/* Initialises the base: ops, one reference, no log sink. */
void cch_layer_init(cch_layer *l, const cch_layer_ops *ops);

/* printf-style report through the layer's log sink (nothing when none is set). */
void cch_layer_log(cch_layer *l, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
