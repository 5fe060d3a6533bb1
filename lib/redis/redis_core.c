/* lib/redis/redis_core.c - the channels_redis.core format, in the I/O thread: the
 * commands of send, group_add, group_discard, group_send (with its fan-out of one
 * queue entry per process, the per-key outboxes and the capacity script), presence,
 * the pop loop on this process's queue keys, delivery to this process's channels
 * (waiting for room in a full one), and re-adding our memberships.
 *
 * Keys (see docs/redis.md): queue "<prefix><non-local name>" (a sorted set of
 * 12 random bytes + msgpack, scored by send time), group "<prefix>:group:<group>"
 * (a sorted set of channel names, scored by group_add time). */
#include "redis_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* channels_redis's group_send script, except that it returns the indices of the
 * keys that were full instead of their count (the data it writes is the same); a
 * direct send runs it on its one key (group_sends use push_script below). */
static const char send_script[] =
    "local over = {}\n"
    "local current_time = ARGV[#ARGV - 1]\n"
    "local expiry = ARGV[#ARGV]\n"
    "for i=1,#KEYS do\n"
    "    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then\n"
    "        redis.call('ZADD', KEYS[i], current_time, ARGV[i])\n"
    "        redis.call('EXPIRE', KEYS[i], expiry)\n"
    "    else\n"
    "        over[#over + 1] = i\n"
    "    end\n"
    "end\n"
    "return over\n";

#define KEY_BUF (CCH_REDIS_PREFIX_MAX + 8 + CCH_NAME_BUF)

static size_t group_key(const rl_layer *l, const char *group, char *out) {
    return (size_t)snprintf(out, KEY_BUF, "%s:group:%s", l->prefix, group);
}

static size_t queue_key(const rl_layer *l, const char *name, size_t nl, char *out) {
    return (size_t)snprintf(out, KEY_BUF, "%s%.*s", l->prefix, (int)nl, name);
}

/* ---- replies ----------------------------------------------------------------------- */

/* Every context's data is its shard, which knows the layer. */
static rl_layer *layer_of(redisAsyncContext *ac) { return ((rl_shard *)ac->data)->l; }

/* A reply whose only effect is accounting. */
static void cb_simple(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    rl_reply_ok(l, r, "command");
    rl_op_reply(l, pd);
}

/* ZREMRANGEBYSCORE on a queue: messages that expired unread. */
static void cb_queue_trim(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    const redisReply *reply = r;
    if (rl_reply_ok(l, reply, "ZREMRANGEBYSCORE") && reply->type == REDIS_REPLY_INTEGER)
        RL_COUNT(l, expired, (uint64_t)reply->integer);
    rl_op_reply(l, pd);
}

/* ZREMRANGEBYSCORE on a group: memberships older than group_expiry. */
static void cb_group_trim(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    const redisReply *reply = r;
    if (rl_reply_ok(l, reply, "ZREMRANGEBYSCORE") && reply->type == REDIS_REPLY_INTEGER)
        RL_COUNT(l, groups_expired, (uint64_t)reply->integer);
    rl_op_reply(l, pd);
}

/* The capacity script of a direct send. */
static void cb_send_eval(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    rl_op *op = pd;
    const redisReply *reply = r;
    if (!reply) {
        RL_COUNT(l, dropped, 1);
        RL_COUNT(l, errors, 1);
    } else if (rl_reply_ok(l, reply, "send") && reply->type == REDIS_REPLY_ARRAY) {
        if (reply->elements) {
            RL_COUNT(l, full, 1);
            cch_layer_log(&l->base, CCH_LOG_INFO, "redis: send to %s: channel full",
                          op->channel);
        } else {
            RL_COUNT(l, sent, 1);
        }
    } else {
        RL_COUNT(l, dropped, 1);
    }
    rl_op_reply(l, op);
}

/* ---- delivery ------------------------------------------------------------------------- */

/* Bytes waiting in outboxes and held deliveries (I/O thread). A burst (say a room
 * of a thousand joining at once while a process is slow) can make them megabytes;
 * once everything is out, the heap they grew is given back to the system, as it would
 * otherwise stay in the process's RSS for good. */
static void wait_add(rl_layer *l, size_t n) {
    l->wait_bytes += n;
    if (l->wait_bytes > l->wait_peak) l->wait_peak = l->wait_bytes;
}

static void wait_sub(rl_layer *l, size_t n) {
    l->wait_bytes -= n;
    if (l->wait_bytes || l->wait_peak < RL_TRIM_AFTER) return;
    l->wait_peak = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

#define RL_LIST_MIN 8 /* shorter lists are checked name by name */

/* The remembered list that names[0..n) is, all ours, or NULL (lock held). */
static struct rl_list *list_known(rl_layer *l, const char *const *names, const size_t *lens,
                                  size_t n) {
    for (size_t s = 0; s < sizeof l->lists / sizeof l->lists[0]; s++) {
        struct rl_list *c = &l->lists[s];
        if (c->n != n || c->gen != l->owned_gen || !c->data) continue;
        const unsigned char *p = (const unsigned char *)c->data;
        size_t i = 0;
        for (; i < n; i++) {
            if (*p != lens[i] || memcmp(p + 1, names[i], lens[i]) != 0) break;
            p += 1 + lens[i];
        }
        if (i == n) return c;
    }
    return NULL;
}

/* Remembers names[0..n) (all ours, each at most CCH_NAME_MAX bytes) (lock held). */
static struct rl_list *list_remember(rl_layer *l, const char *const *names,
                                     const size_t *lens, size_t n) {
    size_t bytes = n;
    for (size_t i = 0; i < n; i++) bytes += lens[i];
    struct rl_list *c = &l->lists[l->list_next++ % (sizeof l->lists / sizeof l->lists[0])];
    c->h.n = 0; /* its handles were another list's */
    char *p = cch__realloc(c->data, bytes);
    if (!p) {
        c->n = 0;
        return NULL;
    }
    c->data = p;
    c->n = n;
    c->gen = l->owned_gen;
    for (size_t i = 0; i < n; i++) {
        *p++ = (char)lens[i];
        memcpy(p, names[i], lens[i]);
        p += lens[i];
    }
    return c;
}

/* Delivers m to names[0..n) under the lock, all in one call to the in-memory layer;
 * the names whose channel is full are appended to `full` (NUL-terminated; *nfull
 * counts them). Returns false when out of memory for that list (those names are then
 * counted as dropped). */
static bool try_names(rl_layer *l, cch_msg *m, const char *const *names, const size_t *lens,
                      size_t n, rl_buf *full, size_t *nfull) {
    bool ok = true;
    uint64_t dropped = 0, refused = 0;
    char gone[CCH_NAME_BUF] = "";
    const char *stack_ours[64];
    size_t stack_lens[64];
    int stack_rcs[64];
    const char **ours = n <= 64 ? stack_ours : cch__malloc(n * sizeof *ours);
    size_t *olens = n <= 64 ? stack_lens : cch__malloc(n * sizeof *olens);
    int *rcs = n <= 64 ? stack_rcs : cch__malloc(n * sizeof *rcs);
    if (!ours || !olens || !rcs) {
        RL_COUNT(l, dropped, n);
        ok = false;
        goto out;
    }
    pthread_mutex_lock(&l->lock);
    l->deferring = l->in_batch;
    struct rl_list *c = n >= RL_LIST_MIN ? list_known(l, names, lens, n) : NULL;
    size_t k = 0; /* ours[0..k): the names still ours */
    if (c) {
        memcpy(ours, names, n * sizeof *ours);
        memcpy(olens, lens, n * sizeof *olens);
        k = n;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (lens[i] > CCH_NAME_MAX) {
                dropped++;
            } else if (!rl_owned_locked(l, names[i], lens[i])) {
                dropped++;
                memcpy(gone, names[i], lens[i]);
                gone[lens[i]] = '\0';
            } else {
                ours[k] = names[i];
                olens[k++] = lens[i];
            }
        }
        if (!dropped && n >= RL_LIST_MIN) c = list_remember(l, names, lens, n);
    }
    cch__memory_send_many(l->local, m, ours, olens, k, c ? &c->h : NULL, rcs);
    for (size_t i = 0; i < k; i++) {
        rl_name *lossy = NULL;
        if (l->lossy) HASH_FIND(hh, l->lossy, ours[i], olens[i], lossy);
        if (rcs[i] == CCH_ECHANFULL && !lossy) {
            if (rl_buf_put(full, ours[i], olens[i]) && rl_buf_putc(full, '\0')) {
                (*nfull)++;
                refused++;
            } else {
                ok = false;
                dropped++;
            }
        } else if (rcs[i] < 0 && rcs[i] != CCH_ECHANFULL) { /* full: counted by the in-memory layer */
            dropped++;
        } else if (lossy && rcs[i] == 0) { /* it takes messages again: wait for it again */
            HASH_DELETE(hh, l->lossy, lossy);
            cch__free(lossy);
        }
    }
    l->st.dropped += dropped;
    l->st.refused += refused;
    l->deferring = false;
    pthread_mutex_unlock(&l->lock);
    if (gone[0])
        cch_layer_log(&l->base, CCH_LOG_DEBUG, "redis: message for %s, which is gone", gone);
out:
    if (ours != stack_ours) cch__free(ours);
    if (olens != stack_lens) cch__free(olens);
    if (rcs != stack_rcs) cch__free(rcs);
    return ok;
}

