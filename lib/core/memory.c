/* lib/core/memory.c - the in-memory channel layer (cchannels/memory_layer.h).
 *
 * Everything lives behind one mutex. Channels are in a uthash by name; each has a
 * ring buffer of {message, expires_at} that grows by doubling (4, 8, ... up to the
 * capacity) and is kept once allocated, and an intrusive link into its receiver's
 * ready list. Groups are in a uthash by name; a group's members are a dense array of
 * {channel, expires_at}, and each channel keeps the list of its memberships (group,
 * index in the group's array), so a member is removed in O(its groups) by
 * swap-remove.
 *
 * group_send walks the dense array under the lock, pushes one pointer per member,
 * takes all the message references with one atomic add, and after unlocking wakes
 * each receiver whose ready list went from empty to non-empty. poll drains the ready
 * channels one after the other, so a receiver handles each channel's messages
 * together (its connection's state is touched once per batch, not once per message).
 *
 * A bound channel holds a ring only while it has messages: poll gives a drained ring
 * back to the layer's pool and remembers the size the channel needed, and the next
 * message takes a ring of that size from the pool. So an idle connection costs no
 * ring, and steady fanout allocates nothing: the pool holds the working set. The
 * pool's rings are carved out of slabs of 64 KiB or more, mapped apart from the heap
 * (one list of slabs per power-of-two ring size): a fanout storm (say N joins to a
 * room, N^2/2 notices) makes a ring per member at once, and rings from the heap
 * would be left as holes between the connections' long-lived allocations, never
 * given back to the system. When a receiver has drained everything (the end of its
 * turn), the pool unmaps the empty slabs that were not in use at once since the last
 * such trim, so it keeps one turn's working set; a poll that finds nothing at least
 * RING_POOL_IDLE_MS after the last trim trims too, so a host that polls an idle
 * receiver (the WebSocket adapter does, WS_IDLE_POLL_MS after its last delivery)
 * gets an idle layer down to no ring at all. Unbound channels (read with receive)
 * keep their ring, from the heap.
 *
 * A channel struct lives while it is owned (made by new_channel and not released),
 * holds messages, or is in a group; membership entries point at it, so it is freed
 * only when none of these holds. Every channel is on exactly one list: its
 * receiver's bound list, or the layer's unbound list, which a small incremental
 * sweep walks to drop expired messages of channels nobody reads.
 *
 * Flow control (cch_layer_congested): the layer counts the "hot" bound channels,
 * those holding more than high_water (half the capacity) messages but fewer than the
 * capacity, and publishes "some are" in an atomic that hosts read without the lock.
 * A channel enters the count when a send takes it above high_water, and leaves it
 * when a poll, an expiry, a release or its receiver's end takes it back, or when it
 * becomes full: a full channel's receiver has stopped keeping up altogether (or is
 * never polled), and holding every sender back for it would stall them all. When the
 * count falls to zero, the operation that did it wakes every other receiver after
 * unlocking, so that hosts that stopped reading while the layer was congested
 * resume. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h" /* before uthash.h: it routes uthash's allocations */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "cchannels/layer_impl.h"
#include "cchannels/memory_layer.h"
#include "memory_internal.h"
#include "msg_internal.h"
#include "slab.h"

#define RING_MIN 4u
#define RING_MIN_LOG 2u
#define RING_POOL_CLASSES 13u /* rings of 4 .. 4096 entries come from slabs */
#define RING_POOL_TRIM_MS 1000u
#define RING_POOL_IDLE_MS 100u /* a poll that finds nothing this long after a trim trims */
#define CAPACITY_MAX (1u << 30)
#define WAKE_STACK 32
#define SWEEP_PER_OP 2

typedef struct mem_channel mem_channel;
typedef struct mem_group mem_group;

typedef struct mem_entry {
    cch_msg *msg;
    uint64_t expires_at;
} mem_entry;

typedef struct mem_member {
    mem_channel *ch;
    uint64_t expires_at;
} mem_member;

typedef struct mem_mship {
    mem_group *g;
    uint32_t idx; /* index of this channel in g->members */
} mem_mship;

struct mem_channel {
    /* hot: group_send and poll */
    mem_entry *ring;
    uint32_t size;  /* ring slots, a power of two (0: no ring yet) */
    uint32_t head;
    uint32_t count;
    bool in_ready;
    bool owned;     /* made by new_channel, not released */
    bool pooled;    /* the ring came from the pool (counted in its use) */
    uint8_t ring_log; /* log2 of the ring size to take next (0: RING_MIN) */
    cch_receiver *recv;
    void *ud;
    mem_channel *rnext, *rprev; /* the receiver's ready list */
    /* cold */
    mem_channel *lnext, *lprev; /* the receiver's bound list, or the layer's unbound list */
    /* memberships: the first inline (most channels join one group), the others in
     * `more`, whose capacity is the power of two at or above their count */
    mem_group *g0;
    uint32_t idx0;              /* index of this channel in g0->members */
    uint32_t n_mships;
    mem_mship *more;            /* n_mships - 1 entries */
    UT_hash_handle hh;          /* the name's length is hh.keylen */
    char name[];
};

struct mem_group {
    mem_member *members;
    size_t n, cap;
    UT_hash_handle hh;
    size_t name_len;
    char name[];
};

struct cch_receiver {
    cch_wakeup_fn wakeup;
    void *ud;
    mem_channel *ready_head, *ready_tail;
    mem_channel *bound; /* channels bound to this receiver (lnext/lprev) */
    cch_receiver *next, *prev;
};

