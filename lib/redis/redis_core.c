/* lib/redis/redis_core.c - the channels_redis.core format, in the I/O thread: the
 * commands of send, group_add, group_discard, group_send (with its fan-out of one
 * queue entry per process and the capacity script), presence, the pop loop on this
 * process's queue keys, and re-adding our memberships.
 *
 * Keys (see docs/redis.md): queue "<prefix><non-local name>" (a sorted set of
 * 12 random bytes + msgpack, scored by send time), group "<prefix>:group:<group>"
 * (a sorted set of channel names, scored by group_add time). */
#include "redis_internal.h"

#include <stdio.h>
#include <string.h>

/* channels_redis's group_send script, except that it returns the indices of the
 * keys that were full instead of their count (the data it writes is the same). */
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

/* One shard's capacity script of a group_send: `counts[i]` members in key i. */
typedef struct gs_batch {
    rl_op *op;
    size_t nkeys;
    size_t counts[];
} gs_batch;

static void cb_group_eval(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    gs_batch *b = pd;
    const redisReply *reply = r;
    size_t total = 0, full = 0;
    for (size_t i = 0; i < b->nkeys; i++) total += b->counts[i];
    if (!reply) {
        RL_COUNT(l, dropped, total);
        RL_COUNT(l, errors, 1);
    } else if (rl_reply_ok(l, reply, "group_send") && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type == REDIS_REPLY_INTEGER && e->integer >= 1 &&
                (size_t)e->integer <= b->nkeys)
                full += b->counts[e->integer - 1];
        }
        pthread_mutex_lock(&l->lock);
        l->st.full += full;
        l->st.sent += total - full;
        pthread_mutex_unlock(&l->lock);
        if (full)
            cch_layer_log(&l->base, CCH_LOG_INFO,
                          "redis: group_send to %s: %zu of %zu channels over capacity",
                          b->op->group, full, total);
    } else {
        RL_COUNT(l, dropped, total);
    }
    rl_op *op = b->op;
    cch__free(b);
    rl_op_reply(l, op);
}

/* ---- delivery ------------------------------------------------------------------------- */

