/* lib/redis/redis_io.c - the Redis layer's I/O thread: its libuv loop, the two
 * hiredis connections per server (commands; blocking pop or subscriptions), the
 * reconnection backoff, the queue of operations from app threads, the bounded buffer
 * of operations waiting for a server that is down, the periodic refresh of group
 * memberships, and the orderly stop.
 *
 * App threads append operations to `in_head` under the lock and wake the loop with
 * uv_async_send; the loop takes the whole list at once and dispatches each operation
 * to the mode (redis_core.c or redis_pubsub.c). An operation is finished when its
 * last reply arrived (or it failed); `busy` counts the unfinished ones, which is what
 * cch_redis_layer_sync waits on and what max_pending bounds. */
#include "redis_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- operations -------------------------------------------------------------------- */

rl_op *rl_op_new(uint8_t kind, size_t extra) {
    rl_op *op = cch__calloc(1, sizeof *op + extra);
    if (op) op->kind = kind;
    return op;
}

const char *rl_op_str(rl_op *op, size_t *pos, const char *s, size_t n) {
    char *d = op->data + *pos;
    memcpy(d, s, n);
    d[n] = '\0';
    *pos += n + 1;
    return d;
}

void rl_op_free(rl_op *op) {
    if (!op) return;
    cch_msg_unref(op->msg);
    cch__free(op->local_names);
    cch__free(op);
}

void rl_count(rl_layer *l, uint64_t *field, uint64_t n) {
    if (!n) return;
    pthread_mutex_lock(&l->lock);
    *field += n;
    pthread_mutex_unlock(&l->lock);
}

int rl_submit(rl_layer *l, rl_op *op, bool limited) {
    pthread_mutex_lock(&l->lock);
    if (limited && l->counted >= l->max_pending) {
        uint64_t n = ++l->st.dropped;
        pthread_mutex_unlock(&l->lock);
        static const char *const what[] = {"send", "group_add", "group_discard", "group_send",
                                           "group_members", "receive", "", "", "", ""};
        if ((n & (n - 1)) == 0) /* the 1st, 2nd, 4th, 8th... */
            cch_layer_log(&l->base, CCH_LOG_WARN,
                          "redis: %zu operations already waiting for Redis: %s refused "
                          "(%llu so far)",
                          l->max_pending, what[op->kind], (unsigned long long)n);
        rl_op_free(op);
        return CCH_ELIMIT;
    }
    if (limited) {
        op->flags |= RL_OPF_COUNTED;
        l->counted++;
    }
    l->busy++;
    op->next = NULL;
    bool was_empty = l->in_head == NULL;
    if (l->in_tail) l->in_tail->next = op;
    else l->in_head = op;
    l->in_tail = op;
    pthread_mutex_unlock(&l->lock);
    if (was_empty) uv_async_send(&l->wake);
    return 0;
}

void rl_op_done(rl_layer *l, rl_op *op) {
    pthread_mutex_lock(&l->lock);
    l->busy--;
    if (op->flags & RL_OPF_COUNTED) l->counted--;
    if (l->busy == 0 && l->sync_waiters) pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    rl_op_free(op);
}

void rl_op_reply(rl_layer *l, rl_op *op) {
    if (op->pending && --op->pending) return;
    rl_op_done(l, op);
}

void rl_pend(rl_layer *l, rl_shard *s, rl_op *op) {
    (void)l;
    op->next = NULL;
    if (s->pend_tail) s->pend_tail->next = op;
    else s->pend_head = op;
    s->pend_tail = op;
}

redisAsyncContext *rl_cmd(rl_layer *l, uint32_t i) {
    rl_shard *s = &l->shards[i];
    return !l->stopping && s->cmd.up ? s->cmd.ac : NULL;
}

void rl_command(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, int argc,
                const char **argv, const size_t *argvlen) {
    if (!ac || redisAsyncCommandArgv(ac, fn, pd, argc, argv, argvlen) != REDIS_OK)
        fn(ac, NULL, pd);
}

bool rl_reply_ok(rl_layer *l, const redisReply *r, const char *what) {
    if (r && r->type != REDIS_REPLY_ERROR) return true;
    RL_COUNT(l, errors, 1);
    if (r && !l->stopping)
        cch_layer_log(&l->base, CCH_LOG_WARN, "redis: %s failed: %.200s", what, r->str);
    return false;
}

/* ---- connections ------------------------------------------------------------------- */

static void on_retry(uv_timer_t *t);