typedef struct mem_layer {
    cch_layer base;
    pthread_mutex_t lock;
    uint32_t capacity;
    uint32_t high_water;   /* a bound channel holding more is "hot" (flow control) */
    size_t n_hot;          /* hot channels */
    bool calm_pending;     /* n_hot fell to zero: wake the receivers after unlocking */
    atomic_bool congested; /* n_hot > 0, read without the lock */
    uint64_t expiry_ms, group_expiry_ms;
    cch_clock_fn clock;
    void *clock_ud;
    mem_channel *channels; /* uthash by name */
    mem_group *groups;     /* uthash by name */
    mem_channel *unbound_head, *unbound_tail;
    cch_receiver *receivers;
    size_t n_receivers;
    uint64_t counter;
    char proc[13]; /* 12 random hex characters */
    cch_layer_stats st;
    /* the ring pool: bound channels' rings by log2 of their size, carved out of
     * slabs mapped apart from the heap (slab.h) */
    cch__slab_pool pool[RING_POOL_CLASSES];
    uint64_t pool_trim_at, pool_idle_at; /* trims: the next timed one, the next idle one */
    uint64_t freed; /* channels freed so far: cached handles (send_many) hold while it stays */
} mem_layer;

typedef struct wake {
    cch_wakeup_fn fn;
    void *ud;
} wake;

static inline mem_layer *ML(cch_layer *l) { return (mem_layer *)l; }

