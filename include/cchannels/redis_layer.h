/* cchannels/redis_layer.h - the Redis channel layer, wire-compatible with Django's
 * channels_redis 4.0 (meson option `redis`; hiredis, libuv, msgpack-c, jansson).
 *
 * A C process on this layer is a full member of a Django Channels deployment: its
 * consumers and Django's share groups, and each side's group_send and send reach the
 * other's consumers. Two formats are spoken, chosen by the URL scheme:
 *
 *   redis://          channels_redis.core.RedisChannelLayer (the one the Channels
 *                     tutorial configures): per-process message queues in sorted sets
 *                     ("asgispecific.<process>!"), group memberships in sorted sets
 *                     ("asgi:group:<group>"), msgpack with a 12-byte random prefix,
 *                     "__asgi_channel__", capacity, expiry and group_expiry.
 *   redis+pubsub://   channels_redis.pubsub.RedisPubSubChannelLayer: PUBLISH and
 *                     SUBSCRIBE, nothing stored, plain msgpack; at-most-once.
 *
 * Several URLs shard the layer over several Redis servers with channels_redis's
 * consistent hash (CRC-32 of a name, low 12 bits, scaled to the number of servers),
 * so both sides pick the same server for every key. One deliberate difference: a
 * direct send to a process-local channel ("specific.P!X") hashes its NON-local name
 * ("specific.P!"), which is where the receiving process reads. channels_redis 4.0
 * hashes the full name there, so with more than one server some of ITS direct sends
 * never reach a Python receiver; ours always do. And this layer pops its queue key on
 * every server, so channels_redis's direct sends to C consumers arrive wherever they
 * land. group_send is unaffected (both hash the non-local name).
 *
 * Messages: our {type, body} is the msgpack map {"type": type, <body's fields>}.
 * JSON integers, floats, strings, booleans, null, arrays and objects map to msgpack
 * and back exactly (floats as float64). A received value that JSON cannot hold
 * (msgpack bin or ext, a non-string map key, NaN or infinity, a non-string "type")
 * is logged and counted in `errors`, and the message is dropped. A body may not have
 * a "type" or "__asgi_channel__" field (CCH_EBODY).
 *
 * How it works: the layer owns one I/O thread running its own libuv loop with two
 * hiredis connections per server (one for commands, one for the blocking pop or the
 * subscriptions). Every public call only queues an operation for that thread (under a
 * mutex, woken with uv_async_send), so all calls are thread-safe and never block on
 * the network. The process's own channels, their receivers and wakeups are an
 * internal in-memory layer (cchannels/memory_layer.h): what the I/O thread pops from
 * this process's queue key is handed to it, and receivers, poll() and wakeups behave
 * exactly as with the memory layer (wakeups come from the I/O thread).
 *
 * Differences from the memory layer's return values, because Redis answers later:
 *  - cch_layer_send to another process's channel returns 0 once queued; a full
 *    destination is counted in `full` (and logged at info) when Redis answers.
 *    A send to one of this process's own channels is delivered in-process at once
 *    (never through Redis) and returns CCH_ECHANFULL synchronously.
 *  - cch_layer_group_send returns 0 once queued and fills `result` with zeros; what
 *    happened is counted in cch_layer_stats. Members in this process are served from
 *    the one queue entry Redis holds for the whole process, as channels_redis does.
 *
 * Backpressure (core format): a group_send's entry for another process whose queue
 * key is at capacity is not dropped at once, as channels_redis drops it: it waits in
 * this process, in order (later entries for that key wait behind it), and is written
 * when the key has room; this process's own members of that group_send (and of later
 * ones) are served only then, so a sender that waits for its own echo slows down to
 * what the slowest receiving process drains. Likewise a message popped for one of our
 * channels that is full waits (and the pop loop pauses, so that our queue key fills
 * up and its senders wait). Nothing is lost or reordered that way. A key or channel
 * still full after 2 seconds (its process or consumer is gone or stuck) gets
 * channels_redis's treatment instead: what does not fit is dropped and counted in
 * `full`, until it takes messages again. The layer writes at most one group_send
 * script per server at a time, carrying every entry that waited meanwhile, and
 * consecutive group_sends to one group read its members once.
 *  - send, group_send, group_discard and a group_add of a foreign channel return
 *    CCH_ELIMIT (and count `dropped`) when `max_pending` operations are already
 *    waiting for Redis.
 *  - cch_layer_group_members calls its callback LATER, FROM THE I/O THREAD (see
 *    below).
 *  - cch_layer_receive on a plain channel name ("myqueue", no '!') returns
 *    CCH_EAGAIN and asks Redis for one message in the background (ZPOPMIN); a later
 *    call returns it. receive on another process's "x!y" channel is CCH_EINVAL.
 *
 * Faults: when a Redis server goes away the layer logs it (warn), keeps serving
 * in-process work, and reconnects with exponential backoff (reconnect_min_ms ..
 * reconnect_max_ms). Meanwhile operations for that server wait in a bounded buffer
 * (max_pending; beyond it they are refused with CCH_ELIMIT and counted in
 * `dropped`); a group_send is delivered at once to this process's members and sent
 * to the others once Redis is back. When it is back the layer replays the buffer and
 * re-adds every group membership of this process's live channels. It also re-adds
 * them every group_expiry / 3 seconds, so a connection open for days stays in its
 * groups (Django's own consumers do not do that). Whatever is lost (commands in
 * flight when the connection broke, messages for channels that no longer exist) is
 * counted in cch_layer_stats. In pubsub mode nothing is buffered: sends while
 * disconnected are dropped and counted, as PUBLISH would not keep them either.
 *
 * Counters (cch_layer_stats): `sent` counts per recipient channel: messages written
 * to Redis for other processes' channels plus messages queued in-process; `full`
 * counts recipients skipped for capacity (Redis queues and in-process queues);
 * `expired` counts queued messages dropped for age (in Redis by our writes, and
 * in-process); `groups_expired` counts memberships dropped by group_expiry;
 * `dropped` counts messages lost otherwise; `errors` counts failed Redis commands and
 * undecodable messages.
 *
 * Threads: as for every layer, all functions may be called from any thread.
 * cch_layer_group_members's callback runs on the I/O thread: it may call the layer's
 * functions (they only queue work), and if it drops the last reference the layer is
 * freed by the I/O thread once the callback has returned. A receiver's wakeup, also
 * called from the I/O thread, must only schedule work (cchannels/layer.h): it must not
 * call the layer at all. */