static void on_held_timer(uv_timer_t *t);

static void held_arm(rl_layer *l) {
    if (l->held_timer_armed || l->stopping) return;
    l->held_timer_armed = true;
    uv_timer_start(&l->held_timer, on_held_timer, RL_PUSH_RETRY_MS, 0);
}

/* Keeps m for names `full` (nfull of them), after what already waits. */
static void held_add(rl_layer *l, cch_msg *m, rl_buf *full, size_t nfull, uint64_t since) {
    rl_held *h = cch__malloc(sizeof *h + full->len);
    if (!h) {
        RL_COUNT(l, dropped, nfull);
        return;
    }
    h->next = NULL;
    h->msg = cch_msg_ref(m);
    h->since = since;
    h->n = nfull;
    h->len = full->len;
    memcpy(h->names, full->p, full->len);
    wait_add(l, sizeof *h + full->len);
    if (l->held_tail) l->held_tail->next = h;
    else l->held_head = h;
    l->held_tail = h;
    held_arm(l);
}

void rl_deliver_names(rl_layer *l, cch_msg *m, const char *const *names, const size_t *lens,
                      size_t n) {
    if (!n) return;
    uint64_t now = uv_now(&l->loop);
    rl_buf full = {0};
    size_t nfull = 0;
    if (l->held_head) { /* after what waits: all of it */
        for (size_t i = 0; i < n; i++) {
            if (lens[i] > CCH_NAME_MAX) continue;
            if (!rl_buf_put(&full, names[i], lens[i]) || !rl_buf_putc(&full, '\0')) break;
            nfull++;
        }
        if (nfull < n) RL_COUNT(l, dropped, n - nfull);
        held_add(l, m, &full, nfull, 0); /* `since`: set when it is first refused */
    } else {
        try_names(l, m, names, lens, n, &full, &nfull);
        if (nfull) held_add(l, m, &full, nfull, now);
    }
    rl_buf_free(&full);
}

void rl_deliver_local(rl_layer *l, const char *name, size_t len, cch_msg *m) {
    rl_deliver_names(l, m, &name, &len, 1);
}

/* Gives up waiting on the names of h (they were refused: already counted in `full`
 * once each) and waits no more for those channels until they take a message. */
static void held_give_up(rl_layer *l, rl_held *h) {
    const char *p = h->names;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < h->n; i++) {
        size_t len = strlen(p);
        rl_name *x;
        HASH_FIND(hh, l->lossy, p, len, x);
        if (!x && (x = cch__calloc(1, sizeof *x + len + 1))) {
            memcpy(x->name, p, len);
            x->len = len;
            HASH_ADD_KEYPTR(hh, l->lossy, x->name, x->len, x);
            if (!x->hh.tbl) cch__free(x);
        }
        if (l->st.refused) l->st.refused--; /* the last refusal stands as `full` */
        p += len + 1;
    }
    pthread_mutex_unlock(&l->lock);
    if (!l->stopping)
        cch_layer_log(&l->base, CCH_LOG_WARN,
                      "redis: %zu channel(s) full for %u ms: skipped while they stay full",
                      h->n, (unsigned)RL_FULL_PATIENCE_MS);
}

static void held_pop(rl_layer *l) {
    rl_held *h = l->held_head;
    l->held_head = h->next;
    if (!l->held_head) l->held_tail = NULL;
    cch_msg_unref(h->msg);
    size_t n = sizeof *h + h->len;
    cch__free(h);
    wait_sub(l, n);
}

/* Tries what waits, in order, until something is still full. */
static void held_run(rl_layer *l) {
    uint64_t now = uv_now(&l->loop);
    while (l->held_head) {
        rl_held *h = l->held_head;
        const char *stack_names[64];
        size_t stack_lens[64];
        const char **names = h->n <= 64 ? stack_names : cch__malloc(h->n * sizeof *names);
        size_t *lens = h->n <= 64 ? stack_lens : cch__malloc(h->n * sizeof *lens);
        rl_buf full = {0};
        size_t nfull = 0;
        if (names && lens) {
            const char *p = h->names;
            for (size_t i = 0; i < h->n; i++) {
                names[i] = p;
                lens[i] = strlen(p);
                p += lens[i] + 1;
            }
            if (!l->stopping) try_names(l, h->msg, names, lens, h->n, &full, &nfull);
        } else {
            RL_COUNT(l, dropped, h->n);
        }
        if (names != stack_names) cch__free(names);
        if (lens != stack_lens) cch__free(lens);
        if (nfull) { /* still full: wait more, or give up on them */
            memcpy(h->names, full.p, full.len);
            l->wait_bytes -= h->len - full.len;
            h->len = full.len;
            h->n = nfull;
            if (!h->since) h->since = now ? now : 1;
            rl_buf_free(&full);
            if (now - h->since < RL_FULL_PATIENCE_MS) {
                held_arm(l);
                return;
            }
            held_give_up(l, h);
        }
        rl_buf_free(&full);
        held_pop(l);
    }
    for (uint32_t i = 0; i < l->n_shards && !l->pubsub; i++) rl_core_pop_kick(l, &l->shards[i]);
}

static void on_held_timer(uv_timer_t *t) {
    rl_layer *l = t->data;
    l->held_timer_armed = false;
    rl_batch_begin(l);
    held_run(l);
    rl_batch_end(l);
}