static inline uint64_t add_sat(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t monotonic_ms(void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- lists -------------------------------------------------------------------- */

/* The list a channel is on: its receiver's bound list or the layer's unbound list. */
static void list_remove(mem_layer *l, mem_channel *ch) {
    if (ch->lprev) ch->lprev->lnext = ch->lnext;
    else if (ch->recv) ch->recv->bound = ch->lnext;
    else l->unbound_head = ch->lnext;
    if (ch->lnext) ch->lnext->lprev = ch->lprev;
    else if (!ch->recv) l->unbound_tail = ch->lprev;
    ch->lnext = ch->lprev = NULL;
}

static void list_add(mem_layer *l, mem_channel *ch) {
    if (ch->recv) {
        ch->lprev = NULL;
        ch->lnext = ch->recv->bound;
        if (ch->lnext) ch->lnext->lprev = ch;
        ch->recv->bound = ch;
    } else {
        ch->lnext = NULL;
        ch->lprev = l->unbound_tail;
        if (l->unbound_tail) l->unbound_tail->lnext = ch;
        else l->unbound_head = ch;
        l->unbound_tail = ch;
    }
}

/* Appends ch to its receiver's ready list; true when the list was empty. */
static inline bool ready_push(cch_receiver *r, mem_channel *ch) {
    ch->in_ready = true;
    ch->rnext = NULL;
    ch->rprev = r->ready_tail;
    if (r->ready_tail) {
        r->ready_tail->rnext = ch;
        r->ready_tail = ch;
        return false;
    }
    r->ready_head = r->ready_tail = ch;
    return true;
}

static inline void ready_remove(cch_receiver *r, mem_channel *ch) {
    if (ch->rprev) ch->rprev->rnext = ch->rnext;
    else r->ready_head = ch->rnext;
    if (ch->rnext) ch->rnext->rprev = ch->rprev;
    else r->ready_tail = ch->rprev;
    ch->rnext = ch->rprev = NULL;
    ch->in_ready = false;
}

/* ---- flow control ------------------------------------------------------------------ */

static inline bool hot(const mem_layer *l, uint32_t count) {
    return count > l->high_water && count < l->capacity;
}

/* ch, bound, went from `before` messages to `count` (0 when it is being unbound):
 * enters or leaves the hot count. */
static void hot_update(mem_layer *l, const mem_channel *ch, uint32_t before, uint32_t count) {
    bool was = hot(l, before), is = hot(l, count);
    if (was == is || !ch->recv) return;
    if (is) {
        if (l->n_hot++ == 0) {
            atomic_store_explicit(&l->congested, true, memory_order_relaxed);
            l->st.congested++;
        }
    } else if (--l->n_hot == 0) {
        atomic_store_explicit(&l->congested, false, memory_order_relaxed);
        l->calm_pending = true;
    }
}

/* After ch lost messages (from `before`): the cheap test first (poll's hot path). */
static inline void hot_leave(mem_layer *l, const mem_channel *ch, uint32_t before,
                             uint32_t count) {
    if (before > l->high_water) hot_update(l, ch, before, count);
}

/* The layer has calmed down (lock held): collects the wakeups of every receiver but
 * `except` into *out (`stack`, WAKE_STACK entries, or an allocation) and returns how
 * many; run them with wakes_run after unlocking. Without memory for the list nobody
 * is woken: hosts bound their pauses. */
static size_t calm_collect(mem_layer *l, const cch_receiver *except, wake *stack, wake **out) {
    l->calm_pending = false;
    wake *w = stack;
    if (l->n_receivers > WAKE_STACK && !(w = cch__malloc(l->n_receivers * sizeof *w))) {
        *out = stack;
        return 0;
    }
    size_t n = 0;
    for (cch_receiver *r = l->receivers; r; r = r->next)
        if (r != except && r->wakeup) w[n++] = (wake){r->wakeup, r->ud};
    *out = w;
    return n;
}

static void wakes_run(wake *w, size_t n, wake *stack) {
    for (size_t i = 0; i < n; i++) w[i].fn(w[i].ud);
    if (w != stack) cch__free(w);
}

static bool mem_congested(cch_layer *base) {
    return atomic_load_explicit(&ML(base)->congested, memory_order_relaxed);
}

/* ---- the ring pool ---------------------------------------------------------------- */

static inline unsigned ring_class(uint32_t size) { return (unsigned)__builtin_ctz(size); }

/* A ring of `size` entries for a bound channel, from its class's slabs. */
static mem_entry *ring_take(mem_layer *l, uint32_t size) {
    unsigned k = ring_class(size);
    if (k >= RING_POOL_CLASSES) return cch__malloc(sizeof(mem_entry) * size);
    return cch__slab_take(&l->pool[k]);
}

/* Gives back a ring from ring_take. A slab whose last ring comes back is kept empty
 * until pool_trim decides whether the next turns need it. */
static void ring_give(mem_layer *l, mem_entry *r, uint32_t size) {
    unsigned k = ring_class(size);
    if (k >= RING_POOL_CLASSES) cch__free(r);
    else cch__slab_give(&l->pool[k], r);
}

/* Frees ch's ring, whichever way it came. */
static void ring_drop(mem_layer *l, mem_channel *ch) {
    if (ch->pooled) ring_give(l, ch->ring, ch->size);
    else cch__free(ch->ring);
    ch->ring = NULL;
    ch->size = ch->head = 0;
    ch->pooled = false;
}

/* Unmaps the empty slabs that were not in use at once since the last trim: called
 * when a receiver has drained everything (the end of its turn), by a poll that finds
 * nothing (the host's housekeeping poll of an idle receiver), and, at most once a
 * second, by other operations. In steady fanout the pool keeps exactly the slabs
 * one turn needs; after a burst it keeps those of the burst's last turn until
 * the next trim, and an idle layer (polled with nothing ready) holds no ring. */
static void pool_trim(mem_layer *l, uint64_t now, bool turn_end) {
    if (!turn_end && now < l->pool_trim_at) return;
    l->pool_trim_at = add_sat(now, RING_POOL_TRIM_MS);
    l->pool_idle_at = add_sat(now, RING_POOL_IDLE_MS);
    for (unsigned k = 0; k < RING_POOL_CLASSES; k++) cch__slab_trim(&l->pool[k], false);
}

static void pool_free(mem_layer *l) {
    for (unsigned k = 0; k < RING_POOL_CLASSES; k++) cch__slab_pool_free(&l->pool[k]);
}

size_t cch__memory_layer_ring_slabs(cch_layer *base) {
    mem_layer *l = ML(base);
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    for (unsigned k = 0; k < RING_POOL_CLASSES; k++) n += cch__slab_count(&l->pool[k]);
    pthread_mutex_unlock(&l->lock);
    return n;
}

/* ---- channels ------------------------------------------------------------------- */

static mem_channel *chan_find(mem_layer *l, const char *name, size_t len) {
    mem_channel *ch;
    HASH_FIND(hh, l->channels, name, len, ch);
    return ch;
}

/* A new unbound, unowned, empty channel, or NULL on out-of-memory. */
static mem_channel *chan_create(mem_layer *l, const char *name, size_t len) {
    mem_channel *ch = cch__calloc(1, sizeof *ch + len + 1);
    if (!ch) return NULL;
    memcpy(ch->name, name, len);
    HASH_ADD_KEYPTR(hh, l->channels, ch->name, len, ch);
    if (!ch->hh.tbl) { /* uthash ran out of memory; ch is not in the table */
        cch__free(ch);
        return NULL;
    }
    list_add(l, ch);
    return ch;
}

/* Frees ch when nothing keeps it: not owned, no message, no membership. */
static void chan_maybe_free(mem_layer *l, mem_channel *ch) {
    if (ch->owned || ch->count || ch->n_mships) return;
    l->freed++;
    HASH_DELETE(hh, l->channels, ch);
    list_remove(l, ch);
    ring_drop(l, ch);
    cch__free(ch->more);
    cch__free(ch);
}

/* Drops every message of ch; returns how many. */
static uint32_t chan_clear(mem_channel *ch, cch_msg **fl) {
    uint32_t n = ch->count;
    for (uint32_t i = 0; i < n; i++)
        cch__msg_unref_deferred(ch->ring[(ch->head + i) & (ch->size - 1)].msg, fl);
    ch->head = ch->count = 0;
    if (ch->in_ready) ready_remove(ch->recv, ch);
    return n;
}

/* Drops the expired messages at the front of ch (expiry times only grow along the
 * ring). Takes ch off its ready list when that empties it. */
static void chan_purge(mem_layer *l, mem_channel *ch, uint64_t now, cch_msg **fl) {
    uint32_t before = ch->count;
    while (ch->count && ch->ring[ch->head].expires_at <= now) {
        cch__msg_unref_deferred(ch->ring[ch->head].msg, fl);
        ch->head = (ch->head + 1) & (ch->size - 1);
        ch->count--;
        l->st.expired++;
    }
    hot_leave(l, ch, before, ch->count);
    if (!ch->count && ch->in_ready) ready_remove(ch->recv, ch);
}

/* Makes room for one more entry in a ring whose slots are all used (or that has no
 * ring: a bound channel takes one of the size it needed last time from the pool). */
static int ring_grow(mem_layer *l, mem_channel *ch) {
    uint32_t nsize = ch->size ? ch->size * 2 /* <= 2 * CAPACITY_MAX */
                     : ch->recv && ch->ring_log ? 1u << ch->ring_log : RING_MIN;
    if ((uint64_t)nsize * sizeof(mem_entry) > (uint64_t)(SIZE_MAX / 2)) return CCH_ENOMEM;
    bool pooled = ch->recv != NULL;
    mem_entry *nr = pooled ? ring_take(l, nsize) : cch__malloc(sizeof *nr * nsize);
    if (!nr) return CCH_ENOMEM;
    for (uint32_t i = 0; i < ch->count; i++) nr[i] = ch->ring[(ch->head + i) & (ch->size - 1)];
    if (ch->ring) ring_drop(l, ch);
    ch->ring = nr;
    ch->size = nsize;
    ch->head = 0;
    ch->pooled = pooled;
    return 0;
}

/* Looks at a few unbound channels: drops their expired messages and frees those
 * that nothing keeps any more, so messages sent to names nobody reads do not pile
 * up. Call before looking channels up (it may free unkept channels). */
static void sweep(mem_layer *l, uint64_t now, cch_msg **fl) {
    for (int i = 0; i < SWEEP_PER_OP; i++) {
        mem_channel *ch = l->unbound_head;
        if (!ch) return;
        chan_purge(l, ch, now, fl);
        if (!ch->owned && !ch->count && !ch->n_mships) {
            chan_maybe_free(l, ch);
            continue;
        }
        if (ch != l->unbound_tail) { /* rotate to the back */
            list_remove(l, ch);
            list_add(l, ch);
        }
    }
}

/* ---- groups --------------------------------------------------------------------- */

static mem_group *group_find(mem_layer *l, const char *name, size_t len) {
    mem_group *g;
    HASH_FIND(hh, l->groups, name, len, g);
    return g;
}

static mem_group *group_create(mem_layer *l, const char *name, size_t len) {
    mem_group *g = cch__calloc(1, sizeof *g + len + 1);
    if (!g) return NULL;
    memcpy(g->name, name, len);
    g->name_len = len;
    HASH_ADD_KEYPTR(hh, l->groups, g->name, len, g);
    if (!g->hh.tbl) {
        cch__free(g);
        return NULL;
    }
    return g;
}

static void group_free(mem_layer *l, mem_group *g) {
    HASH_DELETE(hh, l->groups, g);
    cch__free(g->members);
    cch__free(g);
}

/* Where ch's membership of g keeps its index in g->members, or NULL. */
static uint32_t *mship_find(mem_channel *ch, mem_group *g) {
    if (!ch->n_mships) return NULL;
    if (ch->g0 == g) return &ch->idx0;
    for (uint32_t i = 0; i + 1 < ch->n_mships; i++)
        if (ch->more[i].g == g) return &ch->more[i].idx;
    return NULL;
}

/* Records ch's membership of g at index idx. Returns 0 or CCH_ENOMEM. */
static int mship_add(mem_channel *ch, mem_group *g, uint32_t idx) {
    uint32_t k = ch->n_mships ? ch->n_mships - 1 : 0; /* entries in `more` */
    if (!ch->n_mships) {
        ch->g0 = g;
        ch->idx0 = idx;
    } else {
        if (k == UINT32_MAX - 1) return CCH_ENOMEM;
        if ((k & (k - 1)) == 0) { /* full: 0 or a power of two */
            mem_mship *nm = cch__realloc(ch->more, (k ? 2 * (size_t)k : 1) * sizeof *nm);
            if (!nm) return CCH_ENOMEM;
            ch->more = nm;
        }
        ch->more[k] = (mem_mship){g, idx};
    }
    ch->n_mships++;
    return 0;
}

/* Forgets ch's membership of g (the last one takes its place). */
static void mship_remove(mem_channel *ch, mem_group *g) {
    uint32_t n = ch->n_mships, i = 0; /* i: 0 the inline one, j + 1 more[j] */
    if (!n) return;
    if (ch->g0 != g) {
        for (i = 1; i < n && ch->more[i - 1].g != g; i++) {}
        if (i == n) return;
    }
    if (n > 1) {
        mem_mship last = ch->more[n - 2];
        if (i == 0) {
            ch->g0 = last.g;
            ch->idx0 = last.idx;
        } else {
            ch->more[i - 1] = last;
        }
    }
    if (n == 2) {
        cch__free(ch->more);
        ch->more = NULL;
    }
    ch->n_mships = n - 1;
}

/* Removes member i of g (swap-remove) and frees its channel if nothing keeps it.
 * Does not free g. */
static void member_remove(mem_layer *l, mem_group *g, size_t i) {
    mem_channel *ch = g->members[i].ch;
    mship_remove(ch, g);
    size_t last = g->n - 1;
    if (i != last) {
        g->members[i] = g->members[last];
        uint32_t *moved = mship_find(g->members[i].ch, g);
        if (moved) *moved = (uint32_t)i;
    }
    g->n--;
    chan_maybe_free(l, ch);
}

/* ---- operations ----------------------------------------------------------------- */

static cch_receiver *mem_receiver_new(cch_layer *base, cch_wakeup_fn wakeup, void *ud) {
    mem_layer *l = ML(base);
    cch_receiver *r = cch__calloc(1, sizeof *r);
    if (!r) return NULL;
    r->wakeup = wakeup;
    r->ud = ud;
    pthread_mutex_lock(&l->lock);
    r->next = l->receivers;
    if (r->next) r->next->prev = r;
    l->receivers = r;
    l->n_receivers++;
    pthread_mutex_unlock(&l->lock);
    return r;
}

/* Unbinds every channel of r and unlinks r from the layer (lock held). */
static void receiver_detach(mem_layer *l, cch_receiver *r) {
    while (r->bound) {
        mem_channel *ch = r->bound;
        if (ch->in_ready) ready_remove(r, ch);
        hot_leave(l, ch, ch->count, 0);
        list_remove(l, ch);
        ch->recv = NULL;
        ch->ud = NULL;
        list_add(l, ch);
    }
    if (r->prev) r->prev->next = r->next;
    else l->receivers = r->next;
    if (r->next) r->next->prev = r->prev;
    l->n_receivers--;
}

static void mem_receiver_free(cch_layer *base, cch_receiver *r) {
    mem_layer *l = ML(base);
    wake stack[WAKE_STACK], *w = stack;
    size_t nw = 0;
    pthread_mutex_lock(&l->lock);
    receiver_detach(l, r);
    if (l->calm_pending) nw = calm_collect(l, NULL, stack, &w);
    pthread_mutex_unlock(&l->lock);
    cch__free(r);
    wakes_run(w, nw, stack);
}

static int mem_new_channel(cch_layer *base, const char *prefix, cch_receiver *r,
                           void *channel_ud, char *name, size_t cap) {
    mem_layer *l = ML(base);
    size_t plen = strlen(prefix);
    size_t len = plen + 1 + 12 + 1 + 16;
    if (len > CCH_NAME_MAX) return CCH_ENAME;
    if (cap < len + 1) return CCH_ETOOBIG;
    char buf[CCH_NAME_BUF];
    cch_msg *fl = NULL;
    mem_channel *ch;
    pthread_mutex_lock(&l->lock);
    uint64_t now = l->clock(l->clock_ud);
    sweep(l, now, &fl);
    pool_trim(l, now, false);
    do {
        len = (size_t)snprintf(buf, sizeof buf, "%s.%s!%" PRIx64, prefix, l->proc,
                               l->counter++);
    } while (chan_find(l, buf, len));
    ch = chan_create(l, buf, len);
    if (ch) {
        ch->owned = true;
        if (r) {
            list_remove(l, ch);
            ch->recv = r;
            ch->ud = channel_ud;
            list_add(l, ch);
        }
    }
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    if (!ch) return CCH_ENOMEM;
    memcpy(name, buf, len + 1);
    return 0;
}

static int mem_release_channel(cch_layer *base, const char *channel) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    wake stack[WAKE_STACK], *w = stack;
    size_t nw = 0;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    mem_channel *ch = chan_find(l, channel, strlen(channel));
    if (!ch) {
        rc = CCH_ENOTFOUND;
    } else {
        uint32_t before = ch->count;
        l->st.dropped += chan_clear(ch, &fl);
        hot_leave(l, ch, before, 0);
        if (ch->recv) {
            list_remove(l, ch);
            ch->recv = NULL;
            ch->ud = NULL;
            list_add(l, ch);
        }
        ch->owned = false;
        chan_maybe_free(l, ch);
    }
    if (l->calm_pending) nw = calm_collect(l, NULL, stack, &w);
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    wakes_run(w, nw, stack);
    return rc;
}

/* Queues m on ch (expiring at exp), dropping ch's expired messages first if it is
 * full: 0, CCH_ECHANFULL or CCH_ENOMEM (nothing queued; the caller counts and frees).
 * Takes no reference. Sets *wake when ch's receiver must be woken (lock held). */
static int chan_push(mem_layer *l, mem_channel *ch, cch_msg *m, uint64_t now, uint64_t exp,
                     cch_msg **fl, bool *wake) {
    *wake = false;
    if (ch->count >= l->capacity) {
        chan_purge(l, ch, now, fl);
        if (ch->count >= l->capacity) return CCH_ECHANFULL;
    }
    if (ch->count == ch->size && ring_grow(l, ch) != 0) return CCH_ENOMEM;
    ch->ring[(ch->head + ch->count) & (ch->size - 1)] = (mem_entry){m, exp};
    ch->count++;
    if ((ch->count == l->high_water + 1 || ch->count == l->capacity) && ch->recv)
        hot_update(l, ch, ch->count - 1, ch->count);
    *wake = ch->recv && !ch->in_ready && ready_push(ch->recv, ch) && ch->recv->wakeup;
    return 0;
}

static int mem_send(cch_layer *base, const char *channel, const cch_msg *m) {
    mem_layer *l = ML(base);
    size_t len = strlen(channel);
    cch_msg *fl = NULL;
    wake w = {NULL, NULL}, stack[WAKE_STACK], *calm = stack;
    size_t ncalm = 0;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    uint64_t now = l->clock(l->clock_ud);
    sweep(l, now, &fl);
    mem_channel *ch = chan_find(l, channel, len);
    if (!ch && !(ch = chan_create(l, channel, len))) {
        rc = CCH_ENOMEM;
        goto out;
    }
    bool woke;
    rc = chan_push(l, ch, (cch_msg *)m, now, add_sat(now, l->expiry_ms), &fl, &woke);
    if (rc == CCH_ECHANFULL) {
        l->st.full++;
    } else if (rc < 0) {
        chan_maybe_free(l, ch);
    } else {
        cch__msg_ref_n(m, 1);
        l->st.sent++;
        if (woke) w = (wake){ch->recv->wakeup, ch->recv->ud};
    }
out:
    if (l->calm_pending) ncalm = calm_collect(l, NULL, stack, &calm); /* an expiry */
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    if (w.fn) w.fn(w.ud);
    wakes_run(calm, ncalm, stack);
    return rc;
}

static int mem_receive(cch_layer *base, const char *channel, cch_msg **out) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    int rc = CCH_EAGAIN;
    pthread_mutex_lock(&l->lock);
    mem_channel *ch = chan_find(l, channel, strlen(channel));
    if (ch && ch->recv) {
        rc = CCH_EINVAL;
    } else if (ch) {
        chan_purge(l, ch, l->clock(l->clock_ud), &fl);
        if (ch->count) {
            *out = ch->ring[ch->head].msg;
            ch->head = (ch->head + 1) & (ch->size - 1);
            ch->count--;
            l->st.delivered++;
            rc = 0;
        }
        chan_maybe_free(l, ch);
    }
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    return rc;
}