void rl_deliver_local(rl_layer *l, const char *name, size_t len, cch_msg *m) {
    char buf[CCH_NAME_BUF];
    if (len > CCH_NAME_MAX) {
        RL_COUNT(l, dropped, 1);
        return;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    pthread_mutex_lock(&l->lock);
    bool owned = rl_owned_locked(l, buf, len);
    int rc = owned ? cch_layer_send(l->local, buf, m) : 0;
    if (!owned || (rc < 0 && rc != CCH_ECHANFULL)) l->st.dropped++;
    pthread_mutex_unlock(&l->lock);
    if (!owned)
        cch_layer_log(&l->base, CCH_LOG_DEBUG, "redis: message for %s, which is gone", buf);
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
        for (uint32_t i = 0; i < in.chan->via.array.size; i++) {
            const msgpack_object *o = &in.chan->via.array.ptr[i];
            rl_deliver_local(l, o->via.str.ptr, o->via.str.size, in.msg);
        }
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
}

static void cb_unblock(redisAsyncContext *ac, void *r, void *pd) {
    (void)ac;
    (void)r;
    (void)pd;
}

void rl_core_pop_kick(rl_layer *l, rl_shard *s) {
    if (l->stopping || !s->pop.up) return;
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

/* Phase 2 of a group_send: the members are known. */
typedef struct bucket {
    const char *nl;         /* non-local name of the first member */
    size_t nl_len;
    uint32_t shard;
    size_t first, n;        /* members: idx[first .. first+n) */
    size_t cap;
} bucket;

static void group_fanout(rl_layer *l, rl_op *op, const redisReply *reply) {
    size_t nm = reply->elements;
    size_t xlen = op->exclude ? strlen(op->exclude) : 0;
    const char **names = cch__malloc((nm ? nm : 1) * sizeof *names);
    size_t *lens = cch__malloc((nm ? nm : 1) * sizeof *lens);
    bucket *bk = cch__malloc((nm ? nm : 1) * sizeof *bk);
    size_t *order = cch__malloc((nm ? nm : 1) * sizeof *order);
    if (!names || !lens || !bk || !order) {
        RL_COUNT(l, dropped, nm);
        RL_COUNT(l, errors, 1);
        goto out;
    }
    /* Bucket the members by queue key (the non-local name); ours are served here. */
    size_t nb = 0, nn = 0;
    for (size_t i = 0; i < nm; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > CCH_NAME_MAX) continue;
        if (xlen && e->len == xlen && !memcmp(e->str, op->exclude, xlen)) continue;
        names[nn] = e->str;
        lens[nn] = e->len;
        nn++;
    }
    size_t *bucket_of = order; /* member -> bucket */
    for (size_t i = 0; i < nn; i++) {
        size_t nl = rl_nonlocal_len(names[i], lens[i]);
        size_t b = 0;
        while (b < nb && !(bk[b].nl_len == nl && !memcmp(bk[b].nl, names[i], nl))) b++;
        if (b == nb) {
            char first[CCH_NAME_BUF];
            memcpy(first, names[i], lens[i]);
            first[lens[i]] = '\0';
            bk[nb] = (bucket){names[i], nl, rl_hash(names[i], nl, l->n_shards), 0, 0,
                              rl_capacity_for(l, first)};
            nb++;
        }
        bk[b].n++;
        bucket_of[i] = b;
    }
    /* Is a bucket ours? Then its members are delivered in-process, not via Redis. */
    bool *ours = cch__calloc(nb ? nb : 1, sizeof *ours);
    if (!ours) {
        RL_COUNT(l, dropped, nn);
        RL_COUNT(l, errors, 1);
        goto out;
    }
    pthread_mutex_lock(&l->lock);
    for (size_t b = 0; b < nb; b++) {
        rl_name *q;
        HASH_FIND(hh, l->qkeys, bk[b].nl, bk[b].nl_len, q);
        ours[b] = q != NULL;
    }
    pthread_mutex_unlock(&l->lock);
    if (!(op->flags & RL_OPF_LOCAL_DONE))
        for (size_t i = 0; i < nn; i++)
            if (ours[bucket_of[i]]) rl_deliver_local(l, names[i], lens[i], op->msg);
    /* Group the other buckets' members contiguously: idx sorted by bucket. */
    size_t *idx = cch__malloc((nn ? nn : 1) * sizeof *idx);
    if (!idx) {
        cch__free(ours);
        RL_COUNT(l, dropped, nn);
        RL_COUNT(l, errors, 1);
        goto out;
    }
    size_t pos = 0;
    for (size_t b = 0; b < nb; b++) {
        bk[b].first = pos;
        pos += bk[b].n;
        bk[b].n = 0;
    }
    for (size_t i = 0; i < nn; i++) {
        bucket *b = &bk[bucket_of[i]];
        idx[b->first + b->n++] = i;
    }
    /* Per shard: trim every key, then one EVAL of the capacity script. */
    char cutoff[32], score[32], expiry[16];
    rl_fmt_cutoff(cutoff, sizeof cutoff, op->now_us, l->expiry_s);
    rl_fmt_score(score, sizeof score, op->now_us);
    snprintf(expiry, sizeof expiry, "%u", l->expiry_s);
    const char **nm_ptr = cch__malloc((nn ? nn : 1) * sizeof *nm_ptr);
    for (uint32_t sh = 0; sh < l->n_shards; sh++) {
        size_t K = 0, members = 0;
        for (size_t b = 0; b < nb; b++)
            if (!ours[b] && bk[b].shard == sh) K++, members += bk[b].n;
        if (!K) continue;
        redisAsyncContext *ac = rl_cmd(l, sh);
        if (!ac) {
            RL_COUNT(l, dropped, members);
            cch_layer_log(&l->base, CCH_LOG_DEBUG,
                          "redis: group_send to %s: %zu member(s) on a disconnected server",
                          op->group, members);
            continue;
        }
        size_t argc = 3 + 3 * K + 2;
        const char **argv = cch__malloc(argc * sizeof *argv);
        size_t *alen = cch__malloc(argc * sizeof *alen);
        char *keys = cch__malloc(K * KEY_BUF + K * 24);
        rl_buf *blobs = cch__calloc(K, sizeof *blobs);
        gs_batch *batch = cch__malloc(sizeof *batch + K * sizeof(size_t));
        bool ok = argv && alen && keys && blobs && batch && nm_ptr;
        size_t k = 0;
        char numkeys[24];
        snprintf(numkeys, sizeof numkeys, "%zu", K);
        for (size_t b = 0; ok && b < nb; b++) {
            if (ours[b] || bk[b].shard != sh) continue;
            char *key = keys + k * KEY_BUF;
            char *cap = keys + K * KEY_BUF + k * 24;
            size_t klen = queue_key(l, bk[b].nl, bk[b].nl_len, key);
            snprintf(cap, 24, "%zu", bk[b].cap);
            size_t *ml = cch__malloc(bk[b].n * sizeof *ml);
            if (!ml) {
                ok = false;
                break;
            }
            for (size_t j = 0; j < bk[b].n; j++) {
                nm_ptr[j] = names[idx[bk[b].first + j]];
                ml[j] = lens[idx[bk[b].first + j]];
            }
            ok = rl_encode(&blobs[k], RL_RANDOM_PREFIX, cch_msg_type(op->msg), op->body,
                           nm_ptr, ml, bk[b].n, true);
            cch__free(ml);
            argv[3 + k] = key;
            alen[3 + k] = klen;
            argv[3 + K + k] = blobs[k].p;
            alen[3 + K + k] = blobs[k].len;
            argv[3 + 2 * K + k] = cap;
            alen[3 + 2 * K + k] = strlen(cap);
            batch->counts[k] = bk[b].n;
            k++;
        }
        if (ok) {
            argv[0] = "EVAL";
            alen[0] = 4;
            argv[1] = send_script;
            alen[1] = sizeof send_script - 1;
            argv[2] = numkeys;
            alen[2] = strlen(numkeys);
            argv[argc - 2] = score;
            alen[argc - 2] = strlen(score);
            argv[argc - 1] = expiry;
            alen[argc - 1] = strlen(expiry);
            batch->op = op;
            batch->nkeys = K;
            for (size_t j = 0; j < K; j++) {
                const char *trim[4] = {"ZREMRANGEBYSCORE", argv[3 + j], "0", cutoff};
                size_t trim_len[4] = {16, alen[3 + j], 1, strlen(cutoff)};
                op->pending++;
                rl_command(ac, cb_queue_trim, op, 4, trim, trim_len);
            }
            op->pending++;
            rl_command(ac, cb_group_eval, batch, (int)argc, argv, alen);
            batch = NULL;
        } else {
            RL_COUNT(l, dropped, members);
            RL_COUNT(l, errors, 1);
        }
        for (size_t j = 0; blobs && j < K; j++) rl_buf_free(&blobs[j]);
        cch__free(argv);
        cch__free(alen);
        cch__free(keys);
        cch__free(blobs);
        cch__free(batch);
    }
    cch__free(nm_ptr);
    cch__free(idx);
    cch__free(ours);
out:
    cch__free(names);
    cch__free(lens);
    cch__free(bk);
    cch__free(order);
}

static void cb_group_members(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    rl_op *op = pd;
    const redisReply *reply = r;
    if (!reply) { /* the connection broke: nobody got it; at least serve our members */
        RL_COUNT(l, dropped, 1);
        if (!(op->flags & RL_OPF_LOCAL_DONE) && !l->stopping) {
            cch_group_send_result res;
            cch_layer_group_send(l->local, op->group, op->msg, op->exclude, &res);
            op->flags |= RL_OPF_LOCAL_DONE;
        }
    }
    if (rl_reply_ok(l, reply, "group_send") && reply->type == REDIS_REPLY_ARRAY && !l->stopping)
        group_fanout(l, op, reply);
    rl_op_reply(l, op);
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
        not_now(l, op);
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
    rl_core_pop_kick(l, s); /* CLIENT UNBLOCK needs the command connection */
}
