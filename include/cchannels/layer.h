/* cchannels/layer.h - the channel layer: channels, groups and typed messages.
 *
 * Every connection has a channel (a unique name); channels join groups; a message
 * sent to a group reaches every member. This header is what users of a layer call;
 * cchannels/layer_impl.h is what authors of a layer implement, and
 * cchannels/memory_layer.h is the in-memory layer (the embedded default).
 *
 * Names follow Django Channels: a group name matches [A-Za-z0-9._-]+, a channel name
 * the same optionally followed by one '!' and a process-local part
 * ("specific.3fa9c1!a81c"), and both are shorter than CCH_NAME_MAX + 1 bytes.
 *
 * Threads: every function here may be called from any thread. A channel may be
 * bound to a *receiver* (one per event loop / app): when messages arrive for any of
 * the receiver's channels, the receiver's wakeup callback is called (from the
 * sending thread), and the receiver's owner then collects them with
 * cch_layer_poll(). Layers whose storage is remote (Redis) complete some operations
 * later; their failures are reported through the log callback and counted in
 * cch_layer_stats. */
#ifndef CCHANNELS_LAYER_H
#define CCHANNELS_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* Longest channel or group name, in bytes (Channels: strictly under 100). */
#define CCH_NAME_MAX 99
/* Size of a buffer that holds any name plus its NUL. */
#define CCH_NAME_BUF (CCH_NAME_MAX + 1)

typedef struct cch_layer cch_layer;
typedef struct cch_receiver cch_receiver;

/* Called when a receiver goes from "nothing pending" to "something pending".
 * Called from whichever thread sent the message, outside the layer's locks; it must
 * only schedule work (uv_async_send, a condition variable, a flag), never poll or
 * call back into the layer synchronously. */
typedef void (*cch_wakeup_fn)(void *ud);

/* One message collected by cch_layer_poll: the channel's user pointer (given to
 * cch_layer_new_channel) and one reference to the message, owned by the poller. */
typedef struct cch_delivery {
    void *channel_ud;
    cch_msg *msg;
} cch_delivery;

/* Counters, cumulative since the layer was created. */
typedef struct cch_layer_stats {
    uint64_t sent;                /* messages accepted into a channel queue */
    uint64_t delivered;           /* messages handed out by receive/poll */
    uint64_t full;                /* sends refused / group members skipped: channel full */
    uint64_t expired;             /* messages dropped because they expired unread */
    uint64_t groups_expired;      /* memberships dropped by group_expiry */
    uint64_t dropped;             /* messages lost otherwise (released channel, fault) */
    uint64_t errors;              /* operations that failed asynchronously */
    uint64_t congested;           /* times the layer became congested (cch_layer_congested) */
} cch_layer_stats;

/* Reference counting. A layer is created with one reference; cch_app_new() takes over
 * one. cch_layer_ref returns `l`; the last cch_layer_unref frees it (every receiver
 * must have been freed first). Thread-safe. NULL is ignored. */
cch_layer *cch_layer_ref(cch_layer *l);
void cch_layer_unref(cch_layer *l);

/* The layer's kind ("memory", "redis"). Static string. */
const char *cch_layer_kind(const cch_layer *l);

/* Sets the log sink for the layer's own reports (NULL: silent). Set it before the
 * layer is shared between threads. */
void cch_layer_set_log(cch_layer *l, cch_log_fn fn, void *ud);

/* Creates a receiver: the owner of a set of channels, woken by `wakeup(ud)` when any
 * of them has messages. Returns NULL on CCH_ENOMEM (or a layer error). The caller
 * owns it and frees it with cch_layer_receiver_free after releasing its channels. */
cch_receiver *cch_layer_receiver_new(cch_layer *l, cch_wakeup_fn wakeup, void *ud);
void cch_layer_receiver_free(cch_layer *l, cch_receiver *r);

/* Creates a new unique channel named "<prefix>.<process part>!<unique part>" and
 * writes its name (NUL-terminated) into `name`, which holds `cap` bytes
 * (CCH_NAME_BUF is always enough). `prefix` NULL means "specific".
 * If `r` is not NULL the channel is bound to it: its messages are collected by
 * cch_layer_poll(l, r, ...) and reported with `channel_ud`. Unbound channels are
 * read with cch_layer_receive.
 * Returns 0, CCH_EINVAL, CCH_ENAME (bad prefix), CCH_ETOOBIG (cap too small),
 * CCH_ENOMEM. */
int cch_layer_new_channel(cch_layer *l, const char *prefix, cch_receiver *r,
                          void *channel_ud, char *name, size_t cap);

/* Forgets a channel made by cch_layer_new_channel: drops its pending messages
 * (counted as dropped) and stops reporting it to its receiver. Group memberships are
 * not touched (the caller discards them; group_expiry cleans what it forgets).
 * Returns 0, CCH_ENAME, CCH_ENOTFOUND. */