static int mem_poll(cch_layer *base, cch_receiver *r, cch_delivery *out, size_t max) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    size_t n = 0, ncalm = 0;
    uint64_t expired = 0;
    wake stack[WAKE_STACK], *calm = stack;
    pthread_mutex_lock(&l->lock);
    if (r->ready_head) {
        uint64_t now = l->clock(l->clock_ud);
        mem_channel *ch;
        while (n < max && (ch = r->ready_head)) {
            const uint32_t mask = ch->size - 1;
            mem_entry *ring = ch->ring;
            uint32_t head = ch->head, count = ch->count;
            uint32_t start = count;
            void *ud = ch->ud;
            while (count && n < max) {
                mem_entry e = ring[head];
                head = (head + 1) & mask;
                count--;
                if (e.expires_at <= now) {
                    cch__msg_unref_deferred(e.msg, &fl);
                    expired++;
                    continue;
                }
                out[n].channel_ud = ud;
                out[n].msg = e.msg;
                n++;
            }
            ch->head = head;
            ch->count = count;
            hot_leave(l, ch, start, count);
            if (!count) { /* drained: pop it off the front, give its ring back */
                r->ready_head = ch->rnext;
                if (ch->rnext) ch->rnext->rprev = NULL;
                else r->ready_tail = NULL;
                ch->rnext = NULL;
                ch->in_ready = false;
                /* next time, a ring for as many as it held now */
                unsigned need = start > RING_MIN ? 32u - (unsigned)__builtin_clz(start - 1)
                                                 : RING_MIN_LOG;
                ch->ring_log = (uint8_t)(need < ring_class(ch->size) ? need : ring_class(ch->size));
                ring_drop(l, ch);
            }
        }
        l->st.delivered += n;
        l->st.expired += expired;
        pool_trim(l, now, !r->ready_head);
    } else { /* nothing ready: a housekeeping poll (an idle receiver) */
        uint64_t now = l->clock(l->clock_ud);
        if (now >= l->pool_idle_at) pool_trim(l, now, true);
    }
    if (l->calm_pending) ncalm = calm_collect(l, r, stack, &calm);
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    wakes_run(calm, ncalm, stack);
    return (int)n;
}