void rl_wake_fn(void *ud) {
    rl_wake *w = ud;
    rl_layer *l = w->l;
    if (pthread_equal(pthread_self(), l->thread) && l->deferring) { /* lock held */
        if (!w->queued) {
            w->queued = true;
            w->next_wake = l->wakes;
            l->wakes = w;
        }
        return;
    }
    w->fn(w->ud);
}

void rl_batch_begin(rl_layer *l) { l->in_batch = true; }

void rl_wake_release(rl_layer *l, rl_shard *s) {
    if (!s->wake_hold) return;
    s->wake_hold = false;
    l->wakes_held--;
}

void rl_batch_end(rl_layer *l) {
    l->in_batch = false;
    if (l->wakes_held) return; /* a later batch's end wakes them */
    pthread_mutex_lock(&l->lock);
    while (l->wakes) { /* under the lock: a wakeup only schedules (layer.h) */
        rl_wake *w = l->wakes;
        l->wakes = w->next_wake;
        w->queued = false;
        w->fn(w->ud);
    }
    pthread_mutex_unlock(&l->lock);
}

void rl_held_cleanup(rl_layer *l) {
    uint64_t n = 0;
    while (l->held_head) {
        n += l->held_head->n;
        held_pop(l);
    }
    pthread_mutex_lock(&l->lock);
    l->st.dropped += n;
    rl_name *x, *tmp;
    HASH_ITER(hh, l->lossy, x, tmp) {
        HASH_DELETE(hh, l->lossy, x);
        cch__free(x);
    }
    pthread_mutex_unlock(&l->lock);
}

/* A queue member popped from Redis. `plain` is the plain channel it was fetched for
 * (cch_layer_receive on a name without '!'), or NULL for this process's queues. */
static void deliver_member(rl_layer *l, const char *key, size_t klen, const char *data,
                           size_t len, const char *plain) {
    rl_incoming in;
    char err[160];
    int rc = len < RL_RANDOM_PREFIX ? CCH_EBODY : 0;
    if (rc == 0) rc = rl_decode(&in, data + RL_RANDOM_PREFIX, len - RL_RANDOM_PREFIX, err,
                                sizeof err);
    else snprintf(err, sizeof err, "shorter than the random prefix");
    if (rc < 0) {
        RL_COUNT(l, errors, 1);
        cch_layer_log(&l->base, CCH_LOG_WARN, "redis: dropped a message from %.*s: %s",
                      (int)klen, key, err);
        if (len >= RL_RANDOM_PREFIX) rl_incoming_done(&in);
        return;
    }
    if (plain) {
        if (cch_layer_send(l->local, plain, in.msg) < 0) RL_COUNT(l, dropped, 1);
    } else if (!in.chan) {
        RL_COUNT(l, errors, 1);
        cch_layer_log(&l->base, CCH_LOG_WARN,
                      "redis: dropped a message from %.*s without " RL_ASGI_CHANNEL, (int)klen,
                      key);
    } else if (in.chan->type == MSGPACK_OBJECT_STR) {
        rl_deliver_local(l, in.chan->via.str.ptr, in.chan->via.str.size, in.msg);
    } else {
        size_t n = in.chan->via.array.size;
        const char *stack_names[64];
        size_t stack_lens[64];
        const char **names = n <= 64 ? stack_names : cch__malloc(n * sizeof *names);
        size_t *lens = n <= 64 ? stack_lens : cch__malloc(n * sizeof *lens);
        if (names && lens) {
            for (size_t i = 0; i < n; i++) {
                const msgpack_object *o = &in.chan->via.array.ptr[i];
                names[i] = o->via.str.ptr;
                lens[i] = o->via.str.size;
            }
            rl_deliver_names(l, in.msg, names, lens, n);
        } else {
            RL_COUNT(l, dropped, n);
            RL_COUNT(l, errors, 1);
        }
        if (names != stack_names) cch__free(names);
        if (lens != stack_lens) cch__free(lens);
    }
    rl_incoming_done(&in);
}

/* ---- the pop loop ------------------------------------------------------------------------ */

static void cb_pop(redisAsyncContext *ac, void *r, void *pd);

static void cb_drain(redisAsyncContext *ac, void *r, void *pd) {
    rl_shard *s = pd;
    rl_layer *l = s->l;
    const redisReply *reply = r;
    (void)ac;
    s->pop_busy = false;
    rl_wake_release(l, s);
    if (!reply) return; /* the connection is going: its reconnection restarts the loop */
    bool more = false;
    if (rl_reply_ok(l, reply, "ZPOPMIN") && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                deliver_member(l, s->drain_key, s->drain_len, reply->element[i]->str,
                               reply->element[i]->len, NULL);
        more = reply->elements / 2 >= RL_DRAIN_BATCH;
    }
    if (!more) {
        cch__free(s->drain_key);
        s->drain_key = NULL;
    }
    rl_core_pop_kick(l, s);
}

static void cb_pop(redisAsyncContext *ac, void *r, void *pd) {
    rl_shard *s = pd;
    rl_layer *l = s->l;
    const redisReply *reply = r;
    (void)ac;
    s->pop_busy = s->pop_blocking = false;
    if (!reply) return;
    if (!rl_reply_ok(l, reply, "BZPOPMIN")) {
        rl_io_retry_later(l, s); /* not in a tight loop */
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        const redisReply *key = reply->element[0];
        deliver_member(l, key->str, key->len, reply->element[1]->str, reply->element[1]->len,
                       NULL);
        cch__free(s->drain_key);
        s->drain_key = cch__strndup(key->str, key->len);
        s->drain_len = s->drain_key ? key->len : 0;
    }
    rl_core_pop_kick(l, s);
    if (s->drain_key && s->pop_busy && !s->wake_hold) {
        /* what came with this one follows in the ZPOPMIN: wake receivers once, then */
        s->wake_hold = true;
        l->wakes_held++;
    }
}

static void cb_unblock(redisAsyncContext *ac, void *r, void *pd) {
    (void)ac;
    (void)r;
    (void)pd;
}

void rl_core_pop_kick(rl_layer *l, rl_shard *s) {
    if (l->stopping || !s->pop.up) return;
    if (l->held_head && !s->pop_busy) return; /* held_run kicks it again */
    if (s->pop_busy) {
        /* blocked on the old set of keys: make BZPOPMIN return now (nil) */
        if (s->pop_blocking && !s->unblock_sent && s->pop_id >= 0 && s->cmd.up) {
            char id[24];
            snprintf(id, sizeof id, "%lld", s->pop_id);
            const char *argv[3] = {"CLIENT", "UNBLOCK", id};
            size_t lens[3] = {6, 7, strlen(id)};
            redisAsyncCommandArgv(s->cmd.ac, cb_unblock, NULL, 3, argv, lens);
            s->unblock_sent = true;
        }
        return;
    }
    if (s->drain_key) {
        char count[16];
        snprintf(count, sizeof count, "%d", RL_DRAIN_BATCH);
        const char *argv[3] = {"ZPOPMIN", s->drain_key, count};
        size_t lens[3] = {7, s->drain_len, strlen(count)};
        if (redisAsyncCommandArgv(s->pop.ac, cb_drain, s, 3, argv, lens) == REDIS_OK)
            s->pop_busy = true;
        return;
    }
    /* BZPOPMIN <every queue key of ours> 5, on every shard: channels_redis 4.0 puts a
     * direct send to one of our channels on the shard of its FULL name, which may not
     * be the shard of its queue key (where our own sends, and group_sends, go) */
    pthread_mutex_lock(&l->lock);
    size_t n = HASH_COUNT(l->qkeys);
    rl_name *q, *tmp;
    const char **argv = n ? cch__malloc((n + 2) * sizeof *argv) : NULL;
    size_t *lens = n ? cch__malloc((n + 2) * sizeof *lens) : NULL;
    char *keys = n ? cch__malloc(n * KEY_BUF) : NULL;
    size_t k = 1;
    if (argv && lens && keys) {
        argv[0] = "BZPOPMIN";
        lens[0] = 8;
        HASH_ITER(hh, l->qkeys, q, tmp) {
            char *key = keys + (k - 1) * KEY_BUF;
            lens[k] = queue_key(l, q->name, q->len, key);
            argv[k++] = key;
        }
        argv[k] = RL_POP_TIMEOUT;
        lens[k] = strlen(RL_POP_TIMEOUT);
        k++;
    }
    pthread_mutex_unlock(&l->lock);
    if (n && argv && lens && keys &&
        redisAsyncCommandArgv(s->pop.ac, cb_pop, s, (int)k, argv, lens) == REDIS_OK) {
        s->pop_busy = s->pop_blocking = true;
        s->unblock_sent = false;
    } else if (n) {
        rl_io_retry_later(l, s); /* out of memory: try again later */
    }
    cch__free(argv);
    cch__free(lens);
    cch__free(keys);
}

