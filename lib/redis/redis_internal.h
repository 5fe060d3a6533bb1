/* lib/redis/redis_internal.h - internal: the Redis layer's shared structures.
 *
 * Split by concept:
 *   redis_layer.c   the layer operations (what app threads call), creation, stats
 *   redis_io.c      the I/O thread: loop, connections, reconnect, operation queue
 *   redis_core.c    channels_redis.core: commands, group_send fan-out, the pop loop
 *   redis_pubsub.c  channels_redis.pubsub: PUBLISH / (P)SUBSCRIBE
 *   redis_codec.c   msgpack <-> {type, JSON body}, the consistent hash, scores
 *   redis_conf.c    URLs, options, per-channel capacities
 *   redis_uv.c      hiredis on libuv (a fixed copy of hiredis's adapter)
 *
 * Locking: `lock` guards the operation queue, the counters and the name sets
 * (owned channels, queue keys, groups, fetches). The in-memory layer has its own
 * lock; ours may be held while calling it (never the other way round). hiredis
 * contexts and everything marked "I/O thread" are touched by the I/O thread only. */
#ifndef CCH_REDIS_INTERNAL_H
#define CCH_REDIS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <uv.h>

#include "alloc.h" /* before uthash.h */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "cchannels/layer_impl.h"
#include "memory_internal.h"
#include "cchannels/redis_layer.h"

#define RL_RANDOM_PREFIX 12        /* bytes before the msgpack map */
#define RL_ASGI_CHANNEL "__asgi_channel__"
#define RL_POP_TIMEOUT "5"         /* BZPOPMIN timeout, seconds, as channels_redis */
#define RL_DRAIN_BATCH 128         /* ZPOPMIN count after a BZPOPMIN */
#define RL_PUSH_BATCH 256          /* most group_send entries per key in one push */
#define RL_PUSH_BYTES 65536        /* ... and about this many bytes of them in all */
#define RL_PUSH_RETRY_MS 1         /* a full queue key is tried again after this */
#define RL_FULL_PATIENCE_MS 2000   /* ... and given up on (channels_redis: dropped) */
#define RL_TRIM_AFTER (1u << 20)   /* bytes waited in outboxes: give them back after */

/* ---- a growable byte buffer (cch__ allocator) ------------------------------------ */

typedef struct rl_buf {
    char *p;
    size_t len, cap;
    bool oom;
} rl_buf;