#ifndef CCHANNELS_REDIS_LAYER_H
#define CCHANNELS_REDIS_LAYER_H

#include <stdbool.h>
#include <stddef.h>

#include "layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define CCH_REDIS_DEFAULT_URL "redis://127.0.0.1:6379"
#define CCH_REDIS_DEFAULT_PREFIX "asgi"
#define CCH_REDIS_DEFAULT_CAPACITY 100          /* messages per queue key */
#define CCH_REDIS_DEFAULT_EXPIRY_S 60u          /* a queued message lives 60 s */
#define CCH_REDIS_DEFAULT_GROUP_EXPIRY_S 86400u /* a membership lives 1 day */
#define CCH_REDIS_DEFAULT_MAX_PENDING 10000     /* operations waiting for Redis */
#define CCH_REDIS_DEFAULT_RECONNECT_MIN_MS 100u
#define CCH_REDIS_DEFAULT_RECONNECT_MAX_MS 5000u
#define CCH_REDIS_MAX_SERVERS 64                /* most URLs (shards) */
#define CCH_REDIS_PREFIX_MAX 32                 /* longest key prefix, bytes */

/* A capacity for the channels whose full name matches a glob `pattern` (fnmatch(3)
 * without flags, as Python's fnmatch.translate: '*' also matches '.' and '!'). */
typedef struct cch_redis_capacity {
    const char *pattern;
    size_t capacity;
} cch_redis_capacity;

/* Options; zero-initialise and set what you need. A zero field takes its default.
 * Everything is copied by cch_redis_layer_new. */
typedef struct cch_redis_layer_options {
    /* The servers, one URL each:
     *   redis://[[user]:password@]host[:port][/db]          (port 6379, db 0)
     *   redis+pubsub://[[user]:password@]host[:port][/db]   (the pub/sub format)
     * host is a name, an IPv4 address or [an IPv6 address]; user and password may be
     * %-encoded. All URLs must use the same scheme. Default: CCH_REDIS_DEFAULT_URL. */
    const char *const *urls;
    size_t n_urls;
    const char *prefix;          /* key prefix; default "asgi" ([A-Za-z0-9._:-], <= 32) */
    size_t capacity;             /* per queue key, and per in-process channel; default 100 */
    /* Per-channel capacities; the first matching pattern wins, else `capacity`.
     * (Redis queues only: in-process channels all hold `capacity`.) */
    const cch_redis_capacity *channel_capacity;
    size_t n_channel_capacity;
    unsigned expiry_s;           /* message expiry; default 60 */
    unsigned group_expiry_s;     /* membership expiry; default 86400 */
    size_t max_pending;          /* operations queued or in flight; default 10000 */
    unsigned reconnect_min_ms;   /* first reconnection delay; default 100 */
    unsigned reconnect_max_ms;   /* longest reconnection delay; default 5000 */
    cch_log_fn log;              /* the layer's log sink (as cch_layer_set_log) */
    void *log_ud;
} cch_redis_layer_options;

/* Creates a Redis layer with one reference (the caller's) in *out. `opts` may be
 * NULL (all defaults). Connecting happens in the background: this never waits for
 * Redis, and operations made before the connection is up wait for it (see "Faults"
 * above); cch_redis_layer_sync waits until it is up. Returns 0, CCH_EINVAL (out NULL,
 * a bad URL, mixed schemes, a bad prefix, too many URLs, min > max delay),
 * CCH_ENOTSUP (rediss://, unix://), CCH_ENOMEM, or CCH_EIO (the I/O thread or its
 * loop could not be started). *out is NULL on failure. */
int cch_redis_layer_new(const cch_redis_layer_options *opts, cch_layer **out);

/* The same, with one URL and every other option at its default, e.g.
 * cch_redis_layer_new_url("redis://127.0.0.1:6379", &layer). */
int cch_redis_layer_new_url(const char *url, cch_layer **out);

/* Waits up to timeout_ms until every server is connected and every operation made
 * so far (by any thread) has been answered by Redis or has failed and been counted.
 * For tests, tools and orderly shutdowns. Must not be called from the I/O thread (a
 * group_members callback or a wakeup). Returns 0; CCH_ETRANSPORT when the time ran out
 * while some server was disconnected; CCH_EAGAIN when it ran out with operations
 * still outstanding; CCH_EINVAL when `l` is not a Redis layer. */
int cch_redis_layer_sync(cch_layer *l, unsigned timeout_ms);

/* Whether every server's command connection is up right now (false for a layer
 * that is not a Redis layer). */
bool cch_redis_layer_connected(cch_layer *l);

/* This process's part of channel names ("P" in "specific.P!X"), NUL-terminated,
 * owned by the layer; NULL when `l` is not a Redis layer. Its queue key is
 * "<prefix>specific.P!". */
const char *cch_redis_layer_process(cch_layer *l);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