void rl_core_pop_up(rl_layer *l, rl_shard *s) {
    atomic_store(&s->pop_ready, true);
    pthread_mutex_lock(&l->lock);
    if (l->sync_waiters) pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    rl_core_pop_kick(l, s);
}

/* ---- operations ------------------------------------------------------------------------- */

static void dispatch_send(rl_layer *l, rl_op *op, redisAsyncContext *ac) {
    char key[KEY_BUF], cutoff[32], score[32], cap[24], expiry[16];
    size_t clen = strlen(op->channel);
    size_t klen = queue_key(l, op->channel, rl_nonlocal_len(op->channel, clen), key);
    rl_fmt_cutoff(cutoff, sizeof cutoff, op->now_us, l->expiry_s);
    rl_fmt_score(score, sizeof score, op->now_us);
    snprintf(cap, sizeof cap, "%zu", rl_capacity_for(l, op->channel));
    snprintf(expiry, sizeof expiry, "%u", l->expiry_s);
    op->pending = 2;
    const char *trim[4] = {"ZREMRANGEBYSCORE", key, "0", cutoff};
    size_t trim_len[4] = {16, klen, 1, strlen(cutoff)};
    rl_command(ac, cb_queue_trim, op, 4, trim, trim_len);
    const char *eval[8] = {"EVAL", send_script, "1", key, op->blob, cap, score, expiry};
    size_t eval_len[8] = {4, sizeof send_script - 1, 1, klen, op->blob_len, strlen(cap),
                          strlen(score), strlen(expiry)};
    rl_command(ac, cb_send_eval, op, 8, eval, eval_len);
}

/* ---- group_send: the outboxes ------------------------------------------------------
 *
 * A group_send writes one entry per other process's queue key. Entries wait in the
 * key's outbox (per shard, in order) and one push script per shard is in flight at a
 * time, carrying everything that waited meanwhile. A key at capacity keeps its
 * entries and is tried again RL_PUSH_RETRY_MS later; until then its later entries
 * wait behind them, so one sender's messages stay in order. This process's own
 * members get a group_send once all its entries are in Redis (in the order of the
 * group_sends), which is what slows a sender down to what its slowest receiving
 * process drains, instead of losing messages: a sender that waits for its own echo
 * cannot outrun the others. A key full for RL_FULL_PATIENCE_MS (its process is gone
 * or stuck) gets channels_redis's treatment instead: what does not fit is dropped
 * and counted in `full`, until the key takes a whole push again. */

/* channels_redis's group_send commands for several keys and entries at once: per
 * key, ZREMRANGEBYSCORE of expired messages, then ZADD of its entries in order while
 * ZCOUNT is under the capacity, then EXPIRE. ARGV: per key its capacity and entry
 * count; then per entry its score and member; then the expiry and the trim cutoff.
 * Returns per key {entries written, messages trimmed}. */
static const char push_script[] =
    "local nk = #KEYS\n"
    "local expiry, cutoff = ARGV[#ARGV - 1], ARGV[#ARGV]\n"
    "local out = {}\n"
    "local e = 2 * nk + 1\n"
    "for i = 1, nk do\n"
    "    local cap, n = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])\n"
    "    out[2 * i] = redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)\n"
    "    local count = redis.call('ZCOUNT', KEYS[i], '-inf', '+inf')\n"
    "    local done = 0\n"
    "    while done < n and count < cap do\n"
    "        redis.call('ZADD', KEYS[i], ARGV[e + 2 * done], ARGV[e + 2 * done + 1])\n"
    "        count = count + 1\n"
    "        done = done + 1\n"
    "    end\n"
    "    if done > 0 then redis.call('EXPIRE', KEYS[i], expiry) end\n"
    "    e = e + 2 * n\n"
    "    out[2 * i - 1] = done\n"
    "end\n"
    "return out\n";

/* This process's members of group_sends whose entries are all in, in order. */
static void local_run(rl_layer *l) {
    while (l->local_head && l->local_head->remote_left == 0) {
        rl_op *op = l->local_head;
        l->local_head = op->local_next;
        if (!l->local_head) l->local_tail = NULL;
        const char **names = op->local_names ? cch__malloc(op->n_local * sizeof *names) : NULL;
        size_t *lens = names ? cch__malloc(op->n_local * sizeof *lens) : NULL;
        const char *p = op->local_names;
        for (size_t i = 0; lens && i < op->n_local; i++) {
            names[i] = p;
            lens[i] = strlen(p);
            p += lens[i] + 1;
        }
        if (!l->stopping && lens) rl_deliver_names(l, op->msg, names, lens, op->n_local);
        else if (!l->stopping && op->local_names) RL_COUNT(l, dropped, op->n_local);
        cch__free(names);
        cch__free(lens);
        cch__free(op->local_names);
        op->local_names = NULL;
        rl_op_reply(l, op);
    }
}

/* What finished entries add up to; the counters are updated before their group_sends
 * are finished (cch_redis_layer_sync returns once they are). */
typedef struct push_tally {
    uint64_t sent, full, dropped;
    rl_buf ops; /* rl_op pointers, one per finished entry */
} push_tally;

/* Takes the head entry off k: its channels count in `*field`, its op in t->ops. */
static void entry_finish(rl_shard *s, rl_outkey *k, push_tally *t, uint64_t *field) {
    rl_entry *e = k->head;
    k->head = e->next;
    if (!k->head) k->tail = NULL;
    k->n--;
    s->out_entries--;
    *field += e->members;
    rl_op *op = e->op;
    size_t len = e->len;
    cch__free(e);
    wait_sub(s->l, len);
    if (!rl_buf_put(&t->ops, &op, sizeof op)) { /* out of memory: finish it now */
        op->remote_left--;
        rl_op_reply(s->l, op);
    }
}

static void outkey_free(rl_shard *s, rl_outkey *k) {
    HASH_DELETE(hh, s->outkeys, k);
    cch__free(k);
}