static void arm_retry(rl_layer *l, rl_shard *s) {
    if (l->stopping || s->retry_armed) return;
    s->retry_armed = true;
    uv_timer_start(&s->retry, on_retry, s->backoff_ms, 0);
    unsigned next = s->backoff_ms * 2;
    s->backoff_ms = next > l->reconnect_max_ms ? l->reconnect_max_ms : next;
}

void rl_io_retry_later(rl_layer *l, rl_shard *s) { arm_retry(l, s); }

static void conn_ready(rl_layer *l, rl_shard *s, bool pop);

/* AUTH and SELECT: the connection is usable once both answered OK. */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *pd) {
    rl_shard *s = pd;
    const redisReply *reply = r;
    if (!reply) return; /* the connection is going */
    bool pop = s->pop.ac == ac;
    rl_conn_state *cs = pop ? &s->pop : &s->cmd;
    if (reply->type == REDIS_REPLY_ERROR) {
        cch_layer_log(&s->l->base, CCH_LOG_ERROR, "redis: %s: %.200s", s->label, reply->str);
        RL_COUNT(s->l, errors, 1);
        redisAsyncDisconnect(ac); /* wrong password or db: retried with backoff */
        return;
    }
    if (cs->setup && --cs->setup == 0 && cs->connected) conn_ready(s->l, s, pop);
}

static void on_client_id(redisAsyncContext *ac, void *r, void *pd) {
    (void)ac;
    rl_shard *s = pd;
    const redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_INTEGER) s->pop_id = reply->integer;
}

static void on_connect(const redisAsyncContext *cac, int status);
static void on_disconnect(const redisAsyncContext *cac, int status);