static int mem_group_add(cch_layer *base, const char *group, const char *channel) {
    mem_layer *l = ML(base);
    size_t glen = strlen(group), clen = strlen(channel);
    cch_msg *fl = NULL;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    uint64_t now = l->clock(l->clock_ud);
    uint64_t exp = add_sat(now, l->group_expiry_ms);
    sweep(l, now, &fl);
    mem_group *g = group_find(l, group, glen);
    mem_channel *ch = chan_find(l, channel, clen);
    uint32_t *ms = g && ch ? mship_find(ch, g) : NULL;
    if (ms) { /* already a member: renew */
        g->members[*ms].expires_at = exp;
        goto out;
    }
    if (!g && !(g = group_create(l, group, glen))) goto oom;
    if (!ch && !(ch = chan_create(l, channel, clen))) goto oom;
    if (g->n == UINT32_MAX) goto oom; /* member indexes are 32-bit */
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 4;
        mem_member *nm = cch__realloc(g->members, ncap * sizeof *nm);
        if (!nm) goto oom;
        g->members = nm;
        g->cap = ncap;
    }
    if (mship_add(ch, g, (uint32_t)g->n) < 0) goto oom;
    g->members[g->n] = (mem_member){ch, exp};
    g->n++;
    goto out;
oom: /* undo what this call created */
    rc = CCH_ENOMEM;
    if (ch) chan_maybe_free(l, ch);
    if (g && !g->n) group_free(l, g);
