/* lib/ws/output.c - the per-connection output queue: framing, sharing, writev.
 *
 * What we send is framed here: a server frame is a 2-10 byte header plus the
 * unmasked payload. A message body sent to many connections (send_body) is framed
 * once per server and attached to the message; every member's queue points at the
 * same bytes. The frame is pinned, not the message: queue items count themselves on
 * the frame with a plain counter (the frame belongs to this server's thread; each
 * server has its own, keyed by the server), and the frame holds one reference to the
 * message while any item points at it. So a fanout costs no atomic operation, no
 * allocation and no copy per member. Small frames (control frames, short messages,
 * wslay's pongs and closes) are packed into one small buffer at the tail of the queue,
 * from a per-server slab pool like the queue's other parts (a handshake's 101 and a
 * first message, made for every member of a connection storm, would otherwise be
 * left as heap holes between the connections' long-lived allocations).
 *
 * Shared frames are laid out one after the other in the server's current arena (a
 * 64 KiB block), so the messages a member gets in one loop iteration, which every
 * member gets in the same order, usually sit back to back in memory, and the writev
 * of a member's queue merges them into one iovec: the kernel's cost of a writev grows
 * with its segments (it copies each one separately), so 16 messages in one segment
 * cost about half of 16 segments. An arena is unmapped when its last frame is freed
 * (frames go with their messages, on whatever thread drops the last reference: an
 * atomic count), and the server lets go of its current one once the app is quiet
 * (ws_out_trim_pools with `all`). Arenas are mapped apart from the heap: a retired
 * 64 KiB block would otherwise stay behind as a resident hole between the
 * connections' long-lived allocations.
 *
 * A queue exists only while bytes are waiting. Sending only queues and marks the
 * connection dirty; the prepare phase (server.c) flushes each dirty connection with
 * one uv_try_write of everything queued (a writev), and hands what the socket did
 * not take to one uv_write. The queue is bounded: a data frame that would take it
 * beyond max_outbound_bytes closes the connection with 1008. Queue parts come from
 * small per-server pools, so steady fanout allocates nothing per delivery. */
#include "alloc.h"
#include "slab.h"
#include "ws_internal.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

enum { OWN_NONE = 0, OWN_HEAP, OWN_SMALL, OWN_FRAME }; /* SMALL: a ws_buf from the pool */

/* A heap buffer: the bytes of one or more small frames, or of one large one. */
typedef struct ws_buf {
    size_t cap, len;
    uint8_t data[];
} ws_buf;

typedef struct ws_item {
    const uint8_t *data;         /* what remains to be written */
    size_t len;
    void *owner;                 /* ws_buf or ws_shared_frame, per kind */
    uint8_t kind;
} ws_item;

#define WS_QBLOCK_ITEMS 15
#define WS_SMALL_BUF 256         /* small frames share a buffer of this size */

struct ws_qblock {
    ws_qblock *next;
    uint16_t head, tail;
    ws_item items[WS_QBLOCK_ITEMS];
};

struct ws_outq {
    uv_write_t *req;             /* made for the first partial write, kept with q */
    ws_qblock *first, *last;
    size_t bytes;                /* queued, including what is in flight */
    size_t n_items;
    size_t inflight;             /* items at the front handed to uv_write */
    bool writing;
};

/* Shared frames: a mapping of WS_ARENA_SIZE bytes (this header first), the frames'
 * bytes filled from the start (back to back) and their ws_shared_frame records from
 * the end, unmapped with its last frame. */
typedef struct ws_arena {
    atomic_size_t refs;          /* frames in it, plus one while it is the current one */
    size_t used;                 /* bytes from the start of data */
    size_t top;                  /* records from here to the end of data */
    uint8_t data[];
} ws_arena;

#define WS_ARENA_SIZE (64u * 1024u)
#define WS_ARENA_ROOM (WS_ARENA_SIZE - sizeof(ws_arena))
#define WS_ARENA_MAX_FRAME (WS_ARENA_SIZE / 8) /* larger frames get their own block */

/* A frame built once per server for a message body, attached to the message under
 * the server's address. `pins` counts the queue items pointing at it (only this
 * server's thread touches it); while it is not 0 the frame holds one reference to
 * `msg`, which owns the frame. */