void rl_buf_free(rl_buf *b);
bool rl_buf_put(rl_buf *b, const void *data, size_t n);
bool rl_buf_putc(rl_buf *b, char c);
bool rl_buf_printf(rl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- codec (redis_codec.c) --------------------------------------------------------- */

/* A message body as msgpack map entries (key, value, key, value...), without the map
 * header: built once per message and attached to it. */
typedef struct rl_body {
    uint32_t n;      /* entries */
    size_t len;
    char data[];
} rl_body;

/* The encoded body of `m`, from its attachment or parsed now (with jansson) and
 * attached. Returns 0 and *out (owned by the message), CCH_EBODY (a "type" or
 * "__asgi_channel__" field, an integer outside int64, a number jansson rejects) or
 * CCH_ENOMEM. */
int rl_body_get(const cch_msg *m, const rl_body **out);

/* Appends a whole queue member or PUBLISH payload to `b`: `random_prefix` random
 * bytes (0 or RL_RANDOM_PREFIX), then the map {"type", body..., "__asgi_channel__"}:
 * no "__asgi_channel__" when nchan is 0 and !as_list; a string when !as_list; else a
 * list of the nchan names. Returns false on out-of-memory. */
bool rl_encode(rl_buf *b, size_t random_prefix, const char *type, const rl_body *body,
               const char *const *chan, const size_t *chan_len, size_t nchan, bool as_list);

/* A decoded message. `chan` is NULL, or the "__asgi_channel__" value (a string, or an
 * array of strings: checked), pointing into `up`. */
typedef struct rl_incoming {
    msgpack_unpacked up;
    cch_msg *msg;
    const msgpack_object *chan;
} rl_incoming;

/* Decodes data[0..len) (a msgpack map, after any random prefix) into *in. Returns 0
 * (release with rl_incoming_done), or a negative code with a reason in err:
 * CCH_EBODY (not a map, a value JSON cannot hold, no string "type"...), CCH_ENAME (a
 * type cchannels refuses), CCH_ENOMEM. */
int rl_decode(rl_incoming *in, const char *data, size_t len, char *err, size_t errcap);
void rl_incoming_done(rl_incoming *in);

/* channels_redis's _consistent_hash: crc32(name) & 0xfff scaled to n shards. */
uint32_t rl_hash(const char *name, size_t len, uint32_t n);
uint32_t rl_crc32(const void *data, size_t len);

/* Fills buf with n pseudo-random bytes (a per-thread generator seeded from the
 * kernel; uniqueness, not secrecy, is what the prefix is for). */
void rl_random_bytes(void *buf, size_t n);

/* Wall-clock microseconds, strictly increasing per `last` (so that one sender's
 * messages keep their order in a sorted set). */
uint64_t rl_now_us(atomic_uint_fast64_t *last);

/* "1795646153.453321" (score) and "1795646093" (integer seconds minus `minus`). */
int rl_fmt_score(char *buf, size_t cap, uint64_t us);
int rl_fmt_cutoff(char *buf, size_t cap, uint64_t us, unsigned minus);

/* ---- configuration (redis_conf.c) --------------------------------------------------- */

typedef struct rl_url {
    char *host;
    int port;
    int db;
    char *user;      /* NULL: none */
    char *password;  /* NULL: no AUTH */
    bool pubsub;
} rl_url;

/* Parses one URL. Returns 0, CCH_EINVAL, CCH_ENOTSUP, CCH_ENOMEM. */
int rl_url_parse(const char *s, rl_url *out);
void rl_url_free(rl_url *u);

typedef struct rl_cap {
    char *pattern;
    size_t capacity;
} rl_cap;

/* ---- the layer ------------------------------------------------------------------------ */

typedef struct rl_layer rl_layer;
typedef struct rl_op rl_op;

enum rl_op_kind {
    RL_OP_SEND,         /* to another process's channel, or a plain one */
    RL_OP_GROUP_ADD,
    RL_OP_GROUP_DISCARD,
    RL_OP_GROUP_SEND,
    RL_OP_MEMBERS,
    RL_OP_FETCH,        /* receive on a plain channel: one ZPOPMIN */
    RL_OP_SUBSCRIBE,    /* pubsub: a group got its first local member */
    RL_OP_UNSUB_CHECK,  /* pubsub: a local member left a group */
    RL_OP_MAINT,        /* internal: re-adding memberships (only counts replies) */
};

#define RL_OPF_OWNED 1u       /* GROUP_ADD/DISCARD of one of our channels */
#define RL_OPF_LOCAL_DONE 2u  /* GROUP_SEND: our own members were already served */
#define RL_OPF_COUNTED 4u     /* holds a slot of max_pending */

struct rl_op {
    rl_op *next;
    uint8_t kind;
    uint8_t flags;
    uint32_t shard;
    uint32_t pending;           /* replies still expected (I/O thread) */
    uint64_t now_us;
    cch_msg *msg;               /* one reference (SEND, GROUP_SEND) */
    const rl_body *body;        /* GROUP_SEND: the message's encoded body */
    char *blob;                 /* SEND: the queue member / payload (in data) */
    size_t blob_len;
    cch_members_fn cb;
    void *cb_ud;
    const char *group;          /* in data, or NULL */
    const char *channel;        /* in data, or NULL */
    const char *exclude;        /* in data, or NULL */
    /* GROUP_SEND, I/O thread: entries not yet in Redis, and our own members, served
     * (in the order of the group_sends) once its entries are all in */
    uint32_t remote_left;
    size_t n_local;
    char *local_names;          /* n_local NUL-terminated names, or NULL */
    rl_op *local_next;          /* in rl_layer.local_head's list */
    rl_op *chain;               /* GROUP_SEND: later ones to the same group, sharing
                                   this one's ZRANGE (on_wake links them) */
    char data[];
};

/* Names in the sets below. */
typedef struct rl_name {
    UT_hash_handle hh;
    uint32_t shard;     /* qkeys: where its queue lives; groups: the group's shard */
    size_t len;
    char name[];
} rl_name;

/* A queue member a group_send writes to another process's queue key: it waits in
 * the key's outbox until Redis has room for it (redis_core.c). */
typedef struct rl_entry {
    struct rl_entry *next;
    rl_op *op;                  /* its group_send (holds one of op->pending) */
    size_t members;             /* channels it carries */
    size_t len;
    char data[];                /* random prefix + msgpack */
} rl_entry;

/* One queue key's outbox (I/O thread). */
typedef struct rl_outkey {
    UT_hash_handle hh;
    rl_entry *head, *tail;      /* in the order of the group_sends */
    size_t n;
    size_t cap;                 /* the key's capacity */
    uint64_t full_since;        /* loop ms of the first refusal of the head; 0: none */
    uint64_t retry_at;          /* loop ms: while full, not tried before */
    bool lossy;                 /* full for longer than RL_FULL_PATIENCE_MS: drop */
    size_t push_n;              /* entries in the push being built */
    size_t klen;
    char key[];
} rl_outkey;

typedef struct rl_conn_state {
    redisAsyncContext *ac;
    bool connected;     /* the connect callback succeeded */
    unsigned setup;     /* AUTH / SELECT replies still due */
    bool up;            /* connected and set up: usable */
} rl_conn_state;

typedef struct rl_shard {
    rl_layer *l;
    uint32_t idx;
    rl_url url;
    char label[160];            /* "redis://host:port/db" for logs */
    /* I/O thread */
    rl_conn_state cmd, pop;
    uv_timer_t retry;
    bool retry_armed;
    unsigned backoff_ms;
    bool ever_up, down_logged;
    rl_op *pend_head, *pend_tail;   /* operations waiting for this shard */
    long long pop_id;               /* CLIENT ID of the pop connection, -1 unknown */
    bool pop_busy, pop_blocking, unblock_sent;
    bool wake_hold;                 /* core: wakeups wait for the drain's reply */
    char *drain_key;                /* core: the key to ZPOPMIN next, or NULL */
    size_t drain_len;
    rl_outkey *outkeys;             /* core: group_send entries waiting, per key */
    size_t out_entries;
    bool push_busy;                 /* core: one push script in flight */
    uv_timer_t push_timer;          /* core: retries a full key */
    bool push_timer_armed;
    uint32_t sub_pending;           /* pubsub: (un)subscribe confirmations due */
    bool pop_subscribed;            /* pubsub: groups and channels subscribed */
    /* any thread */
    atomic_bool up;                 /* cmd.up, for app threads */
    atomic_bool pop_ready;          /* pop connection up (pubsub: and confirmed) */
} rl_shard;

typedef struct rl_stats {
    uint64_t sent, full, expired, groups_expired, dropped, errors;
    uint64_t refused;   /* in-process sends refused (full) and tried again: not `full` */
} rl_stats;

/* A received message some of whose in-process channels were full: it waits, with
 * the names still due, and so does every later one (redis_core.c). */
typedef struct rl_held {
    struct rl_held *next;
    cch_msg *msg;               /* one reference */
    uint64_t since;             /* loop ms of the first refusal */
    size_t n;                   /* names still due */
    size_t len;                 /* bytes of names in use */
    char names[];               /* n NUL-terminated names */
} rl_held;

struct rl_layer {
    cch_layer base;
    cch_layer *local;           /* the in-memory layer for this process's channels */
    /* configuration (read-only after creation) */
    bool pubsub;
    char prefix[CCH_REDIS_PREFIX_MAX + 1];
    size_t prefix_len;
    size_t capacity;
    rl_cap *caps;
    size_t n_caps;
    unsigned expiry_s, group_expiry_s;
    size_t max_pending;
    unsigned reconnect_min_ms, reconnect_max_ms;
    uint32_t n_shards;
    rl_shard *shards;
    char proc[CCH_NAME_BUF];    /* this process's part of channel names */
    /* shared, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    rl_op *in_head, *in_tail;   /* operations for the I/O thread */
    size_t busy;                /* operations not finished yet */
    size_t counted;             /* of which hold a max_pending slot */
    unsigned sync_waiters;
    rl_name *owned;             /* our live channels */
    rl_name *qkeys;             /* our queue keys' non-local names ("specific.P!") */
    rl_name *groups;            /* groups with (or that had) local members */
    rl_name *fetching;          /* plain channels with a ZPOPMIN in flight */
    atomic_uint rr_send, rr_recv;   /* round robin for plain channels */
    rl_stats st;
    bool stopping;
    bool readd_all;             /* re-add memberships on every shard soon */
    bool keys_changed;          /* a new queue key: pop it / PSUBSCRIBE it */
    /* I/O thread */
    pthread_t thread;
    bool thread_started;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t refresh;
    bool self_destroy;          /* destroyed from the I/O thread itself */
    rl_op *local_head, *local_tail; /* core: group_sends whose own members wait */
    rl_held *held_head, *held_tail; /* deliveries waiting for room in our channels */
    size_t wait_bytes, wait_peak;   /* in outboxes and held now; most since a trim */
    /* name lists whose names were all ours: the same list again (a room's members in
     * one group message after another) skips the per-name check, until a release */
    struct rl_list {
        uint64_t gen;               /* owned_gen when it was checked */
        size_t n;
        char *data;                 /* per name: its length (a byte), its bytes */
        cch__mem_handles h;         /* their channels in the in-memory layer */
    } lists[4];
    unsigned list_next;
    uint64_t owned_gen;             /* counts releases of our channels (lock) */
    rl_name *lossy;                 /* our channels full for too long: not waited for */
    uv_timer_t held_timer;
    bool held_timer_armed;
    bool in_batch;                  /* in a read callback: receivers' wakeups wait */
    bool deferring;                 /* ... and try_names is sending (lock held) */
    unsigned wakes_held;            /* shards whose wake_hold is set */
    struct rl_wake *wakes;          /* receivers to wake at the batch's end (lock) */
    struct rl_wake *receivers;      /* every receiver's wrapper (lock) */
    struct rl_echo *echoes, *echo_tail; /* pubsub: our group_sends' echoes to drop */
    rl_op *pub_wait, *pub_wait_tail;    /* pubsub: publishes waiting for our SUBSCRIBEs */
    size_t n_echoes;
    atomic_uint_fast64_t last_us;
    atomic_bool io_running;
};

static inline rl_layer *RL(cch_layer *l) { return (rl_layer *)l; }

/* The capacity for a full channel name (first matching pattern, else capacity). */
size_t rl_capacity_for(const rl_layer *l, const char *channel);

/* Length of the non-local part of a channel name, '!' included; the whole length
 * when there is no '!'. */
size_t rl_nonlocal_len(const char *name, size_t len);

/* A plain channel's fetch is over (core): another receive may start one. */
void rl_fetch_done(rl_layer *l, const char *channel);

/* Whether `name` is one of our live channels. Call with lock held. */
bool rl_owned_locked(rl_layer *l, const char *name, size_t len);

/* ---- counters (any thread; take the lock) ---- */
void rl_count(rl_layer *l, uint64_t *field, uint64_t n);
#define RL_COUNT(l, f, n) rl_count((l), &(l)->st.f, (n))

/* ---- operations (redis_io.c) ---- */

/* A new operation with room for `extra` bytes of data. NULL on out-of-memory. */
rl_op *rl_op_new(uint8_t kind, size_t extra);
/* Copies s (n bytes) into the op's data at *pos, NUL-terminated; returns the copy. */
const char *rl_op_str(rl_op *op, size_t *pos, const char *s, size_t n);
void rl_op_free(rl_op *op);

/* Queues op for the I/O thread. `limited`: refuse (CCH_ELIMIT, counted as dropped)
 * when max_pending operations are outstanding. On failure the op is freed. */
int rl_submit(rl_layer *l, rl_op *op, bool limited);

/* I/O thread: an operation is finished (its replies all arrived, or it failed). */
void rl_op_done(rl_layer *l, rl_op *op);
/* I/O thread: one reply of op arrived; finishes it after the last. */
void rl_op_reply(rl_layer *l, rl_op *op);
/* I/O thread: keep op until shard s is back (or drop it when the buffer is off). */
void rl_pend(rl_layer *l, rl_shard *s, rl_op *op);

/* I/O thread: run the shard's retry timer (reconnect what is missing, restart the
 * pop loop) after its backoff delay. */
void rl_io_retry_later(rl_layer *l, rl_shard *s);

/* I/O thread: the command connection of shard i, or NULL when it is down. */
redisAsyncContext *rl_cmd(rl_layer *l, uint32_t i);

/* I/O thread: sends a command on `ac`; on failure runs cb's accounting itself
 * (calls fn with a NULL reply). */
void rl_command(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, int argc,
                const char **argv, const size_t *argvlen);

/* I/O thread: counts a failed reply (NULL or error) and logs it. Returns true when
 * `r` is a usable (non-error) reply. */
bool rl_reply_ok(rl_layer *l, const redisReply *r, const char *what);

/* I/O thread, any mode: delivers a message to this process's channels names[0..n)
 * (lengths lens), in order after any delivery still waiting. A channel that is full
 * is waited for (the message and all later ones are kept, and the pop loop pauses,
 * so that the queue key fills up and senders slow down) for RL_FULL_PATIENCE_MS;
 * then it is skipped (counted in `full`) until it takes a message again. Names that
 * are not (or no longer) ours are counted in `dropped`. */
void rl_deliver_names(rl_layer *l, cch_msg *m, const char *const *names, const size_t *lens,
                      size_t n);
/* The same for one name. */
void rl_deliver_local(rl_layer *l, const char *name, size_t len, cch_msg *m);
/* A receiver's wakeup, as the layer's own: while the I/O thread delivers what one
 * read brought, wakeups wait for the end of it (rl_batch_end), so that a receiver's
 * loop finds the whole batch at once rather than racing the deliveries. */
typedef struct rl_wake {
    struct rl_wake *next;       /* in rl_layer.receivers */
    struct rl_wake *next_wake;  /* in rl_layer.wakes */
    rl_layer *l;
    cch_receiver *r;
    cch_wakeup_fn fn;
    void *ud;
    bool queued;
} rl_wake;

void rl_wake_fn(void *ud);
/* I/O thread: a batch of deliveries begins / ends (then the wakeups are called). */
void rl_batch_begin(rl_layer *l);
void rl_batch_end(rl_layer *l);
/* I/O thread: a shard's hold on wakeups is over (its drain answered, or it is gone). */
void rl_wake_release(rl_layer *l, rl_shard *s);

/* I/O thread, at stop: drops what waits. */
void rl_held_cleanup(rl_layer *l);

/* Attaches a hiredis context to the loop (redis_uv.c). REDIS_OK or REDIS_ERR. */
int rl_uv_attach(redisAsyncContext *ac, uv_loop_t *loop);

/* Start / stop the I/O thread (redis_io.c). */
int rl_io_start(rl_layer *l);
void rl_io_stop(rl_layer *l);
void rl_free_all(rl_layer *l);

/* ---- mode-specific (redis_core.c, redis_pubsub.c), I/O thread ---- */
void rl_core_dispatch(rl_layer *l, rl_op *op);
void rl_core_shard_up(rl_layer *l, rl_shard *s);      /* cmd connection up */
void rl_core_pop_up(rl_layer *l, rl_shard *s);        /* pop connection up */
void rl_core_pop_kick(rl_layer *l, rl_shard *s);      /* keys changed / start */
void rl_core_readd(rl_layer *l, rl_shard *s);         /* re-add our memberships */
void rl_core_push(rl_layer *l, rl_shard *s);          /* write waiting entries */
void rl_core_cleanup(rl_layer *l);                    /* at stop: drops the outboxes */

void rl_pubsub_dispatch(rl_layer *l, rl_op *op);
void rl_pubsub_sub_up(rl_layer *l, rl_shard *s);      /* subscriber connection up */
void rl_pubsub_cleanup(rl_layer *l);                  /* at stop: frees its state */
void rl_pubsub_subs_settled(rl_layer *l);             /* subscriber confirmations in or gone */

#endif