out:
    pthread_mutex_unlock(&l->lock);
    cch__msg_free_list(fl);
    return rc;
}

static int mem_group_discard(cch_layer *base, const char *group, const char *channel) {
    mem_layer *l = ML(base);
    pthread_mutex_lock(&l->lock);
    mem_group *g = group_find(l, group, strlen(group));
    mem_channel *ch = g ? chan_find(l, channel, strlen(channel)) : NULL;
    uint32_t *ms = ch ? mship_find(ch, g) : NULL;
    if (ms) {
        member_remove(l, g, *ms);
        if (!g->n) group_free(l, g);
    }
    pthread_mutex_unlock(&l->lock);
    return 0;
}

static int mem_group_send(cch_layer *base, const char *group, const cch_msg *m,
                          const char *exclude, cch_group_send_result *res) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    wake stack_wakes[WAKE_STACK], *wakes = stack_wakes, stack_calm[WAKE_STACK], *calm = stack_calm;
    size_t nwake = 0, added = 0, full = 0, expired = 0, oom = 0, ncalm = 0;
    pthread_mutex_lock(&l->lock);
    uint64_t now = l->clock(l->clock_ud);
    sweep(l, now, &fl);
    mem_group *g = group_find(l, group, strlen(group));
    if (!g) goto out;
    if (l->n_receivers > WAKE_STACK) {
        wakes = cch__malloc(l->n_receivers * sizeof *wakes);
        if (!wakes) {
            pthread_mutex_unlock(&l->lock);
            cch__msg_free_list(fl);
            return CCH_ENOMEM;
        }
    }
    mem_channel *excl = exclude ? chan_find(l, exclude, strlen(exclude)) : NULL;
    const uint32_t capacity = l->capacity, hot_at = l->high_water + 1;
    const uint64_t msg_exp = add_sat(now, l->expiry_ms);
    cch_msg *msg = (cch_msg *)m;
    for (size_t i = 0; i < g->n;) {
        mem_member *mb = &g->members[i];
        mem_channel *ch = mb->ch;
        if (mb->expires_at <= now) {
            if (ch == excl) excl = NULL; /* it may be freed now */
            member_remove(l, g, i);      /* the last member moves into slot i */
            expired++;
            continue;
        }
        i++;
        if (ch == excl) continue;
        if (ch->count >= capacity) {
            chan_purge(l, ch, now, &fl);
            if (ch->count >= capacity) {
                full++;
                continue;
            }
        }
        if (ch->count == ch->size && ring_grow(l, ch) != 0) {
            oom++;
            continue;
        }
        mem_entry *e = &ch->ring[(ch->head + ch->count) & (ch->size - 1)];
        e->msg = msg;
        e->expires_at = msg_exp;
        ch->count++;
        added++;
        cch_receiver *r = ch->recv;
        if (__builtin_expect(ch->count == hot_at || ch->count == capacity, 0) && r)
            hot_update(l, ch, ch->count - 1, ch->count);
        if (r && !ch->in_ready && ready_push(r, ch) && r->wakeup) {
            wakes[nwake].fn = r->wakeup;
            wakes[nwake].ud = r->ud;
            nwake++;
        }
    }
    cch__msg_ref_n(m, added); /* before unlocking: pollers may drop theirs at once */
    l->st.sent += added;
    l->st.full += full;
    l->st.groups_expired += expired;
    l->st.dropped += oom;
    if (!g->n) group_free(l, g);
