/* lib/redis/redis_layer.c - the Redis layer's operations (cchannels/redis_layer.h):
 * what app threads call. Each checks what it can at once (message encoding, the
 * process's own channels), keeps the in-process state (our channels, their groups)
 * and queues an operation for the I/O thread (redis_io.c). Also creation, counters
 * and cch_redis_layer_sync.
 *
 * This process's channels live in an internal in-memory layer: receivers, poll,
 * wakeups and per-channel queues are its, and our group memberships are mirrored
 * there too (with no expiry), which is what re-adding them after a reconnection,
 * refreshing them before group_expiry, and serving our own members while Redis is
 * away read. */
#include "redis_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cchannels/memory_layer.h"

static const cch_layer_ops rl_ops;

/* ---- name sets ------------------------------------------------------------------------ */

static rl_name *name_new(const char *s, size_t len, uint32_t shard) {
    rl_name *n = cch__calloc(1, sizeof *n + len + 1);
    if (!n) return NULL;
    memcpy(n->name, s, len);
    n->len = len;
    n->shard = shard;
    return n;
}

/* Adds n (not yet in the set); frees it and returns false when out of memory. */
static bool name_add(rl_name **set, rl_name *n) {
    HASH_ADD_KEYPTR(hh, *set, n->name, n->len, n);
    if (!n->hh.tbl) {
        cch__free(n);
        return false;
    }
    return true;
}

static rl_name *name_find(rl_name *set, const char *s, size_t len) {
    rl_name *n;
    HASH_FIND(hh, set, s, len, n);
    return n;
}

static void name_del(rl_name **set, rl_name *n) {
    HASH_DELETE(hh, *set, n);
    cch__free(n);
}

static void names_free(rl_name **set) {
    rl_name *n, *tmp;
    HASH_ITER(hh, *set, n, tmp) name_del(set, n);
}

bool rl_owned_locked(rl_layer *l, const char *name, size_t len) {
    return name_find(l->owned, name, len) != NULL;
}

/* The shard of a group's membership set (core) or pub/sub channel (pubsub). */
static uint32_t group_shard(const rl_layer *l, const char *group, size_t glen) {
    if (!l->pubsub) return rl_hash(group, glen, l->n_shards);
    char buf[CCH_REDIS_PREFIX_MAX + 16 + CCH_NAME_BUF];
    int n = snprintf(buf, sizeof buf, "%s__group__%s", l->prefix, group);
    return rl_hash(buf, (size_t)n, l->n_shards);
}

/* ---- operations -------------------------------------------------------------------------- */

/* Receivers are the in-memory layer's, with their wakeup wrapped (rl_wake_fn). */
static cch_receiver *rl_receiver_new(cch_layer *base, cch_wakeup_fn wakeup, void *ud) {
    rl_layer *l = RL(base);
    if (!wakeup) return cch_layer_receiver_new(l->local, NULL, ud);
    rl_wake *w = cch__calloc(1, sizeof *w);
    if (!w) return NULL;
    w->l = l;
    w->fn = wakeup;
    w->ud = ud;
    w->r = cch_layer_receiver_new(l->local, rl_wake_fn, w);
    if (!w->r) {
        cch__free(w);
        return NULL;
    }
    pthread_mutex_lock(&l->lock);
    w->next = l->receivers;
    l->receivers = w;
    pthread_mutex_unlock(&l->lock);
    return w->r;
}

static void rl_receiver_free(cch_layer *base, cch_receiver *r) {
    rl_layer *l = RL(base);
    cch_layer_receiver_free(l->local, r); /* no more wakeups */
    pthread_mutex_lock(&l->lock);
    rl_wake *w = NULL;
    for (rl_wake **pp = &l->receivers; *pp; pp = &(*pp)->next)
        if ((*pp)->r == r) {
            w = *pp;
            *pp = w->next;
            break;
        }
    if (w && w->queued)
        for (rl_wake **pp = &l->wakes; *pp; pp = &(*pp)->next_wake)
            if (*pp == w) {
                *pp = w->next_wake;
                break;
            }
    pthread_mutex_unlock(&l->lock);
    cch__free(w);
}