static void conn_open(rl_layer *l, rl_shard *s, bool pop) {
    rl_conn_state *cs = pop ? &s->pop : &s->cmd;
    redisAsyncContext *ac = redisAsyncConnect(s->url.host, s->url.port);
    if (!ac || ac->err) {
        if (!s->down_logged || !pop)
            cch_layer_log(&l->base, s->down_logged ? CCH_LOG_DEBUG : CCH_LOG_WARN,
                          "redis: cannot connect to %s: %s", s->label,
                          ac ? ac->errstr : "out of memory");
        s->down_logged = true;
        if (ac) redisAsyncFree(ac);
        arm_retry(l, s);
        return;
    }
    ac->data = s;
    if (rl_uv_attach(ac, &l->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        arm_retry(l, s);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    cs->ac = ac;
    cs->up = cs->connected = false;
    cs->setup = (s->url.password ? 1u : 0u) + (s->url.db ? 1u : 0u);
    if (s->url.password) {
        const char *argv[3] = {"AUTH", s->url.user ? s->url.user : s->url.password,
                               s->url.password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(argv[2])};
        redisAsyncCommandArgv(ac, on_setup_reply, s, s->url.user ? 3 : 2, argv, lens);
    }
    if (s->url.db) {
        char db[16];
        snprintf(db, sizeof db, "%d", s->url.db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        redisAsyncCommandArgv(ac, on_setup_reply, s, 2, argv, lens);
    }
    if (pop && !l->pubsub) {
        s->pop_id = -1;
        redisAsyncCommand(ac, on_client_id, s, "CLIENT ID");
    }
}

static void on_retry(uv_timer_t *t) {
    rl_shard *s = t->data;
    rl_layer *l = s->l;
    s->retry_armed = false;
    if (l->stopping) return;
    if (!s->cmd.ac) conn_open(l, s, false);
    if (!s->pop.ac) conn_open(l, s, true);
    else if (s->pop.up && !l->pubsub) rl_core_pop_kick(l, s);
}

static void on_connect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rl_shard *s = ac->data;
    rl_layer *l = s->l;
    bool pop = s->pop.ac == ac;
    rl_conn_state *cs = pop ? &s->pop : &s->cmd;
    if (status != REDIS_OK) { /* hiredis frees the context after this call */
        cs->ac = NULL;
        cs->up = false;
        if (!pop)
            cch_layer_log(&l->base, s->down_logged ? CCH_LOG_DEBUG : CCH_LOG_WARN,
                          "redis: cannot connect to %s: %s", s->label, ac->errstr);
        s->down_logged = true;
        arm_retry(l, s);
        return;
    }
    cs->connected = true;
    if (cs->setup == 0) conn_ready(l, s, pop);
}

/* Connected, authenticated, on its db. */
static void conn_ready(rl_layer *l, rl_shard *s, bool pop) {
    rl_conn_state *cs = pop ? &s->pop : &s->cmd;
    cs->up = true;
    if (pop) {
        if (l->pubsub) rl_pubsub_sub_up(l, s);
        else rl_core_pop_up(l, s);
        return;
    }
    s->backoff_ms = l->reconnect_min_ms;
    cch_layer_log(&l->base, CCH_LOG_INFO, "redis: %s %s (shard %u of %u)",
                  s->ever_up ? "reconnected to" : "connected to", s->label, s->idx + 1,
                  l->n_shards);
    s->ever_up = true;
    s->down_logged = false;
    /* `up` changes under the lock: a group_add of ours either saw it down (and is in
     * the re-add's snapshot, taken later under the lock) or is queued. The busy token
     * keeps cch_redis_layer_sync waiting until the replay and re-add are issued. */
    pthread_mutex_lock(&l->lock);
    l->busy++;
    atomic_store(&s->up, true);
    pthread_mutex_unlock(&l->lock);
    if (!l->pubsub) rl_core_shard_up(l, s);
    pthread_mutex_lock(&l->lock);
    l->busy--;
    if (l->sync_waiters) pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rl_shard *s = ac->data;
    rl_layer *l = s->l;
    bool pop = s->pop.ac == ac;
    rl_conn_state *cs = pop ? &s->pop : &s->cmd;
    cs->ac = NULL;
    cs->up = cs->connected = false;
    cs->setup = 0;
    if (pop) {
        s->pop_busy = s->pop_blocking = false;
        rl_wake_release(l, s);
        s->sub_pending = 0;
        s->pop_subscribed = false;
        atomic_store(&s->pop_ready, false);
        if (l->pubsub && !l->stopping) rl_pubsub_subs_settled(l); /* none pending now */
        cch__free(s->drain_key);
        s->drain_key = NULL;
    } else {
        pthread_mutex_lock(&l->lock);
        atomic_store(&s->up, false);
        pthread_mutex_unlock(&l->lock);
    }
    if (l->stopping) return;
    if (!pop) {
        cch_layer_log(&l->base, CCH_LOG_WARN,
                      "redis: lost the connection to %s: %s; reconnecting", s->label,
                      status == REDIS_OK ? "closed" : ac->errstr);
        s->down_logged = true;
    }
    arm_retry(l, s);
}

/* ---- the loop ------------------------------------------------------------------------ */

static void finish_unsent(rl_layer *l, rl_op *op) {
    if (op->kind == RL_OP_MEMBERS && op->cb) op->cb(op->cb_ud, CCH_ECLOSED, NULL, 0);
    if (op->kind == RL_OP_SEND || op->kind == RL_OP_GROUP_SEND) RL_COUNT(l, dropped, 1);
    rl_op_done(l, op);
}

static void close_cb(uv_handle_t *h) { (void)h; }

static void shutdown_io(rl_layer *l) {
    for (uint32_t i = 0; i < l->n_shards; i++) {
        rl_shard *s = &l->shards[i];
        uv_timer_stop(&s->retry);
        uv_close((uv_handle_t *)&s->retry, close_cb);
        uv_timer_stop(&s->push_timer);
        uv_close((uv_handle_t *)&s->push_timer, close_cb);
        if (s->cmd.ac) redisAsyncFree(s->cmd.ac); /* pending callbacks get NULL */
        if (s->pop.ac) redisAsyncFree(s->pop.ac);
        s->cmd.ac = s->pop.ac = NULL;
        while (s->pend_head) {
            rl_op *op = s->pend_head;
            s->pend_head = op->next;
            finish_unsent(l, op);
        }
        s->pend_tail = NULL;
        cch__free(s->drain_key);
        s->drain_key = NULL;
    }
    for (;;) {
        pthread_mutex_lock(&l->lock);
        rl_op *list = l->in_head;
        l->in_head = l->in_tail = NULL;
        pthread_mutex_unlock(&l->lock);
        if (!list) break;
        while (list) {
            rl_op *op = list;
            list = op->next;
            finish_unsent(l, op);
        }
    }
    if (l->pubsub) rl_pubsub_cleanup(l);
    else rl_core_cleanup(l);
    rl_held_cleanup(l);
    rl_batch_end(l); /* wakeups still due */
    uv_timer_stop(&l->held_timer);
    uv_close((uv_handle_t *)&l->held_timer, close_cb);
    uv_timer_stop(&l->refresh);
    uv_close((uv_handle_t *)&l->refresh, close_cb);
    uv_close((uv_handle_t *)&l->wake, close_cb);
}

static void on_wake(uv_async_t *h) {
    rl_layer *l = h->data;
    pthread_mutex_lock(&l->lock);
    rl_op *list = l->in_head;
    l->in_head = l->in_tail = NULL;
    bool stopping = l->stopping, readd = l->readd_all, keys = l->keys_changed;
    l->readd_all = l->keys_changed = false;
    pthread_mutex_unlock(&l->lock);
    if (stopping) {
        /* put them back for shutdown_io to finish */
        pthread_mutex_lock(&l->lock);
        if (list) {
            rl_op *t = list;
            while (t->next) t = t->next;
            t->next = l->in_head;
            l->in_head = list;
            if (!l->in_tail) l->in_tail = t;
        }
        pthread_mutex_unlock(&l->lock);
        shutdown_io(l);
        return;
    }
    while (list) {
        rl_op *op = list;
        list = op->next;
        op->next = NULL;
        /* consecutive group_sends to one group read its members once */
        for (rl_op *t = op; !l->pubsub && op->kind == RL_OP_GROUP_SEND && list &&
                            list->kind == RL_OP_GROUP_SEND && list->shard == op->shard &&
                            !strcmp(list->group, op->group);) {
            t->chain = list;
            t = list;
            list = list->next;
            t->next = NULL;
        }
        if (l->pubsub) rl_pubsub_dispatch(l, op);
        else rl_core_dispatch(l, op);
    }
    for (uint32_t i = 0; i < l->n_shards; i++) {
        rl_shard *s = &l->shards[i];
        if (readd && !l->pubsub) rl_core_readd(l, s);
        if (keys) {
            if (l->pubsub) {
                if (s->pop.up) rl_pubsub_sub_up(l, s);
            } else {
                rl_core_pop_kick(l, s);
            }
        }
    }
}

static void on_refresh(uv_timer_t *t) {
    rl_layer *l = t->data;
    if (l->stopping || l->pubsub) return;
    for (uint32_t i = 0; i < l->n_shards; i++) rl_core_readd(l, &l->shards[i]);
}

static void *io_main(void *arg) {
    rl_layer *l = arg;
    atomic_store(&l->io_running, true);
    for (uint32_t i = 0; i < l->n_shards; i++) {
        conn_open(l, &l->shards[i], false);
        conn_open(l, &l->shards[i], true);
    }
    if (!l->pubsub) {
        uint64_t every = (uint64_t)l->group_expiry_s * 1000u / 3u;
        if (every < 500) every = 500;
        uv_timer_start(&l->refresh, on_refresh, every, every);
    }
    uv_run(&l->loop, UV_RUN_DEFAULT);
    uv_loop_close(&l->loop);
    atomic_store(&l->io_running, false);
    if (l->self_destroy) rl_free_all(l); /* the last reference was dropped here */
    return NULL;
}

int rl_io_start(rl_layer *l) {
    if (uv_loop_init(&l->loop) != 0) return CCH_EIO;
    l->wake.data = l;
    l->refresh.data = l;
    if (uv_async_init(&l->loop, &l->wake, on_wake) != 0) {
        uv_loop_close(&l->loop);
        return CCH_EIO;
    }
    uv_timer_init(&l->loop, &l->refresh);
    uv_timer_init(&l->loop, &l->held_timer);
    l->held_timer.data = l;
    for (uint32_t i = 0; i < l->n_shards; i++) {
        uv_timer_init(&l->loop, &l->shards[i].retry);
        l->shards[i].retry.data = &l->shards[i];
        uv_timer_init(&l->loop, &l->shards[i].push_timer);
        l->shards[i].push_timer.data = &l->shards[i];
    }
    if (pthread_create(&l->thread, NULL, io_main, l) != 0) {
        uv_close((uv_handle_t *)&l->wake, NULL);
        uv_close((uv_handle_t *)&l->refresh, NULL);
        uv_close((uv_handle_t *)&l->held_timer, NULL);
        for (uint32_t i = 0; i < l->n_shards; i++) {
            uv_close((uv_handle_t *)&l->shards[i].retry, NULL);
            uv_close((uv_handle_t *)&l->shards[i].push_timer, NULL);
        }
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        return CCH_EIO;
    }
    l->thread_started = true;
    return 0;
}

/* Stops the thread. Returns with everything stopped, except when called from the
 * I/O thread itself: then the thread frees the layer when its loop ends. */
void rl_io_stop(rl_layer *l) {
    pthread_mutex_lock(&l->lock);
    l->stopping = true;
    pthread_mutex_unlock(&l->lock);
    if (!l->thread_started) {
        rl_free_all(l);
        return;
    }
    if (pthread_equal(pthread_self(), l->thread)) {
        l->self_destroy = true;
        pthread_detach(l->thread);
        uv_async_send(&l->wake);
        return;
    }
    uv_async_send(&l->wake);
    pthread_join(l->thread, NULL);
    rl_free_all(l);
}