out:
    if (l->calm_pending) ncalm = calm_collect(l, NULL, stack_calm, &calm); /* an expiry */
    pthread_mutex_unlock(&l->lock);
    for (size_t i = 0; i < nwake; i++) wakes[i].fn(wakes[i].ud);
    if (wakes != stack_wakes) cch__free(wakes);
    wakes_run(calm, ncalm, stack_calm);
    cch__msg_free_list(fl);
    res->delivered = added;
    res->full = full;
    res->expired = expired;
    if (oom) {
        cch_layer_log(base, CCH_LOG_ERROR, "group_send to %s: out of memory for %zu member(s)",
                      group, oom);
        return CCH_ENOMEM;
    }
    return 0;
}

static int mem_group_members(cch_layer *base, const char *group, cch_members_fn cb,
                             void *ud) {
    static const char *const no_names[1] = {NULL};
    mem_layer *l = ML(base);
    char **names = NULL;
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    mem_group *g = group_find(l, group, strlen(group));
    if (g) {
        uint64_t now = l->clock(l->clock_ud);
        size_t bytes = 0;
        for (size_t i = 0; i < g->n;) {
            if (g->members[i].expires_at <= now) {
                member_remove(l, g, i);
                l->st.groups_expired++;
                continue;
            }
            bytes += g->members[i].ch->hh.keylen + 1u;
            i++;
        }
        n = g->n;
        if (!n) {
            group_free(l, g);
        } else {
            names = cch__malloc(n * sizeof *names + bytes);
            if (!names) {
                pthread_mutex_unlock(&l->lock);
                return CCH_ENOMEM;
            }
            char *p = (char *)(names + n);
            for (size_t i = 0; i < n; i++) {
                mem_channel *ch = g->members[i].ch;
                names[i] = p;
                memcpy(p, ch->name, ch->hh.keylen + 1u);
                p += ch->hh.keylen + 1u;
            }
        }
    }
    pthread_mutex_unlock(&l->lock);
    cb(ud, 0, names ? (const char *const *)names : no_names, n);
    cch__free(names);
    return 0;
}

static void mem_stats(cch_layer *base, cch_layer_stats *out) {
    mem_layer *l = ML(base);
    pthread_mutex_lock(&l->lock);
    *out = l->st;
    pthread_mutex_unlock(&l->lock);
}

static void mem_destroy(cch_layer *base) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    while (l->receivers) { /* the owners should have freed them; do not leak */
        cch_receiver *r = l->receivers;
        receiver_detach(l, r);
        cch__free(r);
    }
    mem_group *g, *gt;
    HASH_ITER(hh, l->groups, g, gt) {
        HASH_DELETE(hh, l->groups, g);
        cch__free(g->members);
        cch__free(g);
    }
    mem_channel *ch, *ct;
    HASH_ITER(hh, l->channels, ch, ct) {
        chan_clear(ch, &fl);
        HASH_DELETE(hh, l->channels, ch);
        ring_drop(l, ch);
        cch__free(ch->more);
        cch__free(ch);
    }
    pool_free(l);
    pthread_mutex_destroy(&l->lock);
    cch__free(l);
    cch__msg_free_list(fl);
}

/* ---- one message to many channels (memory_internal.h) ------------------------------- */