static int rl_new_channel(cch_layer *base, const char *prefix, cch_receiver *r, void *ud,
                          char *name, size_t cap) {
    rl_layer *l = RL(base);
    char buf[CCH_NAME_BUF];
    int rc = cch_layer_new_channel(l->local, prefix, r, ud, buf, sizeof buf);
    if (rc < 0) return rc;
    size_t len = strlen(buf), nl = rl_nonlocal_len(buf, len);
    if (cap < len + 1) {
        cch_layer_release_channel(l->local, buf);
        return CCH_ETOOBIG;
    }
    bool new_key = false;
    rl_name *own = name_new(buf, len, 0);
    pthread_mutex_lock(&l->lock);
    if (!own || !name_add(&l->owned, own)) {
        rc = CCH_ENOMEM;
    } else if (!name_find(l->qkeys, buf, nl)) {
        rl_name *q = name_new(buf, nl, l->pubsub ? 0 : rl_hash(buf, nl, l->n_shards));
        if (!q || !name_add(&l->qkeys, q)) {
            name_del(&l->owned, own);
            rc = CCH_ENOMEM;
        } else {
            new_key = l->keys_changed = true;
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (rc < 0) {
        cch_layer_release_channel(l->local, buf);
        return rc;
    }
    if (new_key) uv_async_send(&l->wake);
    memcpy(name, buf, len + 1);
    return 0;
}

static int rl_release_channel(cch_layer *base, const char *channel) {
    rl_layer *l = RL(base);
    pthread_mutex_lock(&l->lock);
    rl_name *own = name_find(l->owned, channel, strlen(channel));
    if (own) {
        name_del(&l->owned, own);
        l->owned_gen++; /* lists known to be all ours may not be any more */
    }
    pthread_mutex_unlock(&l->lock);
    return cch_layer_release_channel(l->local, channel);
}

/* Whether `channel` (with a '!') is ours: 1 live, 0 not ours, -1 ours but gone. */
static int ours(rl_layer *l, const char *channel, size_t len) {
    size_t nl = rl_nonlocal_len(channel, len);
    pthread_mutex_lock(&l->lock);
    int r = rl_owned_locked(l, channel, len) ? 1 : name_find(l->qkeys, channel, nl) ? -1 : 0;
    pthread_mutex_unlock(&l->lock);
    return r;
}

static int rl_send(cch_layer *base, const char *channel, const cch_msg *m) {
    rl_layer *l = RL(base);
    size_t len = strlen(channel), nl = rl_nonlocal_len(channel, len);
    bool bang = memchr(channel, '!', len) != NULL;
    if (bang) {
        int o = ours(l, channel, len);
        if (o > 0) return cch_layer_send(l->local, channel, m); /* never leaves the process */
        if (o < 0) {                                             /* one of ours, released */
            RL_COUNT(l, dropped, 1);
            return 0;
        }
    }
    const rl_body *body;
    int rc = rl_body_get(m, &body);
    if (rc < 0) return rc;
    rl_buf b = {0};
    bool ok = l->pubsub ? rl_encode(&b, 0, cch_msg_type(m), body, NULL, NULL, 0, false)
                        : rl_encode(&b, RL_RANDOM_PREFIX, cch_msg_type(m), body, &channel,
                                    &len, bang ? 1 : 0, false);
    rl_op *op = ok ? rl_op_new(RL_OP_SEND, len + 1 + b.len) : NULL;
    if (!op) {
        rl_buf_free(&b);
        return CCH_ENOMEM;
    }
    size_t pos = 0;
    op->channel = rl_op_str(op, &pos, channel, len);
    op->blob = op->data + pos;
    op->blob_len = b.len;
    memcpy(op->blob, b.p, b.len);
    rl_buf_free(&b);
    if (l->pubsub) op->shard = rl_hash(channel, len, l->n_shards);
    else if (bang) op->shard = rl_hash(channel, nl, l->n_shards); /* see the header */
    else op->shard = atomic_fetch_add(&l->rr_send, 1) % l->n_shards;
    op->now_us = rl_now_us(&l->last_us);
    return rl_submit(l, op, true);
}

void rl_fetch_done(rl_layer *l, const char *channel) {
    pthread_mutex_lock(&l->lock);
    rl_name *f = name_find(l->fetching, channel, strlen(channel));
    if (f) name_del(&l->fetching, f);
    pthread_mutex_unlock(&l->lock);
}

static int rl_receive(cch_layer *base, const char *channel, cch_msg **out) {
    rl_layer *l = RL(base);
    size_t len = strlen(channel);
    if (memchr(channel, '!', len)) {
        int o = ours(l, channel, len);
        if (o > 0) return cch_layer_receive(l->local, channel, out);
        return o < 0 ? CCH_EAGAIN : CCH_EINVAL; /* only its process receives on it */
    }
    int rc = cch_layer_receive(l->local, channel, out);
    if (rc != CCH_EAGAIN) return rc;
    /* A plain channel: ask Redis (core: one ZPOPMIN; pubsub: SUBSCRIBE once). */
    uint32_t shard = l->pubsub ? rl_hash(channel, len, l->n_shards)
                               : atomic_fetch_add(&l->rr_recv, 1) % l->n_shards;
    bool fetch = false;
    pthread_mutex_lock(&l->lock);
    if (!name_find(l->fetching, channel, len)) {
        rl_name *f = name_new(channel, len, shard);
        fetch = f && name_add(&l->fetching, f);
    }
    pthread_mutex_unlock(&l->lock);
    if (!fetch) return CCH_EAGAIN;
    rl_op *op = rl_op_new(RL_OP_FETCH, len + 1);
    if (!op) {
        rl_fetch_done(l, channel);
        return CCH_ENOMEM;
    }
    size_t pos = 0;
    op->channel = rl_op_str(op, &pos, channel, len);
    op->shard = shard;
    rc = rl_submit(l, op, true);
    if (rc < 0) {
        rl_fetch_done(l, channel);
        return rc;
    }
    return CCH_EAGAIN;
}

static int rl_poll(cch_layer *base, cch_receiver *r, cch_delivery *out, size_t max) {
    return cch_layer_poll(RL(base)->local, r, out, max);
}

/* A group op with names copied into it. */
static rl_op *group_op(uint8_t kind, const char *group, const char *channel, const char *exclude) {
    size_t glen = strlen(group), clen = channel ? strlen(channel) : 0;
    size_t xlen = exclude ? strlen(exclude) : 0;
    rl_op *op = rl_op_new(kind, glen + clen + xlen + 3);
    if (!op) return NULL;
    size_t pos = 0;
    op->group = rl_op_str(op, &pos, group, glen);
    if (channel) op->channel = rl_op_str(op, &pos, channel, clen);
    if (exclude) op->exclude = rl_op_str(op, &pos, exclude, xlen);
    return op;
}

static int rl_group_add(cch_layer *base, const char *group, const char *channel) {
    rl_layer *l = RL(base);
    size_t glen = strlen(group), clen = strlen(channel);
    uint32_t shard = group_shard(l, group, glen);
    bool new_group = false;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    bool owned = rl_owned_locked(l, channel, clen);
    bool down = !atomic_load(&l->shards[shard].up); /* read under the lock: see redis_io.c */
    if (owned) { /* mirrored in-process: our own members, re-adds, refreshes */
        rc = cch_layer_group_add(l->local, group, channel);
        if (rc == 0 && !name_find(l->groups, group, glen)) {
            rl_name *g = name_new(group, glen, shard);
            if (!g || !name_add(&l->groups, g)) {
                cch_layer_group_discard(l->local, group, channel); /* it was not a member */
                rc = CCH_ENOMEM;
            } else {
                new_group = true;
            }
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (rc < 0) return rc;
    if (l->pubsub) {
        if (!owned) return CCH_ENOTSUP; /* as channels_redis.pubsub: in-process channels only */
        if (!new_group) return 0;
        rl_op *op = group_op(RL_OP_SUBSCRIBE, group, NULL, NULL);
        if (op) op->shard = shard;
        rc = op ? rl_submit(l, op, false) : CCH_ENOMEM;
        if (rc < 0) {
            pthread_mutex_lock(&l->lock);
            cch_layer_group_discard(l->local, group, channel);
            rl_name *g = name_find(l->groups, group, glen);
            if (g) name_del(&l->groups, g);
            pthread_mutex_unlock(&l->lock);
        }
        return rc;
    }
    /* While the server is down our own memberships are not queued: they are all
     * re-added when it is back. */
    if (owned && down) return 0;
    rl_op *op = group_op(RL_OP_GROUP_ADD, group, channel, NULL);
    if (op) {
        op->shard = shard;
        op->now_us = rl_now_us(&l->last_us);
        if (owned) op->flags |= RL_OPF_OWNED;
        rc = rl_submit(l, op, !owned);
    } else {
        rc = CCH_ENOMEM;
    }
    if (rc < 0 && owned) { /* recorded in-process: the next re-add writes it */
        pthread_mutex_lock(&l->lock);
        l->readd_all = true;
        pthread_mutex_unlock(&l->lock);
        uv_async_send(&l->wake);
        rc = 0;
    }
    return rc;
}

static int rl_group_discard(cch_layer *base, const char *group, const char *channel) {
    rl_layer *l = RL(base);
    size_t glen = strlen(group), clen = strlen(channel);
    pthread_mutex_lock(&l->lock);
    bool owned = rl_owned_locked(l, channel, clen);
    if (owned) cch_layer_group_discard(l->local, group, channel);
    pthread_mutex_unlock(&l->lock);
    rl_op *op = NULL;
    if (l->pubsub) {
        if (!owned) return 0;
        op = group_op(RL_OP_UNSUB_CHECK, group, NULL, NULL);
        if (!op) return 0; /* stays subscribed: harmless, nobody here is a member */
        op->shard = group_shard(l, group, glen);
        rl_submit(l, op, false);
        return 0;
    }
    op = group_op(RL_OP_GROUP_DISCARD, group, channel, NULL);
    if (!op) return CCH_ENOMEM;
    op->shard = group_shard(l, group, glen);
    op->now_us = rl_now_us(&l->last_us);
    if (owned) op->flags |= RL_OPF_OWNED;
    return rl_submit(l, op, !owned);
}

static int rl_group_send(cch_layer *base, const char *group, const cch_msg *m,
                         const char *exclude, cch_group_send_result *res) {
    rl_layer *l = RL(base);
    (void)res; /* known later: see cch_layer_stats */
    const rl_body *body;
    int rc = rl_body_get(m, &body);
    if (rc < 0) return rc;
    size_t glen = strlen(group), xlen = exclude ? strlen(exclude) : 0;
    rl_buf b = {0};
    if (l->pubsub && !rl_encode(&b, 0, cch_msg_type(m), body, NULL, NULL, 0, false)) {
        rl_buf_free(&b);
        return CCH_ENOMEM;
    }
    rl_op *op = rl_op_new(RL_OP_GROUP_SEND, glen + xlen + 2 + b.len);
    if (!op) {
        rl_buf_free(&b);
        return CCH_ENOMEM;
    }
    size_t pos = 0;
    op->group = rl_op_str(op, &pos, group, glen);
    if (exclude) op->exclude = rl_op_str(op, &pos, exclude, xlen);
    if (b.len) {
        op->blob = op->data + pos;
        op->blob_len = b.len;
        memcpy(op->blob, b.p, b.len);
    }
    rl_buf_free(&b);
    op->msg = cch_msg_ref(m);
    op->body = body;
    op->shard = group_shard(l, group, glen);
    op->now_us = rl_now_us(&l->last_us);
    return rl_submit(l, op, true);
}

static int rl_group_members(cch_layer *base, const char *group, cch_members_fn cb, void *ud) {
    rl_layer *l = RL(base);
    if (l->pubsub) return cch_layer_group_members(l->local, group, cb, ud); /* ours only */
    rl_op *op = group_op(RL_OP_MEMBERS, group, NULL, NULL);
    if (!op) return CCH_ENOMEM;
    op->cb = cb;
    op->cb_ud = ud;
    op->shard = group_shard(l, group, strlen(group));
    op->now_us = rl_now_us(&l->last_us);
    return rl_submit(l, op, true);
}

static void rl_stats_get(cch_layer *base, cch_layer_stats *out) {
    rl_layer *l = RL(base);
    cch_layer_stats m;
    cch_layer_stats_get(l->local, &m);
    pthread_mutex_lock(&l->lock);
    rl_stats st = l->st;
    pthread_mutex_unlock(&l->lock);
    out->sent = m.sent + st.sent;
    out->delivered = m.delivered;
    out->full = m.full + st.full - (st.refused < m.full ? st.refused : m.full);
    out->expired = m.expired + st.expired;
    out->groups_expired = m.groups_expired + st.groups_expired;
    out->dropped = m.dropped + st.dropped;
    out->errors = m.errors + st.errors;
}

static void rl_destroy(cch_layer *base) { rl_io_stop(RL(base)); }

/* This process's channels are the local memory layer's: so is their congestion (the
 * loops of one process pausing for each other; other processes are held back by the
 * outboxes, see redis_layer.h). */
static bool rl_congested(cch_layer *base) { return cch_layer_congested(RL(base)->local); }

static const cch_layer_ops rl_ops = {
    .kind = "redis",
    .receiver_new = rl_receiver_new,
    .receiver_free = rl_receiver_free,
    .new_channel = rl_new_channel,
    .release_channel = rl_release_channel,
    .send = rl_send,
    .receive = rl_receive,
    .poll = rl_poll,
    .group_add = rl_group_add,
    .group_discard = rl_group_discard,
    .group_send = rl_group_send,
    .group_members = rl_group_members,
    .stats = rl_stats_get,
    .destroy = rl_destroy,
    .congested = rl_congested,
};

/* ---- creation ------------------------------------------------------------------------------ */

void rl_free_all(rl_layer *l) {
    for (uint32_t i = 0; l->shards && i < l->n_shards; i++) {
        rl_shard *s = &l->shards[i];
        while (s->pend_head) { /* only when the thread never ran */
            rl_op *op = s->pend_head;
            s->pend_head = op->next;
            rl_op_free(op);
        }
        rl_url_free(&s->url);
        cch__free(s->drain_key);
    }
    while (l->in_head) {
        rl_op *op = l->in_head;
        l->in_head = op->next;
        rl_op_free(op);
    }
    cch__free(l->shards);
    for (size_t i = 0; i < l->n_caps; i++) cch__free(l->caps[i].pattern);
    cch__free(l->caps);
    names_free(&l->owned);
    names_free(&l->qkeys);
    names_free(&l->groups);
    names_free(&l->fetching);
    for (size_t i = 0; i < sizeof l->lists / sizeof l->lists[0]; i++) {
        cch__free(l->lists[i].data);
        cch__mem_handles_free(&l->lists[i].h);
    }
    cch_layer_unref(l->local);
    while (l->receivers) { /* receivers never freed: freed with the in-memory layer */
        rl_wake *w = l->receivers;
        l->receivers = w->next;
        cch__free(w);
    }
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    cch__free(l);
}

/* The in-memory layer's clock: its expiries are seconds long, and it reads the clock
 * on every send (hundreds per received group message), so the coarse clock will do. */
static uint64_t coarse_ms(void *ud) {
    (void)ud;
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void forward_log(void *ud, int level, const char *msg) {
    rl_layer *l = ud;
    if (l->base.log) l->base.log(l->base.log_ud, level, msg);
}

static bool prefix_ok(const char *p) {
    size_t n = strlen(p);
    if (n == 0 || n > CCH_REDIS_PREFIX_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* Learns the in-memory layer's process part from one channel name. */
static int probe_process(rl_layer *l) {
    char name[CCH_NAME_BUF];
    int rc = cch_layer_new_channel(l->local, "specific", NULL, NULL, name, sizeof name);
    if (rc < 0) return rc;
    cch_layer_release_channel(l->local, name);
    const char *dot = name + strlen("specific"), *bang = strchr(name, '!');
    if (*dot != '.' || !bang || bang <= dot + 1) return CCH_EINVAL;
    memcpy(l->proc, dot + 1, (size_t)(bang - dot - 1));
    l->proc[bang - dot - 1] = '\0';
    return 0;
}

int cch_redis_layer_new(const cch_redis_layer_options *o, cch_layer **out) {
    static const char *const default_urls[1] = {CCH_REDIS_DEFAULT_URL};
    if (!out) return CCH_EINVAL;
    *out = NULL;
    cch_redis_layer_options d;
    memset(&d, 0, sizeof d);
    if (!o) o = &d;
    const char *prefix = o->prefix ? o->prefix : CCH_REDIS_DEFAULT_PREFIX;
    const char *const *urls = o->urls && o->n_urls ? o->urls : default_urls;
    size_t n_urls = o->urls && o->n_urls ? o->n_urls : 1;
    unsigned rmin = o->reconnect_min_ms ? o->reconnect_min_ms : CCH_REDIS_DEFAULT_RECONNECT_MIN_MS;
    unsigned rmax = o->reconnect_max_ms ? o->reconnect_max_ms : CCH_REDIS_DEFAULT_RECONNECT_MAX_MS;
    if (!prefix_ok(prefix) || n_urls > CCH_REDIS_MAX_SERVERS || rmin > rmax ||
        (o->n_channel_capacity && !o->channel_capacity))
        return CCH_EINVAL;
    for (size_t i = 0; i < o->n_channel_capacity; i++)
        if (!o->channel_capacity[i].pattern) return CCH_EINVAL;

    rl_layer *l = cch__calloc(1, sizeof *l);
    if (!l) return CCH_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        pthread_condattr_destroy(&ca);
        cch__free(l);
        return CCH_ENOMEM;
    }
    if (pthread_cond_init(&l->cond, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&l->lock);
        cch__free(l);
        return CCH_ENOMEM;
    }
    pthread_condattr_destroy(&ca);
    cch_layer_init(&l->base, &rl_ops);
    cch_layer_set_log(&l->base, o->log, o->log_ud);
    snprintf(l->prefix, sizeof l->prefix, "%s", prefix);
    l->prefix_len = strlen(l->prefix);
    l->capacity = o->capacity ? o->capacity : CCH_REDIS_DEFAULT_CAPACITY;
    l->expiry_s = o->expiry_s ? o->expiry_s : CCH_REDIS_DEFAULT_EXPIRY_S;
    l->group_expiry_s = o->group_expiry_s ? o->group_expiry_s : CCH_REDIS_DEFAULT_GROUP_EXPIRY_S;
    l->max_pending = o->max_pending ? o->max_pending : CCH_REDIS_DEFAULT_MAX_PENDING;
    l->reconnect_min_ms = rmin;
    l->reconnect_max_ms = rmax;
    atomic_init(&l->last_us, 0);
    atomic_init(&l->rr_send, 0);
    atomic_init(&l->rr_recv, 0);
    atomic_init(&l->io_running, false);

    int rc = 0;
    l->shards = cch__calloc(n_urls, sizeof *l->shards);
    if (!l->shards) rc = CCH_ENOMEM;
    else l->n_shards = (uint32_t)n_urls;
    for (uint32_t i = 0; rc == 0 && i < l->n_shards; i++) {
        rl_shard *s = &l->shards[i];
        s->l = l;
        s->idx = i;
        s->pop_id = -1;
        s->backoff_ms = rmin;
        atomic_init(&s->up, false);
        atomic_init(&s->pop_ready, false);
        rc = rl_url_parse(urls[i], &s->url);
        if (rc == 0 && i > 0 && s->url.pubsub != l->shards[0].url.pubsub) rc = CCH_EINVAL;
        if (rc == 0) {
            bool v6 = strchr(s->url.host, ':') != NULL;
            snprintf(s->label, sizeof s->label, "%s://%s%.100s%s:%d/%d",
                     s->url.pubsub ? "redis+pubsub" : "redis", v6 ? "[" : "", s->url.host,
                     v6 ? "]" : "", s->url.port, s->url.db);
        }
    }
    if (rc == 0) l->pubsub = l->shards[0].url.pubsub;
    if (rc == 0 && o->n_channel_capacity) {
        l->caps = cch__calloc(o->n_channel_capacity, sizeof *l->caps);
        if (!l->caps) rc = CCH_ENOMEM;
        for (size_t i = 0; rc == 0 && i < o->n_channel_capacity; i++) {
            l->caps[i].capacity = o->channel_capacity[i].capacity;
            if (!(l->caps[i].pattern = cch__strdup(o->channel_capacity[i].pattern))) rc = CCH_ENOMEM;
            l->n_caps = i + 1;
        }
    }
    if (rc == 0) {
        cch_memory_layer_options mo;
        memset(&mo, 0, sizeof mo);
        mo.capacity = l->capacity;
        mo.expiry_ms = (uint64_t)l->expiry_s * 1000u;
        mo.group_expiry_ms = UINT64_MAX; /* our memberships: refreshed, never expired here */
        mo.clock = coarse_ms;
        l->local = cch_memory_layer_new(&mo);
        if (!l->local) rc = CCH_ENOMEM;
        else cch_layer_set_log(l->local, forward_log, l);
    }
    if (rc == 0) rc = probe_process(l);
    if (rc == 0) rc = rl_io_start(l);
    if (rc < 0) {
        rl_free_all(l);
        return rc;
    }
    *out = &l->base;
    return 0;
}

int cch_redis_layer_new_url(const char *url, cch_layer **out) {
    if (!url) {
        if (out) *out = NULL;
        return CCH_EINVAL;
    }
    cch_redis_layer_options o;
    memset(&o, 0, sizeof o);
    o.urls = &url;
    o.n_urls = 1;
    return cch_redis_layer_new(&o, out);
}

static bool is_redis(const cch_layer *l) { return l && l->ops == &rl_ops; }

static bool all_ready(rl_layer *l) {
    for (uint32_t i = 0; i < l->n_shards; i++)
        if (!atomic_load(&l->shards[i].up) || !atomic_load(&l->shards[i].pop_ready)) return false;
    return true;
}

static bool all_up(rl_layer *l) {
    for (uint32_t i = 0; i < l->n_shards; i++)
        if (!atomic_load(&l->shards[i].up)) return false;
    return true;
}

int cch_redis_layer_sync(cch_layer *base, unsigned timeout_ms) {
    if (!is_redis(base)) return CCH_EINVAL;
    rl_layer *l = RL(base);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000u;
    dl.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&l->lock);
    l->sync_waiters++;
    bool ok;
    while (!(ok = l->busy == 0 && all_ready(l)))
        if (pthread_cond_timedwait(&l->cond, &l->lock, &dl) == ETIMEDOUT) {
            ok = l->busy == 0 && all_ready(l);
            break;
        }
    l->sync_waiters--;
    pthread_mutex_unlock(&l->lock);
    if (ok) return 0;
    return all_up(l) ? CCH_EAGAIN : CCH_ETRANSPORT;
}

bool cch_redis_layer_connected(cch_layer *base) {
    return is_redis(base) && all_up(RL(base));
}

const char *cch_redis_layer_process(cch_layer *base) {
    return is_redis(base) ? RL(base)->proc : NULL;
}
