/* lib/core/layer.c - the public channel-layer functions (cchannels/layer.h).
 *
 * Each wrapper checks its arguments and names, then calls the layer's operation
 * (cchannels/layer_impl.h), so implementations may assume valid input. Also the
 * layer base (init, log, reference counting) and Django Channels' name rules. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cchannels/layer.h"
#include "cchannels/layer_impl.h"

/* ---- names ------------------------------------------------------------------ */

static inline bool name_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

/* Group: ^[a-zA-Z\d\-_.]+$, shorter than 100 bytes. */
bool cch_valid_group_name(const char *name) {
    if (!name) return false;
    size_t n = 0;
    for (; name[n]; n++)
        if (n >= CCH_NAME_MAX || !name_char((unsigned char)name[n])) return false;
    return n > 0;
}

/* Channel: ^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$, shorter than 100 bytes. \d and \w are
 * taken as ASCII here (Python's re would also accept Unicode letters and digits). */
bool cch_valid_channel_name(const char *name) {
    if (!name) return false;
    size_t n = 0, bang = 0;
    bool seen_bang = false;
    for (; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        if (n >= CCH_NAME_MAX) return false;
        if (c == '!') {
            if (seen_bang) return false;
            seen_bang = true;
            bang = n;
        } else if (!name_char(c)) {
            return false;
        }
    }
    if (seen_bang) return bang > 0;
    return n > 0;
}

/* ---- the base --------------------------------------------------------------- */

void cch_layer_init(cch_layer *l, const cch_layer_ops *ops) {
    if (!l) return;
    l->ops = ops;
    atomic_init(&l->refs, 1);
    l->log = NULL;
    l->log_ud = NULL;
}

void cch_layer_log(cch_layer *l, int level, const char *fmt, ...) {
    if (!l || !l->log || !fmt) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    l->log(l->log_ud, level, buf);
}

cch_layer *cch_layer_ref(cch_layer *l) {
    if (l) atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

void cch_layer_unref(cch_layer *l) {
    if (!l) return;
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1 && l->ops &&
        l->ops->destroy)
        l->ops->destroy(l);
}

const char *cch_layer_kind(const cch_layer *l) {
    return l && l->ops && l->ops->kind ? l->ops->kind : "";
}

void cch_layer_set_log(cch_layer *l, cch_log_fn fn, void *ud) {
    if (!l) return;
    l->log = fn;
    l->log_ud = fn ? ud : NULL;
}

/* ---- operations --------------------------------------------------------------- */

cch_receiver *cch_layer_receiver_new(cch_layer *l, cch_wakeup_fn wakeup, void *ud) {
    if (!l) return NULL;
    return l->ops->receiver_new(l, wakeup, ud);
}

void cch_layer_receiver_free(cch_layer *l, cch_receiver *r) {
    if (!l || !r) return;
    l->ops->receiver_free(l, r);
}

int cch_layer_new_channel(cch_layer *l, const char *prefix, cch_receiver *r,
                          void *channel_ud, char *name, size_t cap) {
    if (!l || !name) return CCH_EINVAL;
    if (cap) name[0] = '\0';
    if (!prefix) prefix = "specific";
    if (!cch_valid_group_name(prefix)) return CCH_ENAME;
    return l->ops->new_channel(l, prefix, r, channel_ud, name, cap);
}

int cch_layer_release_channel(cch_layer *l, const char *channel) {
    if (!l || !channel) return CCH_EINVAL;
    if (!cch_valid_channel_name(channel)) return CCH_ENAME;
    return l->ops->release_channel(l, channel);
}

int cch_layer_send(cch_layer *l, const char *channel, const cch_msg *m) {
    if (!l || !channel || !m) return CCH_EINVAL;
    if (!cch_valid_channel_name(channel)) return CCH_ENAME;
    return l->ops->send(l, channel, m);
}

int cch_layer_receive(cch_layer *l, const char *channel, cch_msg **out) {
    if (out) *out = NULL;
    if (!l || !channel || !out) return CCH_EINVAL;
    if (!cch_valid_channel_name(channel)) return CCH_ENAME;
    return l->ops->receive(l, channel, out);
}

int cch_layer_poll(cch_layer *l, cch_receiver *r, cch_delivery *out, size_t max) {
    if (!l || !r || (!out && max)) return CCH_EINVAL;
    if (max == 0) return 0;
    if (max > INT32_MAX) max = INT32_MAX;
    return l->ops->poll(l, r, out, max);
}

int cch_layer_group_add(cch_layer *l, const char *group, const char *channel) {
    if (!l || !group || !channel) return CCH_EINVAL;
    if (!cch_valid_group_name(group) || !cch_valid_channel_name(channel)) return CCH_ENAME;
    return l->ops->group_add(l, group, channel);
}

int cch_layer_group_discard(cch_layer *l, const char *group, const char *channel) {
    if (!l || !group || !channel) return CCH_EINVAL;
    if (!cch_valid_group_name(group) || !cch_valid_channel_name(channel)) return CCH_ENAME;
    return l->ops->group_discard(l, group, channel);
}

int cch_layer_group_send(cch_layer *l, const char *group, const cch_msg *m,
                         const char *exclude, cch_group_send_result *result) {
    if (result) memset(result, 0, sizeof *result);
    if (!l || !group || !m) return CCH_EINVAL;
    if (!cch_valid_group_name(group)) return CCH_ENAME;
    if (exclude && !cch_valid_channel_name(exclude)) return CCH_ENAME;
    cch_group_send_result tmp;
    memset(&tmp, 0, sizeof tmp);
    return l->ops->group_send(l, group, m, exclude, result ? result : &tmp);
}

int cch_layer_group_members(cch_layer *l, const char *group, cch_members_fn cb, void *ud) {
    if (!l || !group || !cb) return CCH_EINVAL;
    if (!cch_valid_group_name(group)) return CCH_ENAME;
    return l->ops->group_members(l, group, cb, ud);
}

bool cch_layer_congested(cch_layer *l) {
    return l && l->ops->congested && l->ops->congested(l);
}

void cch_layer_stats_get(cch_layer *l, cch_layer_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (l) l->ops->stats(l, out);
}