static void push_tally_done(rl_layer *l, push_tally *t) {
    if (t->sent || t->full || t->dropped) {
        pthread_mutex_lock(&l->lock);
        l->st.sent += t->sent;
        l->st.full += t->full;
        l->st.dropped += t->dropped;
        pthread_mutex_unlock(&l->lock);
    }
    for (size_t i = 0; i + sizeof(rl_op *) <= t->ops.len; i += sizeof(rl_op *)) {
        rl_op *op;
        memcpy(&op, t->ops.p + i, sizeof op);
        op->remote_left--;
        rl_op_reply(l, op);
    }
    rl_buf_free(&t->ops);
}

/* One push script in flight: which keys, how many entries of each. */
typedef struct push_batch {
    rl_shard *s;
    size_t nk;
    rl_outkey **keys;
    size_t *counts;
} push_batch;

static void on_push_timer(uv_timer_t *t) {
    rl_shard *s = t->data;
    s->push_timer_armed = false;
    rl_core_push(s->l, s);
}

static void cb_push(redisAsyncContext *ac, void *r, void *pd) {
    push_batch *b = pd;
    rl_shard *s = b->s;
    rl_layer *l = s->l;
    const redisReply *reply = r;
    (void)ac;
    s->push_busy = false;
    bool ok = rl_reply_ok(l, reply, "group_send") && reply->type == REDIS_REPLY_ARRAY &&
              reply->elements == 2 * b->nk;
    uint64_t now = uv_now(&l->loop), expired = 0;
    push_tally t = {0, 0, 0, {0}};
    for (size_t i = 0; i < b->nk; i++) {
        rl_outkey *k = b->keys[i];
        size_t sent = b->counts[i], done = 0;
        if (ok) {
            const redisReply *d = reply->element[2 * i], *x = reply->element[2 * i + 1];
            if (d->type == REDIS_REPLY_INTEGER && d->integer > 0)
                done = (size_t)d->integer < sent ? (size_t)d->integer : sent;
            if (x->type == REDIS_REPLY_INTEGER && x->integer > 0) expired += (uint64_t)x->integer;
        }
        for (size_t j = 0; j < done; j++) entry_finish(s, k, &t, &t.sent);
        if (!ok) { /* lost with the connection, or refused by Redis */
            for (size_t j = 0; j < sent; j++) entry_finish(s, k, &t, &t.dropped);
        } else if (done < sent && (k->lossy || l->stopping)) {
            for (size_t j = done; j < sent; j++) entry_finish(s, k, &t, &t.full);
        } else if (done < sent) { /* full: try again soon, keeping the order */
            if (!k->full_since) k->full_since = now ? now : 1;
            k->retry_at = now + RL_PUSH_RETRY_MS;
            if (now - k->full_since >= RL_FULL_PATIENCE_MS) {
                size_t n = k->n;
                while (k->head) entry_finish(s, k, &t, &t.full);
                k->lossy = true;
                k->full_since = 0;
                cch_layer_log(&l->base, CCH_LOG_WARN,
                              "redis: %.*s full for %u ms: %zu group message(s) dropped; "
                              "dropping while it stays full", (int)k->klen, k->key,
                              (unsigned)RL_FULL_PATIENCE_MS, n);
            }
        } else if (done) { /* all in: the key is healthy */
            k->full_since = 0;
            k->lossy = false;
        }
        if (!k->n && !k->full_since) outkey_free(s, k);
    }
    if (expired) RL_COUNT(l, expired, expired);
    push_tally_done(l, &t);
    if (t.full && !l->stopping)
        cch_layer_log(&l->base, CCH_LOG_INFO, "redis: group_send: %llu channel(s) over capacity",
                      (unsigned long long)t.full);
    cch__free(b);
    local_run(l);
    rl_core_push(l, s);
}

void rl_core_push(rl_layer *l, rl_shard *s) {
    if (s->push_busy || !s->out_entries || l->stopping) return;
    redisAsyncContext *ac = rl_cmd(l, s->idx);
    if (!ac) return; /* rl_core_shard_up pushes when it is back */
    uint64_t now = uv_now(&l->loop), wait = UINT64_MAX;
    size_t nk = 0, ne = 0, bytes = 0;
    rl_outkey *k, *tmp;
    HASH_ITER(hh, s->outkeys, k, tmp) {
        k->push_n = 0;
        if (!k->n) continue;
        if (k->full_since && now < k->retry_at) {
            if (k->retry_at - now < wait) wait = k->retry_at - now;
            continue;
        }
        if (bytes >= RL_PUSH_BYTES) continue; /* in the next push */
        for (rl_entry *e = k->head; e && k->push_n < RL_PUSH_BATCH &&
                                    (!k->push_n || bytes + e->len <= RL_PUSH_BYTES);
             e = e->next) {
            bytes += e->len;
            k->push_n++;
        }
        nk++;
        ne += k->push_n;
    }
    if (!nk) {
        if (wait != UINT64_MAX && !s->push_timer_armed) {
            s->push_timer_armed = true;
            uv_timer_start(&s->push_timer, on_push_timer, wait, 0);
        }
        return;
    }
    size_t argc = 3 + nk + 2 * nk + 2 * ne + 2, nums = 2 * nk;
    const char **argv = cch__malloc(argc * sizeof *argv);
    size_t *alen = cch__malloc(argc * sizeof *alen);
    char *txt = cch__malloc((nums + ne + 1) * 32);
    push_batch *b = cch__malloc(sizeof *b + nk * (sizeof(rl_outkey *) + sizeof(size_t)));
    if (!argv || !alen || !txt || !b) {
        cch__free(argv);
        cch__free(alen);
        cch__free(txt);
        cch__free(b);
        RL_COUNT(l, errors, 1);
        if (!s->push_timer_armed) { /* out of memory: try again later */
            s->push_timer_armed = true;
            uv_timer_start(&s->push_timer, on_push_timer, 10, 0);
        }
        return;
    }
    b->s = s;
    b->nk = nk;
    b->keys = (rl_outkey **)(b + 1);
    b->counts = (size_t *)(b->keys + nk);
    char expiry[16], cutoff[32];
    snprintf(expiry, sizeof expiry, "%u", l->expiry_s);
    rl_fmt_cutoff(cutoff, sizeof cutoff, rl_now_us(&l->last_us), l->expiry_s);
    argv[0] = "EVAL";
    alen[0] = 4;
    argv[1] = push_script;
    alen[1] = sizeof push_script - 1;
    char *numkeys = txt + (nums + ne) * 32;
    argv[2] = numkeys;
    alen[2] = (size_t)snprintf(numkeys, 32, "%zu", nk);
    size_t ki = 0, a = 3 + nk + 2 * nk;
    char *t = txt;
    HASH_ITER(hh, s->outkeys, k, tmp) {
        if (!k->push_n) continue;
        size_t n = k->push_n;
        b->keys[ki] = k;
        b->counts[ki] = n;
        argv[3 + ki] = k->key;
        alen[3 + ki] = k->klen;
        argv[3 + nk + 2 * ki] = t;
        alen[3 + nk + 2 * ki] = (size_t)snprintf(t, 32, "%zu", k->cap);
        t += 32;
        argv[3 + nk + 2 * ki + 1] = t;
        alen[3 + nk + 2 * ki + 1] = (size_t)snprintf(t, 32, "%zu", n);
        t += 32;
        rl_entry *e = k->head;
        for (size_t j = 0; j < n; j++, e = e->next) {
            argv[a] = t;
            alen[a++] = (size_t)rl_fmt_score(t, 32, e->op->now_us);
            t += 32;
            argv[a] = e->data;
            alen[a++] = e->len;
        }
        ki++;
    }
    argv[a] = expiry;
    alen[a++] = strlen(expiry);
    argv[a] = cutoff;
    alen[a++] = strlen(cutoff);
    s->push_busy = true;
    rl_command(ac, cb_push, b, (int)argc, argv, alen); /* on failure cb_push drops them */
    cch__free(argv);
    cch__free(alen);
    cch__free(txt);
}

