/* tests/conn_fixture.h - shared by test_route/scope/app/conn: a fake transport that
 * records what a connection asks of its host, a log sink that records lines, and a
 * counting allocator (live bytes) that fails as alloc_fixture.h's rules say
 * (alloc_budget: allocations that still succeed).
 * Header-only (static functions); include it after cmocka.h. */
#ifndef CCH_TEST_CONN_FIXTURE_H
#define CCH_TEST_CONN_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cchannels/cchannels.h"

#include "alloc_fixture.h"

/* ---- counting allocator ------------------------------------------------------------ */

/* Each block carries its size in front, so live bytes can be counted. */
typedef union fx_head {
    size_t size;
    max_align_t align;
} fx_head;

static long fx_allocs;          /* allocations made */
static size_t fx_live;          /* bytes requested and not freed */

static inline void *fx_malloc(size_t n) {
    if (alloc_should_fail(n)) return NULL;
    fx_head *h = malloc(sizeof *h + n);
    if (!h) return NULL;
    h->size = n;
    fx_allocs++;
    fx_live += n;
    return h + 1;
}

static inline void *fx_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    void *p = fx_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

static inline void fx_free(void *p) {
    if (!p) return;
    fx_head *h = (fx_head *)p - 1;
    fx_live -= h->size;
    free(h);
}

static inline void *fx_realloc(void *p, size_t n) {
    if (!p) return fx_malloc(n);
    if (alloc_should_fail(n)) return NULL;
    fx_head *h = (fx_head *)p - 1;
    size_t old = h->size;
    fx_head *g = realloc(h, sizeof *g + n);
    if (!g) return NULL;
    g->size = n;
    fx_allocs++;
    fx_live = fx_live - old + n;
    return g + 1;
}

/* Routes the library's allocations through the counting allocator. */
static inline void fx_alloc_install(void) {
    alloc_rules_reset();
    fx_allocs = 0;
    fx_live = 0;
    cch_replace_allocator(fx_malloc, fx_realloc, fx_calloc, fx_free);
}

/* Back to libc with alloc_restore(): only when every block from the counting
 * allocator is freed. */

/* ---- log sink ------------------------------------------------------------------------ */

typedef struct fx_log {
    int count;
    int level;
    char last[512];
} fx_log;

static inline void fx_log_fn(void *ud, int level, const char *msg) {
    fx_log *l = ud;
    l->count++;
    l->level = level;
    snprintf(l->last, sizeof l->last, "%s", msg);
}

/* ---- fake transport ------------------------------------------------------------------ */

#define FX_MAX_FRAMES 32

typedef struct fx_frame {
    char data[256]; /* NUL-terminated copy (truncated) */
    size_t len;
    bool binary;
    bool via_body;  /* came through send_body */
} fx_frame;

typedef struct fx_tp {
    int accepts;
    char subprotocol[64]; /* "" when none */
    int rejects;
    int reject_status;
    int closes;
    int close_code;
    char close_reason[128];
    size_t sends;         /* every send, frames kept for the first FX_MAX_FRAMES */
    fx_frame frames[FX_MAX_FRAMES];
    const cch_msg *last_body; /* last message given to send_body */
    /* Codes to return (0: succeed). */
    int fail_accept, fail_reject, fail_send, fail_close;
} fx_tp;

static inline int fx_accept(void *tctx, const char *subprotocol) {
    fx_tp *t = tctx;
    t->accepts++;
    snprintf(t->subprotocol, sizeof t->subprotocol, "%s", subprotocol ? subprotocol : "");
    return t->fail_accept;
}

static inline int fx_reject(void *tctx, int status) {
    fx_tp *t = tctx;
    t->rejects++;
    t->reject_status = status;
    return t->fail_reject;
}

static inline void fx_record(fx_tp *t, const void *data, size_t len, bool binary, bool body) {
    if (t->sends < FX_MAX_FRAMES) {
        fx_frame *f = &t->frames[t->sends];
        size_t n = len < sizeof f->data - 1 ? len : sizeof f->data - 1;
        memcpy(f->data, data, n);
        f->data[n] = '\0';
        f->len = len;
        f->binary = binary;
        f->via_body = body;
    }
    t->sends++;
}

static inline int fx_send(void *tctx, const void *data, size_t len, bool binary) {
    fx_tp *t = tctx;
    if (t->fail_send) return t->fail_send;
    fx_record(t, data, len, binary, false);
    return 0;
}

static inline int fx_send_body(void *tctx, const cch_msg *m) {
    fx_tp *t = tctx;
    if (t->fail_send) return t->fail_send;
    t->last_body = m;
    fx_record(t, cch_msg_body(m), cch_msg_body_len(m), false, true);
    return 0;
}

static inline int fx_close(void *tctx, int code, const char *reason) {
    fx_tp *t = tctx;
    t->closes++;
    t->close_code = code;
    snprintf(t->close_reason, sizeof t->close_reason, "%s", reason);
    return t->fail_close;
}

/* With send_body, and without (then send() gets the body). */
__attribute__((unused)) static const cch_transport fx_transport = {fx_accept, fx_reject, fx_send, fx_send_body,
                                           fx_close};
__attribute__((unused)) static const cch_transport fx_transport_nobody = {fx_accept, fx_reject, fx_send, NULL,
                                                  fx_close};

/* A request for `path` (may hold "?query") with up to 8 headers "Name: value". */
typedef struct fx_req {
    char path[512];
    char query[512];
    cch_header headers[8];
    cch_request req;
} fx_req;

static inline void fx_req_init(fx_req *r, const char *path_and_query, const char *const *headers) {
    memset(r, 0, sizeof *r);
    const char *q = strchr(path_and_query, '?');
    size_t plen = q ? (size_t)(q - path_and_query) : strlen(path_and_query);
    snprintf(r->path, sizeof r->path, "%.*s", (int)plen, path_and_query);
    r->req.path = r->path;
    if (q) {
        snprintf(r->query, sizeof r->query, "%s", q + 1);
        r->req.query = r->query;
    }
    size_t n = 0;
    for (; headers && n < 8 && headers[n]; n++) {
        const char *h = headers[n];
        const char *colon = strchr(h, ':');
        const char *v = colon + 1;
        while (*v == ' ') v++;
        r->headers[n] = (cch_header){h, (size_t)(colon - h), v, strlen(v)};
    }
    r->req.headers = n ? r->headers : NULL;
    r->req.n_headers = n;
    r->req.client_host = "127.0.0.1";
    r->req.client_port = 50000;
}

#endif