int cch_layer_release_channel(cch_layer *l, const char *channel);

/* Sends `m` to one channel. The layer takes its own reference; the caller keeps its
 * own. Returns 0, CCH_EINVAL, CCH_ENAME, CCH_ECHANFULL (the channel holds `capacity`
 * messages already; nothing was queued), CCH_ENOMEM. */
int cch_layer_send(cch_layer *l, const char *channel, const cch_msg *m);

/* Takes the oldest unexpired message of an unbound channel without waiting.
 * Returns 0 and sets *out (one reference, the caller's), or CCH_EAGAIN when there
 * is none, CCH_ENAME, CCH_EINVAL (a bound channel: use cch_layer_poll). */
int cch_layer_receive(cch_layer *l, const char *channel, cch_msg **out);

/* Collects up to `max` pending messages of the receiver's channels into `out`, in
 * the order each channel received them. Each entry holds one message reference
 * that the caller must drop. Expired messages are dropped (and counted), not
 * returned. Returns the number written (0 when none), or CCH_EINVAL. */
int cch_layer_poll(cch_layer *l, cch_receiver *r, cch_delivery *out, size_t max);

/* Adds `channel` to `group`, or refreshes its membership time if it is already a
 * member. A membership lasts group_expiry; re-adding renews it.
 * Returns 0, CCH_EINVAL, CCH_ENAME, CCH_ENOMEM. */
int cch_layer_group_add(cch_layer *l, const char *group, const char *channel);

/* Removes `channel` from `group`. Discarding a non-member (or from a group that
 * does not exist) is not an error, as in Channels. Returns 0, CCH_EINVAL, CCH_ENAME. */
int cch_layer_group_discard(cch_layer *l, const char *group, const char *channel);

/* Result of a group_send. */
typedef struct cch_group_send_result {
    size_t delivered;   /* members the message was queued for */
    size_t full;        /* members skipped because their channel was full */
    size_t expired;     /* memberships found expired and removed */
} cch_group_send_result;

/* Sends `m` to every member of `group` except `exclude` (NULL: nobody excluded),
 * sharing the one message between them: the layer adds references, never copies.
 * Members whose channel is full are skipped and counted. `result` may be NULL.
 * Sending to an empty or unknown group is not an error. The caller keeps its
 * reference. Returns 0, CCH_EINVAL, CCH_ENAME, CCH_ENOMEM. */
int cch_layer_group_send(cch_layer *l, const char *group, const cch_msg *m,
                         const char *exclude, cch_group_send_result *result);

/* Presence: reports the unexpired members of `group` to cb(ud, status, names, n):
 * `names` is an array of n NUL-terminated channel names, valid only during the call
 * (n is 0 for an unknown group). status is 0, or a negative code when the layer could
 * not answer (then names is NULL). The memory layer calls cb before returning; a
 * remote layer may call it later from its loop. Returns 0 when cb has been or will
 * be called exactly once, otherwise a negative code (CCH_EINVAL, CCH_ENAME,
 * CCH_ENOMEM) and cb is never called. */
typedef void (*cch_members_fn)(void *ud, int status, const char *const *names, size_t n);
int cch_layer_group_members(cch_layer *l, const char *group, cch_members_fn cb, void *ud);

/* Flow control: whether some receiver has fallen behind, i.e. a channel bound to a
 * receiver holds more messages than the layer's high-water mark (the memory layer:
 * half its capacity) and is not full (a full channel's receiver has stopped keeping
 * up altogether, or is never polled: holding senders back for it would only stall
 * them). A host whose input produces messages (the WebSocket adapter
 * reads its clients) may stop reading while this holds, so that senders on one
 * thread do not outrun a receiver on another until its channels are full and
 * group_send skips them (counted in `full`). When the layer stops being congested it
 * calls the wakeup of every receiver (but the one whose poll cleared it), so that a
 * host that paused resumes even when nothing else is pending for it.
 * It is a hint: one atomic load, no lock, possibly stale by the time the caller acts
 * on it; a receiver that is never polled keeps it set until its channel is full, so
 * a host must bound its pauses. Nothing is lost as long as what the senders can
 * still have in flight when the pause starts fits between the mark and the capacity
 * (with the memory layer's default capacity of 100: 50 messages per channel).
 * Thread-safe. false for NULL and for layers that do not track it. */
bool cch_layer_congested(cch_layer *l);

/* Copies the layer's counters into *out. */
void cch_layer_stats_get(cch_layer *l, cch_layer_stats *out);

/* Name checks (Django Channels' rules). */
bool cch_valid_group_name(const char *name);
bool cch_valid_channel_name(const char *name);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