/* Queues the entry `b` (its rl_entry head reserved by group_fanout) for key `key`. */
static bool outbox_add(rl_shard *s, const char *key, size_t klen, size_t cap,
                       rl_buf *b, rl_op *op, size_t members) {
    rl_outkey *k;
    HASH_FIND(hh, s->outkeys, key, klen, k);
    if (!k) {
        k = cch__calloc(1, sizeof *k + klen + 1);
        if (!k) return false;
        memcpy(k->key, key, klen);
        k->klen = klen;
        HASH_ADD_KEYPTR(hh, s->outkeys, k->key, k->klen, k);
        if (!k->hh.tbl) {
            cch__free(k);
            return false;
        }
    }
    k->cap = cap;
    rl_entry *e = (rl_entry *)(void *)b->p;
    b->p = NULL;
    e->next = NULL;
    e->op = op;
    e->members = members;
    e->len = b->len - offsetof(rl_entry, data);
    if (k->tail) k->tail->next = e;
    else k->head = e;
    k->tail = e;
    k->n++;
    s->out_entries++;
    wait_add(s->l, e->len);
    op->pending++;
    op->remote_left++;
    return true;
}

void rl_core_cleanup(rl_layer *l) {
    push_tally t = {0, 0, 0, {0}};
    for (uint32_t i = 0; i < l->n_shards; i++) {
        rl_shard *s = &l->shards[i];
        rl_outkey *k, *tmp;
        HASH_ITER(hh, s->outkeys, k, tmp) {
            while (k->head) entry_finish(s, k, &t, &t.dropped);
            outkey_free(s, k);
        }
    }
    push_tally_done(l, &t);
    local_run(l); /* stopping: releases them without delivering */
}

/* Phase 2 of a group_send: the members are known. They are bucketed by queue key once
 * per ZRANGE reply (a fanout plan), which the consecutive group_sends it answered
 * share (fanout_emit). */
typedef struct bucket {
    const char *nl;         /* non-local name of the first member */
    size_t nl_len;
    uint32_t shard;
    size_t n;               /* members */
    size_t first;           /* where its members start in cn / cl */
    size_t cap;
    bool ours;
} bucket;

typedef struct fanout_plan {
    char *exclude;          /* the member left out (a copy; NULL: none) */
    size_t nm;              /* members in the reply (not left out, valid) */
    bucket *bk;
    size_t nb;
    const char **cn;        /* the members, bucket after bucket */
    size_t *cl;
    const char **on;        /* our members, in the reply's order */
    size_t *ol;
    size_t n_ours, ours_bytes;
    bool failed;            /* out of memory: every member dropped */
    bool shared;            /* may serve other group_sends leaving out `exclude` */
} fanout_plan;

static uint32_t name_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void plan_free(fanout_plan *p) {
    cch__free(p->exclude);
    cch__free(p->bk);
    cch__free(p->cn);
    cch__free(p->cl);
    cch__free(p->on);
    cch__free(p->ol);
    *p = (fanout_plan){0};
}

/* Buckets the members of `reply` but `exclude` by queue key (the non-local name),
 * with a hash table. */
static void plan_make(rl_layer *l, fanout_plan *p, const redisReply *reply,
                      const char *exclude) {
    size_t nm = reply->elements, one = nm ? nm : 1;
    size_t xlen = exclude ? strlen(exclude) : 0;
    size_t slots = 16;
    while (slots < 2 * nm) slots *= 2;
    *p = (fanout_plan){.exclude = exclude ? cch__strndup(exclude, xlen) : NULL};
    p->shared = !exclude || p->exclude;
    const char **names = cch__malloc(one * sizeof *names);
    size_t *lens = cch__malloc(one * sizeof *lens);
    size_t *bucket_of = cch__malloc(one * sizeof *bucket_of);
    size_t *table = cch__calloc(slots, sizeof *table); /* bucket + 1, 0: empty */
    p->bk = cch__malloc(one * sizeof *p->bk);
    p->cn = cch__malloc(one * sizeof *p->cn);
    p->cl = cch__malloc(one * sizeof *p->cl);
    p->on = cch__malloc(one * sizeof *p->on);
    p->ol = cch__malloc(one * sizeof *p->ol);
    if (!names || !lens || !bucket_of || !table || !p->bk || !p->cn || !p->cl || !p->on ||
        !p->ol) {
        p->failed = true;
        p->nm = nm;
        goto out;
    }
    size_t nb = 0, nn = 0;
    for (size_t i = 0; i < nm; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > CCH_NAME_MAX) continue;
        if (xlen && e->len == xlen && !memcmp(e->str, exclude, xlen)) continue;
        names[nn] = e->str;
        lens[nn] = e->len;
        size_t nl = rl_nonlocal_len(e->str, e->len);
        size_t h = name_hash(e->str, nl) & (slots - 1), b;
        while ((b = table[h]) &&
               !(p->bk[b - 1].nl_len == nl && !memcmp(p->bk[b - 1].nl, e->str, nl)))
            h = (h + 1) & (slots - 1);
        if (!b) {
            char first[CCH_NAME_BUF];
            memcpy(first, e->str, e->len);
            first[e->len] = '\0';
            p->bk[nb] = (bucket){e->str, nl, rl_hash(e->str, nl, l->n_shards), 0, 0,
                                 rl_capacity_for(l, first), false};
            table[h] = b = ++nb;
        }
        p->bk[b - 1].n++;
        bucket_of[nn++] = b - 1;
    }
    p->nm = nn;
    p->nb = nb;
    /* Is a bucket ours? Then its members are served in-process, not via Redis. */
    pthread_mutex_lock(&l->lock);
    for (size_t b = 0; b < nb; b++) {
        rl_name *q;
        HASH_FIND(hh, l->qkeys, p->bk[b].nl, p->bk[b].nl_len, q);
        p->bk[b].ours = q != NULL;
    }
    pthread_mutex_unlock(&l->lock);
    for (size_t b = 0, pos = 0; b < nb; b++) {
        p->bk[b].first = pos;
        pos += p->bk[b].n;
        p->bk[b].n = 0;
    }
    for (size_t i = 0; i < nn; i++) {
        bucket *b = &p->bk[bucket_of[i]];
        p->cn[b->first + b->n] = names[i];
        p->cl[b->first + b->n++] = lens[i];
        if (b->ours) {
            p->on[p->n_ours] = names[i];
            p->ol[p->n_ours++] = lens[i];
            p->ours_bytes += lens[i] + 1;
        }
    }
out:
    cch__free(names);
    cch__free(lens);
    cch__free(bucket_of);
    cch__free(table);
}

/* One group_send along plan p: one entry per other queue key (the message with the
 * list of its members), our own members served in-process. */
