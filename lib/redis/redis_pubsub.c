/* lib/redis/redis_pubsub.c - the channels_redis.pubsub format, in the I/O thread:
 * PUBLISH for send and group_send, and on each server's subscriber connection a
 * PSUBSCRIBE "<our non-local name>*" (every channel of this process, one pattern per
 * prefix) plus a SUBSCRIBE "<prefix>__group__<group>" per group with local members.
 * Payloads are a bare msgpack map: no random prefix, no "__asgi_channel__".
 *
 * Nothing in Redis says who is in a group: a process subscribes once per group and
 * hands each publication to its own members (the in-memory layer's group_send).
 * Our own group_sends are handed to our members at once (with `exclude` applied),
 * not when their echo comes back: the echo would be missed if it raced our SUBSCRIBE.
 * Each is remembered (group, payload hash) for a few seconds and its echo dropped; a
 * byte-identical publication from another process in that window is taken for the
 * echo, and our members then get our copy of the same content instead. */
#include "redis_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define ECHO_TTL_MS 10000
#define ECHO_MAX 1024

typedef struct rl_echo {
    struct rl_echo *next;
    uint64_t hash;
    uint64_t at_ms;
    char group[CCH_NAME_BUF];
} rl_echo;

#define PUB_BUF (CCH_REDIS_PREFIX_MAX + 16 + CCH_NAME_BUF)