typedef struct ws_shared_frame {
    size_t len;
    size_t pins;
    const cch_msg *msg;
    ws_arena *arena;             /* holds the bytes; NULL: they are in own[] */
    uint8_t *bytes;
    uint8_t own[];
} ws_shared_frame;

static void arena_unref(ws_arena *a)
{
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        munmap(a, WS_ARENA_SIZE);
}

static ws_arena *arena_new(void)
{
    void *m = mmap(NULL, WS_ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    ws_arena *a = m;
    atomic_init(&a->refs, 1);
    a->used = 0;
    a->top = WS_ARENA_ROOM;
    return a;
}

/* The attachment's destructor: runs when the message is freed, on any thread. */
static void frame_free(void *p)
{
    ws_shared_frame *f = p;
    if (f->arena)
        arena_unref(f->arena); /* f lives in it */
    else
        cch__free(f);
}

/* A new frame of `len` bytes (its bytes not filled in), or NULL. */
static ws_shared_frame *frame_new(ws_server *s, size_t len)
{
    if (len > WS_ARENA_MAX_FRAME) {
        ws_shared_frame *f = cch__malloc(sizeof *f + len);
        if (f) {
            f->arena = NULL;
            f->bytes = f->own;
        }
        return f;
    }
    /* The record below the previous ones, aligned down (top stays aligned). */
    size_t rec = (sizeof(ws_shared_frame) + _Alignof(ws_shared_frame) - 1) &
                 ~(_Alignof(ws_shared_frame) - 1);
    ws_arena *a = s->arena;
    if (!a || a->top - a->used < len + rec) {
        ws_arena *na = arena_new();
        if (!na)
            return NULL;
        if (a)
            arena_unref(a); /* retired: unmapped with its last frame */
        s->arena = a = na;
    }
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    a->top -= rec;
    ws_shared_frame *f = (ws_shared_frame *)(a->data + a->top);
    f->arena = a;
    f->bytes = a->data + a->used;
    a->used += len;
    return f;
}

size_t ws_frame_header(uint8_t *hdr, int opcode, uint64_t len)
{
    hdr[0] = (uint8_t)(0x80u | ((unsigned)opcode & 0x0fu));
    if (len < 126) {
        hdr[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffffu) {
        hdr[1] = 126;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        return 4;
    }
    hdr[1] = 127;
    for (int i = 0; i < 8; i++)
        hdr[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* ---- pools --------------------------------------------------------------------
 *
 * Queue parts come from per-server slab pools (lib/core/slab.h), mapped apart from
 * the heap: a fanout gives every member a queue in one loop iteration and flushes
 * them all in the next prepare phase, so steady fanout allocates nothing once the
 * slabs hold its working set, and after a storm (say a room's join notices) the
 * parts do not stay behind as holes in the heap. ws_out_trim_pools (from the server's
 * timer, see timer.c) unmaps the slabs not needed since its last call, and all empty
 * ones once the layer has gone quiet. A queue's uv_write_t (made for a partial
 * write) is freed with it. */

void ws_out_init_pools(ws_server *s)
{
    cch__slab_pool_init(&s->block_slabs, sizeof(ws_qblock));
    cch__slab_pool_init(&s->outq_slabs, sizeof(ws_outq));
    cch__slab_pool_init(&s->sbuf_slabs, sizeof(ws_buf) + WS_SMALL_BUF);
}

static ws_qblock *block_get(ws_server *s)
{
    ws_qblock *b = cch__slab_take(&s->block_slabs);
    if (!b)
        return NULL;
    ws_timer_want_trim(s);
    b->next = NULL;
    b->head = b->tail = 0;
    return b;
}

static void block_put(ws_server *s, ws_qblock *b)
{
    cch__slab_give(&s->block_slabs, b);
}

static ws_outq *outq_get(ws_conn *c)
{
    if (c->outq)
        return c->outq;
    ws_server *s = c->srv;
    ws_outq *q = cch__slab_take(&s->outq_slabs);
    if (!q)
        return NULL;
    ws_timer_want_trim(s);
    memset(q, 0, sizeof *q);
    c->outq = q;
    return q;
}

static void outq_put(ws_conn *c)
{
    ws_server *s = c->srv;
    ws_outq *q = c->outq;
    c->outq = NULL;
    ws_qblock *b = q->first;
    while (b) {
        ws_qblock *n = b->next;
        block_put(s, b);
        b = n;
    }
    cch__free(q->req);
    cch__slab_give(&s->outq_slabs, q);
}

bool ws_out_trim_pools(ws_server *s, bool all)
{
    if (all && s->arena) {
        arena_unref(s->arena); /* quiet: the next frame maps a new one */
        s->arena = NULL;
    }
    cch__slab_trim(&s->block_slabs, all);
    cch__slab_trim(&s->outq_slabs, all);
    cch__slab_trim(&s->sbuf_slabs, all);
    return s->block_slabs.n_empty || s->outq_slabs.n_empty || s->sbuf_slabs.n_empty;
}

void ws_out_free_pools(ws_server *s)
{
    if (s->arena) {
        arena_unref(s->arena);
        s->arena = NULL;
    }
    cch__slab_pool_free(&s->block_slabs);
    cch__slab_pool_free(&s->outq_slabs);
    cch__slab_pool_free(&s->sbuf_slabs);
}

/* ---- items ------------------------------------------------------------------- */

static void item_release(ws_server *s, ws_item *it)
{
    if (it->kind == OWN_HEAP)
        cch__free(it->owner);
    else if (it->kind == OWN_SMALL)
        cch__slab_give(&s->sbuf_slabs, it->owner);
    else if (it->kind == OWN_FRAME) {
        ws_shared_frame *f = it->owner;
        if (--f->pins == 0)
            cch_msg_unref(f->msg); /* may free f with the message */
    }
    it->kind = OWN_NONE;
    it->owner = NULL;
}

/* Inlined into every sender: on a group message's path it runs once per member. */
static inline __attribute__((always_inline)) int push_item(ws_conn *c, const uint8_t *data,
                                                          size_t len, void *owner, int kind)
{
    ws_outq *q = outq_get(c);
    if (!q)
        return CCH_ENOMEM;
    ws_qblock *b = q->last;
    if (!b || b->tail == WS_QBLOCK_ITEMS) {
        ws_qblock *nb = block_get(c->srv);
        if (!nb) {
            if (q->n_items == 0 && !q->writing)
                outq_put(c);
            return CCH_ENOMEM;
        }
        if (b)
            b->next = nb;
        else
            q->first = nb;
        q->last = b = nb;
    }
    ws_item *it = &b->items[b->tail++];
    it->data = data;
    it->len = len;
    it->owner = owner;
    it->kind = (uint8_t)kind;
    q->n_items++;
    q->bytes += len;
    c->srv->stats.outbound_bytes += len;
    ws_mark_dirty(c);
    return 0;
}

static ws_item *front_item(ws_outq *q)
{
    ws_qblock *b = q->first;
    return b && b->head < b->tail ? &b->items[b->head] : NULL;
}

/* Removes the front item (already released or to be released by the caller). */
static void pop_front(ws_conn *c)
{
    ws_outq *q = c->outq;
    ws_qblock *b = q->first;
    item_release(c->srv, &b->items[b->head]);
    b->head++;
    q->n_items--;
    if (b->head == b->tail) {
        if (b == q->last) {
            b->head = b->tail = 0;
        } else {
            q->first = b->next;
            block_put(c->srv, b);
        }
    }
}

/* Appends bytes to the tail item when it is a small heap buffer with room that is
 * not being written. Returns true when done. */
static bool append_tail(ws_conn *c, const uint8_t *p1, size_t n1, const uint8_t *p2, size_t n2)
{
    ws_outq *q = c->outq;
    if (!q || q->n_items == q->inflight || !q->last || q->last->tail == 0)
        return false;
    ws_item *it = &q->last->items[q->last->tail - 1];
    if (it->kind != OWN_HEAP && it->kind != OWN_SMALL)
        return false;
    ws_buf *b = it->owner;
    if (it->data + it->len != b->data + b->len || b->cap - b->len < n1 + n2)
        return false;
    memcpy(b->data + b->len, p1, n1);
    if (n2)
        memcpy(b->data + b->len + n1, p2, n2);
    b->len += n1 + n2;
    it->len += n1 + n2;
    q->bytes += n1 + n2;
    c->srv->stats.outbound_bytes += n1 + n2;
    ws_mark_dirty(c);
    return true;
}

void *ws_out_buf_new(size_t len, uint8_t **data)
{
    size_t cap = len < WS_SMALL_BUF ? WS_SMALL_BUF : len;
    ws_buf *b = cch__malloc(sizeof *b + cap);
    if (!b)
        return NULL;
    b->cap = cap;
    b->len = 0;
    *data = b->data;
    return b;
}

int ws_out_buf_push(ws_conn *c, void *buf, size_t len)
{
    ws_buf *b = buf;
    b->len = len;
    int rc = push_item(c, b->data, len, b, OWN_HEAP);
    if (rc < 0)
        cch__free(b);
    return rc;
}

/* Queues header + payload, copied: packed into the tail buffer when small. */
static int queue_copy(ws_conn *c, const uint8_t *hdr, size_t hlen, const void *data, size_t len)
{
    if (append_tail(c, hdr, hlen, data, len))
        return 0;
    if (hlen + len > WS_SMALL_BUF) {
        uint8_t *p;
        ws_buf *b = ws_out_buf_new(hlen + len, &p);
        if (!b)
            return CCH_ENOMEM;
        memcpy(p, hdr, hlen);
        if (len)
            memcpy(p + hlen, data, len);
        return ws_out_buf_push(c, b, hlen + len);
    }
    ws_server *s = c->srv;
    ws_buf *b = cch__slab_take(&s->sbuf_slabs);
    if (!b)
        return CCH_ENOMEM;
    ws_timer_want_trim(s);
    b->cap = WS_SMALL_BUF;
    b->len = hlen + len;
    memcpy(b->data, hdr, hlen);
    if (len)
        memcpy(b->data + hlen, data, len);
    int rc = push_item(c, b->data, b->len, b, OWN_SMALL);
    if (rc < 0)
        cch__slab_give(&s->sbuf_slabs, b);
    return rc;
}

int ws_out_raw(ws_conn *c, const void *data, size_t len)
{
    return queue_copy(c, data, len, NULL, 0);
}

int ws_out_control(ws_conn *c, int opcode, const void *payload, size_t len)
{
    if (len > 125)
        return CCH_EINVAL;
    uint8_t hdr[10];
    size_t hlen = ws_frame_header(hdr, opcode, len);
    return queue_copy(c, hdr, hlen, payload, len);
}

/* The outbound limit: a data frame that does not fit closes the connection. */
static int over_limit_slow(ws_conn *c, size_t add);

/* The check itself, kept inline on every send's path; the rest out of line. */
static inline int over_limit(ws_conn *c, size_t add)
{
    size_t pending = c->outq ? c->outq->bytes : 0;
    /* One message alone always fits: the limit bounds what piles up behind it. */
    if (pending == 0 || pending + add <= c->srv->opts.max_outbound_bytes)
        return 0;
    return over_limit_slow(c, add);
}

static int over_limit_slow(ws_conn *c, size_t add)
{
    size_t pending = c->outq->bytes;
    /* A burst larger than the limit within one iteration: give the socket what it
     * takes now, so only a client that really stopped reading hits the limit. */
    if (!c->outq->writing) {
        ws_out_flush(c);
        if (c->state == WS_DEAD)
            return CCH_ECLOSED;
        pending = c->outq ? c->outq->bytes : 0;
        if (pending == 0 || pending + add <= c->srv->opts.max_outbound_bytes)
            return 0;
    }
    ws_server *s = c->srv;
    char peer[64];
    ws_conn_peer(c, peer, sizeof peer);
    s->stats.closed_slow++;
    ws_log(s, CCH_LOG_WARN, "%s: outbound buffer full (%zu bytes waiting), closing with 1008",
           peer, pending);
    ws_out_discard(c);
    ws_conn_close(c, 1008, "outbound buffer full");
    return CCH_ELIMIT;
}

static int check_open(ws_conn *c)
{
    if (c->state == WS_HTTP || c->state == WS_DECIDING)
        return CCH_ESTATE;
    if (c->state != WS_OPEN || (c->flags & WS_F_CLOSE_SENT))
        return CCH_ECLOSED;
    return 0;
}

int ws_out_send(ws_conn *c, const void *data, size_t len, bool binary)
{
    int rc = check_open(c);
    if (rc < 0)
        return rc;
    if (len && !data)
        return CCH_EINVAL;
    if (len > UINT32_MAX - 16)
        return CCH_ETOOBIG; /* one frame must fit a uv_buf_t */
    uint8_t hdr[10];
    size_t hlen = ws_frame_header(hdr, binary ? 2 : 1, len);
    if ((rc = over_limit(c, hlen + len)) < 0)
        return rc;
    if ((rc = queue_copy(c, hdr, hlen, data, len)) < 0)
        return rc;
    c->srv->stats.messages_out++;
    return 0;
}

int ws_out_send_body(ws_conn *c, const cch_msg *m)
{
    int rc = check_open(c);
    if (rc < 0)
        return rc;
    if (!m)
        return CCH_EINVAL;
    ws_server *s = c->srv;
    ws_shared_frame *f = cch_msg_attachment(m, s);
    if (f) {
        s->stats.frames_shared++;
    } else {
        size_t blen = cch_msg_body_len(m);
        if (blen > UINT32_MAX - 16)
            return CCH_ETOOBIG;
        uint8_t hdr[10];
        size_t hlen = ws_frame_header(hdr, 1, blen);
        ws_shared_frame *nf = frame_new(s, hlen + blen);
        if (!nf)
            return CCH_ENOMEM;
        nf->len = hlen + blen;
        nf->pins = 0;
        nf->msg = m;
        memcpy(nf->bytes, hdr, hlen);
        memcpy(nf->bytes + hlen, cch_msg_body(m), blen);
        f = cch_msg_attach(m, s, nf, frame_free);
        if (f != nf)
            frame_free(nf);
        if (!f)
            return CCH_ENOMEM;
        s->stats.frames_built++;
    }
    if ((rc = over_limit(c, f->len)) < 0)
        return rc;
    if (f->pins == 0)
        cch_msg_ref(m);
    f->pins++;
    if ((rc = push_item(c, f->bytes, f->len, f, OWN_FRAME)) < 0) {
        if (--f->pins == 0)
            cch_msg_unref(m);
        return rc;
    }
    s->stats.messages_out++;
    return 0;
}

/* ---- discarding ---------------------------------------------------------------- */

void ws_out_discard(ws_conn *c)
{
    ws_outq *q = c->outq;
    if (!q)
        return;
    size_t keep = q->inflight, seen = 0;
    ws_qblock *b = q->first, *last_kept = NULL;
    while (b) {
        ws_qblock *next = b->next;
        uint16_t new_tail = b->tail;
        for (uint16_t i = b->head; i < b->tail; i++, seen++) {
            if (seen < keep)
                continue;
            if (new_tail == b->tail)
                new_tail = i;
            q->bytes -= b->items[i].len;
            c->srv->stats.outbound_bytes -= b->items[i].len;
            q->n_items--;
            item_release(c->srv, &b->items[i]);
        }
        b->tail = new_tail;
        if (b->head == b->tail && b != q->first) {
            block_put(c->srv, b);
        } else {
            if (last_kept)
                last_kept->next = b;
            last_kept = b;
        }
        b = next;
    }
    if (last_kept)
        last_kept->next = NULL;
    q->last = last_kept;
    if (q->first && q->first->head == q->first->tail)
        q->first->head = q->first->tail = 0;
    if (q->n_items == 0 && !q->writing)
        outq_put(c);
}

void ws_out_free(ws_conn *c)
{
    ws_outq *q = c->outq;
    if (!q)
        return;
    while (q->n_items) {
        ws_item *it = front_item(q);
        c->srv->stats.outbound_bytes -= it->len;
        pop_front(c);
    }
    q->bytes = 0;
    outq_put(c);
}

size_t ws_out_pending(const ws_conn *c)
{
    return c->outq ? c->outq->bytes : 0;
}

bool ws_out_writing(const ws_conn *c)
{
    return c->outq && c->outq->writing;
}

/* ---- writing ------------------------------------------------------------------- */

/* Drops `n` written bytes from the front of the queue. */
static void consume(ws_conn *c, size_t n)
{
    ws_outq *q = c->outq;
    q->bytes -= n;
    c->srv->stats.outbound_bytes -= n;
    c->srv->stats.bytes_out += n;
    ws_server *s = c->srv;
    while (n) { /* whole items block by block (a writev's worth is often in one) */
        ws_qblock *b = q->first;
        uint16_t head = b->head;
        while (head < b->tail && n >= b->items[head].len) {
            n -= b->items[head].len;
            item_release(s, &b->items[head]);
            head++;
            q->n_items--;
        }
        b->head = head;
        if (head == b->tail) {
            if (b == q->last) {
                b->head = b->tail = 0;
                return; /* n is 0: the queue is empty */
            }
            q->first = b->next;
            block_put(s, b);
            continue;
        }
        if (n) { /* part of the front item was written */
            b->items[head].data += n;
            b->items[head].len -= n;
        }
        return;
    }
}

static void write_cb(uv_write_t *req, int status);

/* Everything left: drained, so the connection may move on. */
static void drained(ws_conn *c)
{
    outq_put(c);
    ws_conn_drained(c);
}

void ws_out_flush(ws_conn *c)
{
    ws_outq *q = c->outq;
    ws_server *s = c->srv;
    if (!q || q->writing || c->state == WS_DEAD)
        return;
    uv_stream_t *stream = (uv_stream_t *)&c->tcp;
    while (q->n_items) {
        /* One iovec per run of items that lie back to back in memory (shared frames
         * laid out one after the other in an arena). */
        unsigned n = 0;
        size_t total = 0, items = 0;
        const uint8_t *run = NULL; /* the current run, kept out of s->iov until it ends */
        size_t run_len = 0;
        for (ws_qblock *b = q->first; b; b = b->next) {
            uint16_t i = b->head;
            for (; i < b->tail; i++) {
                const ws_item *it = &b->items[i];
                if (run && run + run_len == it->data && run_len <= UINT32_MAX - it->len) {
                    run_len += it->len;
                } else {
                    if (run) {
                        if (n + 1 >= WS_IOV_MAX)
                            break; /* room for the current run only */
                        s->iov[n++] = uv_buf_init((char *)run, (unsigned)run_len);
                    }
                    run = it->data;
                    run_len = it->len;
                }
                total += it->len;
                items++;
            }
            if (i < b->tail)
                break;
        }
        if (run)
            s->iov[n++] = uv_buf_init((char *)run, (unsigned)run_len);
        int r = uv_try_write(stream, s->iov, n);
        if (r == UV_EAGAIN || r == UV_ENOSYS)
            r = 0;
        if (r < 0) {
            ws_log(s, CCH_LOG_DEBUG, "write failed: %s", uv_strerror(r));
            ws_conn_kill(c);
            return;
        }
        s->stats.writes++;
        size_t done = (size_t)r;
        if (done == total) {
            consume(c, done);
            continue;
        }
        /* The socket took part of it: hand the rest of this batch to uv_write. */
        unsigned skip = 0;
        size_t left = done;
        while (left >= s->iov[skip].len) {
            left -= s->iov[skip].len;
            skip++;
        }
        size_t before = q->n_items;
        consume(c, done);
        items -= before - q->n_items; /* the batch's items not written out yet */
        s->iov[skip].base += left;
        s->iov[skip].len -= (unsigned)left;
        if (!q->req && !(q->req = cch__malloc(sizeof *q->req))) {
            ws_log(s, CCH_LOG_ERROR, "out of memory for a write: dropping the connection");
            ws_conn_kill(c);
            return;
        }
        q->inflight = items;
        q->writing = true;
        int wr = uv_write(q->req, stream, s->iov + skip, n - skip, write_cb);
        if (wr < 0) {
            q->writing = false;
            q->inflight = 0;
            ws_log(s, CCH_LOG_DEBUG, "write failed: %s", uv_strerror(wr));
            ws_conn_kill(c);
        }
        return;
    }
    drained(c);
}

static void write_cb(uv_write_t *req, int status)
{
    ws_conn *c = (ws_conn *)req->handle;
    ws_outq *q = c->outq;
    q->writing = false;
    size_t n = q->inflight;
    q->inflight = 0;
    for (size_t i = 0; i < n; i++)
        consume(c, front_item(q)->len);
    if (c->state == WS_DEAD)
        return; /* ws_out_free runs from the close callback */
    if (status < 0) {
        ws_log(c->srv, CCH_LOG_DEBUG, "write failed: %s", uv_strerror(status));
        ws_conn_kill(c);
        return;
    }
    c->srv->stats.writes++;
    if (q->n_items)
        ws_mark_dirty(c);
    else
        drained(c);
}