static void fanout_emit(rl_layer *l, rl_op *op, const fanout_plan *p) {
    if (p->failed) {
        RL_COUNT(l, dropped, p->nm);
        RL_COUNT(l, errors, 1);
        return;
    }
    bool *touched = cch__calloc(l->n_shards, sizeof *touched);
    bool full_key = false; /* one of the keys is full, or far behind */
    if (!touched) {
        RL_COUNT(l, dropped, p->nm);
        RL_COUNT(l, errors, 1);
        return;
    }
    for (size_t b = 0; b < p->nb; b++) {
        const bucket *bk = &p->bk[b];
        if (bk->ours) continue;
        char key[KEY_BUF];
        size_t klen = queue_key(l, bk->nl, bk->nl_len, key);
        rl_buf eb = {0};
        static const char head[offsetof(rl_entry, data)]; /* room for the rl_entry */
        bool ok = rl_buf_put(&eb, head, sizeof head) &&
                  rl_encode(&eb, RL_RANDOM_PREFIX, cch_msg_type(op->msg), op->body,
                            p->cn + bk->first, p->cl + bk->first, bk->n, true) &&
                  outbox_add(&l->shards[bk->shard], key, klen, bk->cap, &eb, op, bk->n);
        if (ok) {
            touched[bk->shard] = true;
            rl_outkey *k;
            HASH_FIND(hh, l->shards[bk->shard].outkeys, key, klen, k);
            if (k && (k->full_since || k->n > RL_PUSH_BATCH)) full_key = true;
        } else {
            RL_COUNT(l, dropped, bk->n);
            RL_COUNT(l, errors, 1);
        }
        rl_buf_free(&eb);
    }
    /* Our own members: now, unless earlier group_sends' members still wait or one of
     * this one's keys is full: then after them and after its entries are in. */
    if (p->n_ours && !(op->flags & RL_OPF_LOCAL_DONE)) {
        if (!l->local_head && !full_key) {
            rl_deliver_names(l, op->msg, p->on, p->ol, p->n_ours);
        } else {
            char *q = op->local_names = cch__malloc(p->ours_bytes);
            if (!q) {
                RL_COUNT(l, dropped, p->n_ours);
                RL_COUNT(l, errors, 1);
            } else {
                for (size_t i = 0; i < p->n_ours; i++) {
                    memcpy(q, p->on[i], p->ol[i]);
                    q[p->ol[i]] = '\0';
                    q += p->ol[i] + 1;
                }
                op->n_local = p->n_ours;
                op->pending++;
                op->local_next = NULL;
                if (l->local_tail) l->local_tail->local_next = op;
                else l->local_head = op;
                l->local_tail = op;
            }
        }
    }
    for (uint32_t sh = 0; sh < l->n_shards; sh++)
        if (touched[sh]) rl_core_push(l, &l->shards[sh]);
    cch__free(touched);
}

/* Whether plan p serves a group_send leaving out `exclude` too. */
static bool plan_fits(const fanout_plan *p, const char *exclude) {
    return p->shared && (exclude ? p->exclude && !strcmp(p->exclude, exclude) : !p->exclude);
}

static void cb_group_members(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    const redisReply *reply = r;
    bool ok = rl_reply_ok(l, reply, "group_send") && reply->type == REDIS_REPLY_ARRAY;
    fanout_plan plan = {0};
    bool planned = false;
    for (rl_op *op = pd, *next; op; op = next) {
        next = op->chain;
        op->chain = NULL;
        if (!reply) { /* the connection broke: nobody got it; at least serve our members */
            RL_COUNT(l, dropped, 1);
            if (!(op->flags & RL_OPF_LOCAL_DONE) && !l->stopping) {
                cch_group_send_result res;
                cch_layer_group_send(l->local, op->group, op->msg, op->exclude, &res);
                op->flags |= RL_OPF_LOCAL_DONE;
            }
        }
        if (ok && !l->stopping) {
            if (!planned || !plan_fits(&plan, op->exclude)) {
                plan_free(&plan);
                plan_make(l, &plan, reply, op->exclude);
                planned = true;
            }
            fanout_emit(l, op, &plan);
        }
        rl_op_reply(l, op);
    }
    plan_free(&plan);
}

static void cb_members(redisAsyncContext *ac, void *r, void *pd) {
    static const char *const none[1] = {NULL};
    rl_layer *l = layer_of(ac);
    rl_op *op = pd;
    const redisReply *reply = r;
    if (!rl_reply_ok(l, reply, "group_members") || reply->type != REDIS_REPLY_ARRAY) {
        op->cb(op->cb_ud, reply ? CCH_EIO : CCH_ETRANSPORT, NULL, 0);
        rl_op_reply(l, op);
        return;
    }
    /* WITHSCORES: name, score, ...; a member older than group_expiry is not listed */
    double cutoff = (double)(op->now_us / 1000000u) - (double)l->group_expiry_s;
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i + 1 < reply->elements; i += 2)
        if (reply->element[i]->type == REDIS_REPLY_STRING) bytes += reply->element[i]->len + 1;
    char **names = cch__malloc(reply->elements / 2 * sizeof *names + bytes + 1);
    if (!names) {
        op->cb(op->cb_ud, CCH_ENOMEM, NULL, 0);
        rl_op_reply(l, op);
        return;
    }
    char *p = (char *)(names + reply->elements / 2);
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *e = reply->element[i], *sc = reply->element[i + 1];
        if (e->type != REDIS_REPLY_STRING || sc->type != REDIS_REPLY_STRING) continue;
        if (strtod(sc->str, NULL) <= cutoff) continue;
        names[n++] = p;
        memcpy(p, e->str, e->len);
        p[e->len] = '\0';
        p += e->len + 1;
    }
    op->cb(op->cb_ud, 0, n ? (const char *const *)names : none, n);
    cch__free(names);
    rl_op_reply(l, op);
}

static void cb_fetch(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    rl_op *op = pd;
    const redisReply *reply = r;
    if (rl_reply_ok(l, reply, "ZPOPMIN") && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements >= 2 && reply->element[0]->type == REDIS_REPLY_STRING) {
        char key[KEY_BUF];
        size_t klen = queue_key(l, op->channel, strlen(op->channel), key);
        deliver_member(l, key, klen, reply->element[0]->str, reply->element[0]->len,
                       op->channel);
    }
    rl_fetch_done(l, op->channel);
    rl_op_reply(l, op);
}

/* The op cannot be sent now: keep it for when the shard is back. */
static void not_now(rl_layer *l, rl_op *op) {
    rl_shard *s = &l->shards[op->shard];
    switch (op->kind) {
    case RL_OP_GROUP_ADD:
        if (op->flags & RL_OPF_OWNED) { /* re-added when the server is back */
            rl_op_done(l, op);
            return;
        }
        break;
    case RL_OP_GROUP_SEND:
        if (!(op->flags & RL_OPF_LOCAL_DONE)) { /* serve our members now */
            cch_group_send_result res;
            cch_layer_group_send(l->local, op->group, op->msg, op->exclude, &res);
            op->flags |= RL_OPF_LOCAL_DONE;
        }
        break;
    case RL_OP_MEMBERS:
        op->cb(op->cb_ud, CCH_ETRANSPORT, NULL, 0);
        rl_op_done(l, op);
        return;
    case RL_OP_FETCH:
        rl_fetch_done(l, op->channel);
        rl_op_done(l, op);
        return;
    default: break;
    }
    rl_pend(l, s, op);
}

