/* lib/redis/redis_uv.c - our libuv adapter for hiredis's async event hooks.
 *
 * hiredis lets any loop drive an async context through five hooks (add/del read,
 * add/del write, cleanup). We implement them on a uv_poll_t rather than use the
 * adapter Debian's hiredis 0.14 ships (adapters/libuv.h), because the Redis layer's
 * fault handling needs what that one does not do: when libuv reports a socket error
 * (a server killed with data in flight gives POLLERR; libuv then stops the watcher
 * and passes a negative status) it returns without telling hiredis, and the
 * connection hangs forever. Here hiredis is told to read/write, runs into the error
 * and disconnects. A failed uv_poll_init also frees what it allocated. */
#include "redis_internal.h"

typedef struct rl_uv_events {
    redisAsyncContext *ac;
    uv_poll_t handle;
    int events;
} rl_uv_events;

static void on_poll(uv_poll_t *h, int status, int events) {
    rl_uv_events *p = h->data;
    int ev = status < 0 ? p->events : events; /* an error: let hiredis run into it */
    rl_layer *l = p->ac ? ((rl_shard *)p->ac->data)->l : NULL;
    if (l) rl_batch_begin(l); /* wake receivers once, after all that was read */
    if (p->ac && (ev & UV_READABLE)) redisAsyncHandleRead(p->ac);
    if (p->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
    if (l) rl_batch_end(l);
}

static void update(rl_uv_events *p, int add, int del) {
    p->events = (p->events | add) & ~del;
    if (p->events) uv_poll_start(&p->handle, p->events, on_poll);
    else uv_poll_stop(&p->handle);
}

static void add_read(void *pd) { update(pd, UV_READABLE, 0); }
static void del_read(void *pd) { update(pd, 0, UV_READABLE); }
static void add_write(void *pd) { update(pd, UV_WRITABLE, 0); }
static void del_write(void *pd) { update(pd, 0, UV_WRITABLE); }

static void on_close(uv_handle_t *h) { cch__free(h->data); }

static void cleanup(void *pd) {
    rl_uv_events *p = pd;
    p->ac = NULL; /* the context is being freed */
    uv_close((uv_handle_t *)&p->handle, on_close);
}

int rl_uv_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data) return REDIS_ERR;
    rl_uv_events *p = cch__calloc(1, sizeof *p);
    if (!p) return REDIS_ERR;
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        cch__free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->handle.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}