int cch__memory_send_many(cch_layer *base, const cch_msg *m, const char *const *names,
                          const size_t *lens, size_t n, cch__mem_handles *cache, int *rcs) {
    mem_layer *l = ML(base);
    cch_msg *fl = NULL;
    wake stack_wakes[WAKE_STACK], *wakes = stack_wakes;
    size_t nwake = 0, added = 0, full = 0, oom = 0;
    pthread_mutex_lock(&l->lock);
    if (l->n_receivers > WAKE_STACK &&
        !(wakes = cch__malloc(l->n_receivers * sizeof *wakes))) {
        pthread_mutex_unlock(&l->lock);
        for (size_t i = 0; i < n; i++) rcs[i] = CCH_ENOMEM;
        return CCH_ENOMEM;
    }
    uint64_t now = l->clock(l->clock_ud);
    sweep(l, now, &fl);
    const uint64_t freed = l->freed, exp = add_sat(now, l->expiry_ms);
    bool cached = cache && cache->n == n && cache->gen == freed;
    if (cache && !cached) { /* resolve the names into it */
        cache->n = 0;
        if (cache->cap < n) {
            void **nc = cch__realloc(cache->ch, n * sizeof *nc);
            if (nc) {
                cache->ch = nc;
                cache->cap = n;
            } else {
                cache = NULL;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        mem_channel *ch = cached ? cache->ch[i] : chan_find(l, names[i], lens[i]);
        if (!ch && !(ch = chan_create(l, names[i], lens[i]))) {
            rcs[i] = CCH_ENOMEM;
            oom++;
            continue;
        }
        if (cache && !cached) cache->ch[i] = ch;
        bool woke = false;
        int rc = rcs[i] = chan_push(l, ch, (cch_msg *)m, now, exp, &fl, &woke);
        if (rc == CCH_ECHANFULL) {
            full++;
        } else if (rc < 0) {
            oom++;
            chan_maybe_free(l, ch); /* one this call made */
        } else {
            added++;
            if (woke) wakes[nwake++] = (wake){ch->recv->wakeup, ch->recv->ud};
        }
    }
    if (cache && !cached && !oom && l->freed == freed) { /* every handle still good */
        cache->n = n;
        cache->gen = freed;
    }
    cch__msg_ref_n(m, added); /* before unlocking: pollers may drop theirs at once */
    l->st.sent += added;
    l->st.full += full; /* those out of memory are the caller's to count, as with send */
    wake calm_stack[WAKE_STACK], *calm = calm_stack;
    size_t ncalm = l->calm_pending ? calm_collect(l, NULL, calm_stack, &calm) : 0; /* expiry */
    pthread_mutex_unlock(&l->lock);
    for (size_t i = 0; i < nwake; i++) wakes[i].fn(wakes[i].ud);
    if (wakes != stack_wakes) cch__free(wakes);
    wakes_run(calm, ncalm, calm_stack);
    cch__msg_free_list(fl);
    return oom ? CCH_ENOMEM : 0;
}

void cch__mem_handles_free(cch__mem_handles *c) {
    cch__free(c->ch);
    *c = (cch__mem_handles){0};
}

static const cch_layer_ops mem_ops = {
    .kind = "memory",
    .receiver_new = mem_receiver_new,
    .receiver_free = mem_receiver_free,
    .new_channel = mem_new_channel,
    .release_channel = mem_release_channel,
    .send = mem_send,
    .receive = mem_receive,
    .poll = mem_poll,
    .group_add = mem_group_add,
    .group_discard = mem_group_discard,
    .group_send = mem_group_send,
    .group_members = mem_group_members,
    .stats = mem_stats,
    .congested = mem_congested,
    .destroy = mem_destroy,
};

/* 12 hex characters from the kernel's random source, or time ^ pid. */
static void random_part(char out[13]) {
    unsigned char b[6];
    bool ok = getrandom(b, sizeof b, GRND_NONBLOCK) == (ssize_t)sizeof b;
    if (!ok) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ok = read(fd, b, sizeof b) == (ssize_t)sizeof b;
            close(fd);
        }
    }
    if (!ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
                     ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)(x >> (8 * i));
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[12] = '\0';
}

cch_layer *cch_memory_layer_new(const cch_memory_layer_options *opts) {
    mem_layer *l = cch__calloc(1, sizeof *l);
    if (!l) return NULL;
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        cch__free(l);
        return NULL;
    }
    cch_layer_init(&l->base, &mem_ops);
    size_t cap = opts && opts->capacity ? opts->capacity : CCH_MEMORY_DEFAULT_CAPACITY;
    l->capacity = cap > CAPACITY_MAX ? CAPACITY_MAX : (uint32_t)cap;
    l->high_water = l->capacity / 2;
    atomic_init(&l->congested, false);
    l->expiry_ms = opts && opts->expiry_ms ? opts->expiry_ms : CCH_MEMORY_DEFAULT_EXPIRY_MS;
    l->group_expiry_ms = opts && opts->group_expiry_ms ? opts->group_expiry_ms
                                                       : CCH_MEMORY_DEFAULT_GROUP_EXPIRY_MS;
    l->clock = opts && opts->clock ? opts->clock : monotonic_ms;
    l->clock_ud = opts && opts->clock ? opts->clock_ud : NULL;
    for (unsigned k = 0; k < RING_POOL_CLASSES; k++)
        cch__slab_pool_init(&l->pool[k], sizeof(mem_entry) << k);
    random_part(l->proc);
    return &l->base;
}