void rl_core_dispatch(rl_layer *l, rl_op *op) {
    redisAsyncContext *ac = rl_cmd(l, op->shard);
    if (!ac) {
        for (rl_op *next; op; op = next) {
            next = op->chain;
            op->chain = NULL;
            not_now(l, op);
        }
        return;
    }
    char key[KEY_BUF], score[32], cutoff[32], ttl[16];
    size_t klen;
    switch (op->kind) {
    case RL_OP_SEND: dispatch_send(l, op, ac); return;
    case RL_OP_GROUP_ADD: {
        klen = group_key(l, op->group, key);
        rl_fmt_score(score, sizeof score, op->now_us);
        snprintf(ttl, sizeof ttl, "%u", l->group_expiry_s);
        const char *zadd[4] = {"ZADD", key, score, op->channel};
        size_t zadd_len[4] = {4, klen, strlen(score), strlen(op->channel)};
        const char *exp[3] = {"EXPIRE", key, ttl};
        size_t exp_len[3] = {6, klen, strlen(ttl)};
        op->pending = 2;
        rl_command(ac, cb_simple, op, 4, zadd, zadd_len);
        rl_command(ac, cb_simple, op, 3, exp, exp_len);
        return;
    }
    case RL_OP_GROUP_DISCARD: {
        klen = group_key(l, op->group, key);
        const char *zrem[3] = {"ZREM", key, op->channel};
        size_t zrem_len[3] = {4, klen, strlen(op->channel)};
        op->pending = 1;
        rl_command(ac, cb_simple, op, 3, zrem, zrem_len);
        return;
    }
    case RL_OP_GROUP_SEND: {
        klen = group_key(l, op->group, key);
        rl_fmt_cutoff(cutoff, sizeof cutoff, op->now_us, l->group_expiry_s);
        const char *trim[4] = {"ZREMRANGEBYSCORE", key, "0", cutoff};
        size_t trim_len[4] = {16, klen, 1, strlen(cutoff)};
        const char *range[4] = {"ZRANGE", key, "0", "-1"};
        size_t range_len[4] = {6, klen, 1, 2};
        op->pending = 2;
        for (rl_op *c = op->chain; c; c = c->chain) c->pending = 1;
        rl_command(ac, cb_group_trim, op, 4, trim, trim_len);
        rl_command(ac, cb_group_members, op, 4, range, range_len);
        return;
    }
    case RL_OP_MEMBERS: {
        klen = group_key(l, op->group, key);
        const char *range[5] = {"ZRANGE", key, "0", "-1", "WITHSCORES"};
        size_t range_len[5] = {6, klen, 1, 2, 10};
        op->pending = 1;
        rl_command(ac, cb_members, op, 5, range, range_len);
        return;
    }
    case RL_OP_FETCH: {
        klen = queue_key(l, op->channel, strlen(op->channel), key);
        const char *pop[3] = {"ZPOPMIN", key, "1"};
        size_t pop_len[3] = {7, klen, 1};
        op->pending = 1;
        rl_command(ac, cb_fetch, op, 3, pop, pop_len);
        return;
    }
    default: rl_op_done(l, op); return;
    }
}

/* ---- (re)adding our memberships ---------------------------------------------------------- */

typedef struct readd_group {
    char key[KEY_BUF];
    size_t klen;
    rl_buf names; /* NUL-separated */
    size_t n;
} readd_group;

typedef struct collect_ctx {
    rl_layer *l;
    const char *group;
    readd_group *g;
} collect_ctx;

static void collect(void *ud, int status, const char *const *names, size_t n) {
    collect_ctx *c = ud;
    if (status < 0) return;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (rl_owned_locked(c->l, names[i], len)) {
            if (rl_buf_put(&c->g->names, names[i], len + 1)) c->g->n++;
        } else { /* released without leaving: forget it here (Redis expires it) */
            cch_layer_group_discard(c->l->local, c->group, names[i]);
        }
    }
}

void rl_core_readd(rl_layer *l, rl_shard *s) {
    if (!rl_cmd(l, s->idx)) return;
    uint64_t now = rl_now_us(&l->last_us);
    readd_group *gs = NULL;
    size_t ng = 0, capg = 0;
    pthread_mutex_lock(&l->lock);
    rl_name *g, *tmp;
    HASH_ITER(hh, l->groups, g, tmp) {
        if (g->shard != s->idx) continue;
        if (ng == capg) {
            size_t nc = capg ? capg * 2 : 8;
            readd_group *ngs = cch__realloc(gs, nc * sizeof *ngs);
            if (!ngs) break;
            gs = ngs;
            capg = nc;
        }
        readd_group *rg = &gs[ng];
        memset(rg, 0, sizeof *rg);
        collect_ctx c = {l, g->name, rg};
        cch_layer_group_members(l->local, g->name, collect, &c);
        if (rg->n == 0) { /* no local member left: forget the group */
            rl_buf_free(&rg->names);
            HASH_DELETE(hh, l->groups, g);
            cch__free(g);
            continue;
        }
        rg->klen = group_key(l, g->name, rg->key);
        ng++;
    }
    pthread_mutex_unlock(&l->lock);
    if (!ng) {
        cch__free(gs);
        return;
    }
    char score[32], ttl[16];
    rl_fmt_score(score, sizeof score, now);
    snprintf(ttl, sizeof ttl, "%u", l->group_expiry_s);
    rl_op *op = rl_op_new(RL_OP_MAINT, 0);
    redisAsyncContext *ac = rl_cmd(l, s->idx);
    if (op) {
        pthread_mutex_lock(&l->lock);
        l->busy++;
        pthread_mutex_unlock(&l->lock);
        op->pending = 1; /* released after the loop */
    }
    size_t members = 0;
    for (size_t i = 0; i < ng; i++) {
        readd_group *rg = &gs[i];
        size_t argc = 2 + 2 * rg->n;
        const char **argv = cch__malloc(argc * sizeof *argv);
        size_t *alen = cch__malloc(argc * sizeof *alen);
        if (op && argv && alen && !rg->names.oom) {
            argv[0] = "ZADD";
            alen[0] = 4;
            argv[1] = rg->key;
            alen[1] = rg->klen;
            const char *p = rg->names.p;
            for (size_t j = 0; j < rg->n; j++) {
                size_t len = strlen(p);
                argv[2 + 2 * j] = score;
                alen[2 + 2 * j] = strlen(score);
                argv[3 + 2 * j] = p;
                alen[3 + 2 * j] = len;
                p += len + 1;
            }
            const char *exp[3] = {"EXPIRE", rg->key, ttl};
            size_t exp_len[3] = {6, rg->klen, strlen(ttl)};
            op->pending += 2;
            rl_command(ac, cb_simple, op, (int)argc, argv, alen);
            rl_command(ac, cb_simple, op, 3, exp, exp_len);
            members += rg->n;
        } else {
            RL_COUNT(l, errors, 1);
        }
        cch__free(argv);
        cch__free(alen);
        rl_buf_free(&rg->names);
    }
    cch__free(gs);
    if (op) rl_op_reply(l, op);
    cch_layer_log(&l->base, CCH_LOG_DEBUG, "redis: re-added %zu membership(s) in %zu group(s) on %s",
                  members, ng, s->label);
}

void rl_core_shard_up(rl_layer *l, rl_shard *s) {
    /* replay what waited (in order), then re-add our memberships: the re-add reflects
     * the current state, so it must come after any queued group_discard */
    rl_op *list = s->pend_head;
    s->pend_head = s->pend_tail = NULL;
    while (list) {
        rl_op *op = list;
        list = op->next;
        op->next = NULL;
        rl_core_dispatch(l, op);
    }
    rl_core_readd(l, s);
    rl_core_push(l, s);     /* group_send entries that waited */
    rl_core_pop_kick(l, s); /* CLIENT UNBLOCK needs the command connection */
}