static uint64_t fnv64(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h ^ n;
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t group_channel(const rl_layer *l, const char *group, char *out) {
    return (size_t)snprintf(out, PUB_BUF, "%s__group__%s", l->prefix, group);
}

/* The list is in time order: drop from the front what is too old or too many. */
static void echo_prune(rl_layer *l, uint64_t now) {
    while (l->echoes && (now - l->echoes->at_ms > ECHO_TTL_MS || l->n_echoes > ECHO_MAX)) {
        rl_echo *e = l->echoes;
        l->echoes = e->next;
        if (!l->echoes) l->echo_tail = NULL;
        l->n_echoes--;
        cch__free(e);
    }
}

static void echo_push(rl_layer *l, rl_echo *e) {
    e->next = NULL;
    if (l->echo_tail) l->echo_tail->next = e;
    else l->echoes = e;
    l->echo_tail = e;
    l->n_echoes++;
    echo_prune(l, e->at_ms);
}

/* Takes out the first echo of (group, h); whether there was one. */
static bool echo_take(rl_layer *l, const char *group, uint64_t h) {
    rl_echo *prev = NULL;
    for (rl_echo *e = l->echoes; e; prev = e, e = e->next) {
        if (e->hash != h || strcmp(e->group, group)) continue;
        if (prev) prev->next = e->next;
        else l->echoes = e->next;
        if (l->echo_tail == e) l->echo_tail = prev;
        l->n_echoes--;
        cch__free(e);
        return true;
    }
    return false;
}

/* Publishes wait while a SUBSCRIBE of ours is unconfirmed, so that whoever sees a
 * message we publish after a group_add (the chat's join notice, say) can count on our
 * subscription: channels_redis's group_add returns only once subscribed, and a Django
 * consumer answering our notice at once must reach us (pub/sub keeps nothing for a
 * subscriber that is not there yet). The wait ends with the confirmations, or when the
 * subscriber connection drops (nothing is pending then). */
static bool subs_settling(const rl_layer *l) {
    for (uint32_t i = 0; i < l->n_shards; i++)
        if (l->shards[i].sub_pending) return true;
    return false;
}

void rl_pubsub_subs_settled(rl_layer *l) {
    if (subs_settling(l)) return;
    rl_op *op = l->pub_wait;
    l->pub_wait = l->pub_wait_tail = NULL;
    while (op) { /* in order; none can wait again: nothing is pending now */
        rl_op *next = op->next;
        op->next = NULL;
        rl_pubsub_dispatch(l, op);
        op = next;
    }
}

void rl_pubsub_cleanup(rl_layer *l) {
    while (l->pub_wait) { /* stopping: what waited is not sent */
        rl_op *op = l->pub_wait;
        l->pub_wait = op->next;
        RL_COUNT(l, dropped, 1);
        rl_op_done(l, op);
    }
    l->pub_wait_tail = NULL;
    while (l->echoes) {
        rl_echo *e = l->echoes;
        l->echoes = e->next;
        cch__free(e);
    }
    l->echo_tail = NULL;
    l->n_echoes = 0;
}

static rl_layer *layer_of(redisAsyncContext *ac) { return ((rl_shard *)ac->data)->l; }

static void cb_publish(redisAsyncContext *ac, void *r, void *pd) {
    rl_layer *l = layer_of(ac);
    const redisReply *reply = r;
    if (!reply) RL_COUNT(l, dropped, 1);
    else if (rl_reply_ok(l, reply, "PUBLISH")) RL_COUNT(l, sent, 1);
    rl_op_reply(l, pd);
}

static void set_ready(rl_layer *l, rl_shard *s) {
    bool ready = s->pop.up && s->sub_pending == 0;
    if (atomic_exchange(&s->pop_ready, ready) != ready && ready) {
        pthread_mutex_lock(&l->lock);
        if (l->sync_waiters) pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
    }
}

static void on_publication(rl_layer *l, const char *chan, size_t clen, const char *data,
                           size_t len) {
    char name[PUB_BUF];
    if (clen >= sizeof name) return;
    memcpy(name, chan, clen);
    name[clen] = '\0';
    rl_incoming in;
    char err[160];
    int rc = rl_decode(&in, data, len, err, sizeof err);
    if (rc < 0) {
        RL_COUNT(l, errors, 1);
        cch_layer_log(&l->base, CCH_LOG_WARN, "redis: dropped a message from %s: %s", name, err);
        rl_incoming_done(&in);
        return;
    }
    size_t gp = l->prefix_len + 9; /* "<prefix>__group__" */
    if (clen > gp && !memcmp(name, l->prefix, l->prefix_len) &&
        !memcmp(name + l->prefix_len, "__group__", 9)) {
        const char *group = name + gp;
        echo_prune(l, mono_ms());
        cch_group_send_result res;
        if (!echo_take(l, group, fnv64(data, len))) /* else ours: our members have it */
            cch_layer_group_send(l->local, group, in.msg, NULL, &res);
    } else {
        pthread_mutex_lock(&l->lock);
        rl_name *f;
        HASH_FIND(hh, l->fetching, name, clen, f);
        pthread_mutex_unlock(&l->lock);
        if (f) { /* a plain channel someone receives on */
            if (cch_layer_send(l->local, name, in.msg) < 0) RL_COUNT(l, dropped, 1);
        } else {
            rl_deliver_local(l, name, clen, in.msg);
        }
    }
    rl_incoming_done(&in);
}

/* Every reply on the subscriber connection: confirmations and publications. */
static void cb_sub(redisAsyncContext *ac, void *r, void *pd) {
    rl_shard *s = pd;
    rl_layer *l = s->l;
    const redisReply *reply = r;
    (void)ac;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (!strcmp(kind, "message") && reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[2]->type == REDIS_REPLY_STRING) {
        on_publication(l, reply->element[1]->str, reply->element[1]->len, reply->element[2]->str,
                       reply->element[2]->len);
    } else if (!strcmp(kind, "pmessage") && reply->elements >= 4 &&
               reply->element[2]->type == REDIS_REPLY_STRING &&
               reply->element[3]->type == REDIS_REPLY_STRING) {
        on_publication(l, reply->element[2]->str, reply->element[2]->len, reply->element[3]->str,
                       reply->element[3]->len);
    } else if (!strcmp(kind, "subscribe") || !strcmp(kind, "psubscribe") ||
               !strcmp(kind, "unsubscribe") || !strcmp(kind, "punsubscribe")) {
        if (s->sub_pending) s->sub_pending--;
        set_ready(l, s);
        if (!s->sub_pending && l->pub_wait) rl_pubsub_subs_settled(l);
    }
}

static void sub_cmd(rl_layer *l, rl_shard *s, const char *cmd, const char *name, size_t len) {
    if (!s->pop.up || l->stopping) return;
    const char *argv[2] = {cmd, name};
    size_t lens[2] = {strlen(cmd), len};
    if (redisAsyncCommandArgv(s->pop.ac, cb_sub, s, 2, argv, lens) == REDIS_OK) {
        s->sub_pending++;
        atomic_store(&s->pop_ready, false);
    }
}

/* (Re)subscribes: our channel patterns, and with `all` our groups and plain channels. */
static void subscribe_all(rl_layer *l, rl_shard *s, bool all) {
    rl_buf pats = {0}, chans = {0}; /* NUL-separated */
    char buf[PUB_BUF];
    pthread_mutex_lock(&l->lock);
    rl_name *q, *tmp;
    HASH_ITER(hh, l->qkeys, q, tmp) {
        rl_buf_put(&pats, q->name, q->len);
        rl_buf_put(&pats, "*", 2);
    }
    if (all) {
        HASH_ITER(hh, l->groups, q, tmp) {
            if (q->shard != s->idx) continue;
            size_t n = group_channel(l, q->name, buf);
            rl_buf_put(&chans, buf, n + 1);
        }
        HASH_ITER(hh, l->fetching, q, tmp) {
            if (q->shard != s->idx) continue;
            rl_buf_put(&chans, q->name, q->len + 1);
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (pats.oom || chans.oom) {
        RL_COUNT(l, errors, 1);
        rl_io_retry_later(l, s);
    }
    for (size_t off = 0; !pats.oom && off < pats.len;) {
        size_t n = strlen(pats.p + off);
        sub_cmd(l, s, "PSUBSCRIBE", pats.p + off, n);
        off += n + 1;
    }
    for (size_t off = 0; !chans.oom && off < chans.len;) {
        size_t n = strlen(chans.p + off);
        sub_cmd(l, s, "SUBSCRIBE", chans.p + off, n);
        off += n + 1;
    }
    rl_buf_free(&pats);
    rl_buf_free(&chans);
    set_ready(l, s);
}

void rl_pubsub_sub_up(rl_layer *l, rl_shard *s) {
    if (!s->pop.up) return;
    subscribe_all(l, s, !s->pop_subscribed);
    s->pop_subscribed = true;
}

static void count_members(void *ud, int status, const char *const *names, size_t n) {
    (void)names;
    if (status == 0) *(size_t *)ud = n;
}

void rl_pubsub_dispatch(rl_layer *l, rl_op *op) {
    rl_shard *s = &l->shards[op->shard];
    redisAsyncContext *ac = rl_cmd(l, op->shard);
    char buf[PUB_BUF];
    switch (op->kind) {
    case RL_OP_SEND:
    case RL_OP_GROUP_SEND: {
        if (l->pub_wait || subs_settling(l)) { /* after our SUBSCRIBEs, in order */
            op->next = NULL;
            if (l->pub_wait_tail) l->pub_wait_tail->next = op;
            else l->pub_wait = op;
            l->pub_wait_tail = op;
            return;
        }
        const char *chan = op->channel;
        size_t clen;
        if (op->kind == RL_OP_GROUP_SEND) {
            clen = group_channel(l, op->group, buf);
            chan = buf;
            /* our members now (the others get it through Redis, or miss it when
             * Redis is away, as with PUBLISH) */
            cch_group_send_result res;
            cch_layer_group_send(l->local, op->group, op->msg, op->exclude, &res);
            pthread_mutex_lock(&l->lock);
            rl_name *g;
            HASH_FIND(hh, l->groups, op->group, strlen(op->group), g);
            pthread_mutex_unlock(&l->lock);
            rl_echo *e = ac && g ? cch__malloc(sizeof *e) : NULL; /* subscribed: an echo */
            if (e) {
                e->hash = fnv64(op->blob, op->blob_len);
                e->at_ms = mono_ms();
                snprintf(e->group, sizeof e->group, "%s", op->group);
                echo_push(l, e);
            }
        } else {
            clen = strlen(chan);
        }
        if (!ac) {
            RL_COUNT(l, dropped, 1);
            rl_op_done(l, op);
            return;
        }
        const char *argv[3] = {"PUBLISH", chan, op->blob};
        size_t lens[3] = {7, clen, op->blob_len};
        op->pending = 1;
        rl_command(ac, cb_publish, op, 3, argv, lens);
        return;
    }
    case RL_OP_SUBSCRIBE: { /* a group got a local member */
        size_t n = group_channel(l, op->group, buf);
        sub_cmd(l, s, "SUBSCRIBE", buf, n);
        break;
    }
    case RL_OP_FETCH: /* a plain channel to receive on */
        sub_cmd(l, s, "SUBSCRIBE", op->channel, strlen(op->channel));
        break;
    case RL_OP_UNSUB_CHECK: { /* a local member left: the last one? */
        bool gone = false;
        pthread_mutex_lock(&l->lock);
        rl_name *g;
        HASH_FIND(hh, l->groups, op->group, strlen(op->group), g);
        if (g) {
            size_t count = 0;
            cch_layer_group_members(l->local, op->group, count_members, &count);
            if (count == 0) {
                HASH_DELETE(hh, l->groups, g);
                cch__free(g);
                gone = true;
            }
        }
        pthread_mutex_unlock(&l->lock);
        if (gone) {
            size_t n = group_channel(l, op->group, buf);
            sub_cmd(l, s, "UNSUBSCRIBE", buf, n);
        }
        break;
    }
    default: break;
    }
    rl_op_done(l, op);
}
