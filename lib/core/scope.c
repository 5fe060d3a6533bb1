/* lib/core/scope.c - the scope: path, query, headers, cookies, subprotocol offers,
 * route parameters, the user and middleware data (cchannels/scope.h).
 *
 * What the scope keeps for a connection's life is small: one buffer with the path,
 * query string, client host and decoded parameter values. Headers are read from the
 * host's borrowed request while the connection opens, and never copied wholesale. */
#include "scope_internal.h"

#include <limits.h>
#include <string.h>

#include "alloc.h"
#include "cchannels/error.h"

/* A middleware data slot. */
struct cch__scope_data {
    struct cch__scope_data *next;
    const void *key;
    void *data;
    void (*free_data)(void *);
};

/* A header value copied with a NUL (cch_header values need not be NUL-terminated),
 * kept until the connection has opened. */
struct cch__header_copy {
    struct cch__header_copy *next;
    size_t index;
    char value[];
};

/* ---- small string helpers ------------------------------------------------------ */

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

static bool header_is(const cch_header *h, const char *name, size_t nlen) {
    if (!h->name || h->name_len != nlen) return false;
    for (size_t i = 0; i < nlen; i++)
        if (lower((unsigned char)h->name[i]) != lower((unsigned char)name[i])) return false;
    return true;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **p, size_t *len) {
    while (*len > 0 && is_ows(**p)) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && is_ows((*p)[*len - 1])) (*len)--;
}

/* Copies `len` bytes of src into buf (cap bytes) with a NUL, decoding %XX (and '+'
 * when `decode_plus`) when `decode`. Returns the full length, or CCH_ETOOBIG with a
 * truncated, NUL-terminated prefix in buf. */
static int copy_out(const char *src, size_t len, bool decode, char *buf, size_t cap) {
    size_t total = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (decode) {
            if (ch == '+') {
                ch = ' ';
            } else if (ch == '%' && i + 2 < len) {
                int hi = cch__hexval((unsigned char)src[i + 1]);
                int lo = cch__hexval((unsigned char)src[i + 2]);
                if (hi >= 0 && lo >= 0) {
                    ch = (char)(hi * 16 + lo);
                    i += 2;
                }
            }
        }
        if (total + 1 < cap) buf[total] = ch;
        total++;
    }
    if (cap > 0) buf[total < cap ? total : cap - 1] = '\0';
    if (total >= cap || total > INT_MAX) return CCH_ETOOBIG;
    return (int)total;
}

/* Whether the query-string key `key` (klen raw bytes) decodes to `name`. */
static bool key_equals(const char *key, size_t klen, const char *name, size_t nlen) {
    size_t n = 0;
    for (size_t i = 0; i < klen; i++) {
        char ch = key[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%' && i + 2 < klen) {
            int hi = cch__hexval((unsigned char)key[i + 1]);
            int lo = cch__hexval((unsigned char)key[i + 2]);
            if (hi >= 0 && lo >= 0) {
                ch = (char)(hi * 16 + lo);
                i += 2;
            }
        }
        if (n >= nlen || name[n] != ch) return false;
        n++;
    }
    return n == nlen;
}

/* Whether the comma-separated list (len bytes) holds the token `name`. */
static bool list_has(const char *v, size_t len, const char *name, size_t nlen) {
    size_t i = 0;
    while (i <= len) {
        const char *tok = v + i;
        const char *comma = memchr(tok, ',', len - i);
        size_t tlen = comma ? (size_t)(comma - tok) : len - i;
        size_t next = i + tlen + 1;
        trim(&tok, &tlen);
        if (tlen == nlen && memcmp(tok, name, nlen) == 0) return true;
        if (!comma) break;
        i = next;
    }
    return false;
}

/* ---- life cycle ---------------------------------------------------------------- */

/* The buffer's size for req (0 and the error in *err when it is not usable). */
static size_t buf_size(const cch_request *req, const cch__route *route,
                       const cch__route_span *spans, int *err) {
    *err = CCH_EINVAL;
    if (!req || !req->path || (req->n_headers > 0 && !req->headers)) return 0;
    size_t plen = strlen(req->path);
    size_t qlen = req->query ? strlen(req->query) : 0;
    size_t hlen = req->client_host ? strlen(req->client_host) : 0;
    size_t nparams = (route && spans) ? route->nparams : 0;
    size_t total = plen + qlen + hlen + 3;
    for (size_t i = 0; i < nparams; i++) {
        if (spans[i].off + spans[i].len > plen) return 0;
        total += spans[i].len + 1;
    }
    *err = CCH_ETOOBIG;
    if (total > UINT32_MAX) return 0;
    *err = 0;
    return total;
}

size_t cch__scope_buf_size(const cch_request *req, const cch__route *route,
                           const cch__route_span *spans) {
    int err;
    return buf_size(req, route, spans, &err);
}

int cch__scope_init(cch_scope *s, const cch_request *req, const cch__route *route,
                    const cch__route_span *spans) {
    return cch__scope_init_in(s, req, route, spans, NULL);
}

int cch__scope_init_in(cch_scope *s, const cch_request *req, const cch__route *route,
                       const cch__route_span *spans, char *buf) {
    if (!s) return CCH_EINVAL;
    memset(s, 0, sizeof *s);
    s->user_id = CCH_USER_ANONYMOUS;
    int err;
    size_t total = buf_size(req, route, spans, &err);
    if (!total) return err;
    size_t plen = strlen(req->path);
    size_t qlen = req->query ? strlen(req->query) : 0;
    size_t hlen = req->client_host ? strlen(req->client_host) : 0;
    size_t nparams = (route && spans) ? route->nparams : 0;

    if (!buf) {
        if (!(buf = cch__malloc(total))) return CCH_ENOMEM;
        s->buf_owned = 1;
    }
    char *p = buf;
    memcpy(p, req->path, plen);
    p[plen] = '\0';
    p += plen + 1;
    s->query_off = (uint32_t)(p - buf);
    if (qlen) memcpy(p, req->query, qlen);
    p[qlen] = '\0';
    p += qlen + 1;
    s->host_off = (uint32_t)(p - buf);
    if (hlen) memcpy(p, req->client_host, hlen);
    p[hlen] = '\0';
    p += hlen + 1;
    s->params_off = (uint32_t)(p - buf);
    for (size_t i = 0; i < nparams; i++) {
        size_t n = cch__pct_decode(p, req->path + spans[i].off, spans[i].len, false);
        p[n] = '\0';
        p += n + 1;
    }
    s->buf = buf;
    s->route = nparams ? route : NULL;
    s->client_port = req->client_port;
    s->req = req;
    return 0;
}

/* The header copies (req set) or the kept offers (after opening), whichever it is. */
static void free_opening_data(cch_scope *s) {
    if (!s->req) {
        cch__free(s->u.offers);
        s->u.offers = NULL;
        return;
    }
    struct cch__header_copy *h = s->u.header_copies;
    while (h) {
        struct cch__header_copy *next = h->next;
        cch__free(h);
        h = next;
    }
    s->u.header_copies = NULL;
}

static const char k_protocol_header[] = "sec-websocket-protocol";

int cch__scope_end_open(cch_scope *s, bool keep_offers) {
    int rc = 0;
    const cch_request *req = s->req;
    if (!req) return 0; /* ended already: the offers (if any) stay */
    char *offers = NULL;
    if (keep_offers) {
        size_t total = 0;
        size_t nlen = sizeof k_protocol_header - 1;
        for (size_t i = 0; i < req->n_headers; i++)
            if (header_is(&req->headers[i], k_protocol_header, nlen) && req->headers[i].value)
                total += req->headers[i].value_len + 1;
        if (total > 0) {
            offers = cch__malloc(total);
            if (offers) {
                size_t o = 0;
                for (size_t i = 0; i < req->n_headers; i++) {
                    const cch_header *h = &req->headers[i];
                    if (!header_is(h, k_protocol_header, nlen) || !h->value) continue;
                    if (o > 0) offers[o++] = ',';
                    memcpy(offers + o, h->value, h->value_len);
                    o += h->value_len;
                }
                offers[o] = '\0';
            } else {
                rc = CCH_ENOMEM;
            }
        }
    }
    free_opening_data(s); /* the header copies */
    s->req = NULL;
    s->u.offers = offers;
    return rc;
}

void cch__scope_drop_offers(cch_scope *s) {
    if (!s->req) free_opening_data(s); /* while opening there are none yet */
}

int cch__scope_set_subprotocol(cch_scope *s, const char *name) {
    char *copy = NULL;
    if (name) {
        copy = cch__strdup(name);
        if (!copy) return CCH_ENOMEM;
    }
    cch__free(s->subprotocol);
    s->subprotocol = copy;
    return 0;
}

void cch__scope_destroy(cch_scope *s) {
    if (!s) return;
    free_opening_data(s);
    s->req = NULL;
    struct cch__scope_data *d = s->data;
    while (d) {
        struct cch__scope_data *next = d->next;
        if (d->free_data && d->data) d->free_data(d->data);
        cch__free(d);
        d = next;
    }
    s->data = NULL;
    if (s->user_free && s->user_data) s->user_free(s->user_data);
    s->user_data = NULL;
    s->user_free = NULL;
    cch__free(s->user_name);
    s->user_name = NULL;
    cch__free(s->subprotocol);
    s->subprotocol = NULL;
    if (s->buf_owned) cch__free(s->buf);
    s->buf = NULL;
    s->buf_owned = 0;
}

/* ---- request ------------------------------------------------------------------- */

const char *cch_scope_path(const cch_scope *s) { return (s && s->buf) ? s->buf : ""; }

const char *cch_scope_query_string(const cch_scope *s) {
    return (s && s->buf) ? s->buf + s->query_off : "";
}

int cch_scope_query(const cch_scope *s, const char *name, char *buf, size_t cap) {
    if (!s || !name || (!buf && cap > 0)) return CCH_EINVAL;
    const char *q = cch_scope_query_string(s);
    size_t nlen = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t plen = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        if (key_equals(q, klen, name, nlen)) {
            const char *val = eq ? eq + 1 : q + plen;
            size_t vlen = eq ? plen - klen - 1 : 0;
            return copy_out(val, vlen, true, buf, cap);
        }
        if (!amp) break;
        q = amp + 1;
    }
    return CCH_ENOTFOUND;
}

const char *cch_scope_header(const cch_scope *s, const char *name) {
    if (!s || !name || !s->req) return NULL;
    cch_scope *ms = (cch_scope *)s; /* the copy cache is not part of the scope's value */
    const cch_request *req = s->req;
    size_t nlen = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const cch_header *h = &req->headers[i];
        if (!header_is(h, name, nlen)) continue;
        for (struct cch__header_copy *c = ms->u.header_copies; c; c = c->next)
            if (c->index == i) return c->value;
        size_t vlen = h->value ? h->value_len : 0;
        struct cch__header_copy *c = cch__malloc(sizeof *c + vlen + 1);
        if (!c) return NULL;
        if (vlen) memcpy(c->value, h->value, vlen);
        c->value[vlen] = '\0';
        c->index = i;
        c->next = ms->u.header_copies;
        ms->u.header_copies = c;
        return c->value;
    }
    return NULL;
}

int cch_scope_cookie(const cch_scope *s, const char *name, char *buf, size_t cap) {
    if (!s || !name || (!buf && cap > 0)) return CCH_EINVAL;
    if (!s->req) return CCH_ENOTFOUND;
    size_t nlen = strlen(name);
    const cch_request *req = s->req;
    for (size_t i = 0; i < req->n_headers; i++) {
        const cch_header *h = &req->headers[i];
        if (!header_is(h, "cookie", 6) || !h->value) continue;
        const char *v = h->value;
        size_t len = h->value_len, pos = 0;
        while (pos < len) {
            const char *pair = v + pos;
            const char *semi = memchr(pair, ';', len - pos);
            size_t pl = semi ? (size_t)(semi - pair) : len - pos;
            pos += pl + 1;
            const char *eq = memchr(pair, '=', pl);
            if (!eq) continue;
            const char *k = pair;
            size_t kl = (size_t)(eq - pair);
            const char *val = eq + 1;
            size_t vl = pl - kl - 1;
            trim(&k, &kl);
            trim(&val, &vl);
            if (kl != nlen || memcmp(k, name, nlen) != 0) continue;
            if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
                val++;
                vl -= 2;
            }
            return copy_out(val, vl, false, buf, cap);
        }
    }
    return CCH_ENOTFOUND;
}

bool cch_scope_offers_subprotocol(const cch_scope *s, const char *name) {
    if (!s || !name || !*name) return false;
    size_t nlen = strlen(name);
    if (s->req) {
        const cch_request *req = s->req;
        for (size_t i = 0; i < req->n_headers; i++) {
            const cch_header *h = &req->headers[i];
            if (header_is(h, k_protocol_header, sizeof k_protocol_header - 1) && h->value &&
                list_has(h->value, h->value_len, name, nlen))
                return true;
        }
        return false;
    }
    return s->u.offers && list_has(s->u.offers, strlen(s->u.offers), name, nlen);
}

const char *cch_scope_subprotocol(const cch_scope *s) { return s ? s->subprotocol : NULL; }

const char *cch_scope_client_host(const cch_scope *s) {
    return (s && s->buf) ? s->buf + s->host_off : "";
}

int cch_scope_client_port(const cch_scope *s) { return s ? s->client_port : 0; }

const char *cch_scope_param(const cch_scope *s, const char *name) {
    if (!s || !name || !s->route || !s->buf) return NULL;
    const char *v = s->buf + s->params_off;
    for (size_t i = 0; i < s->route->nparams; i++) {
        if (strcmp(s->route->names[i], name) == 0) return v;
        v += strlen(v) + 1;
    }
    return NULL;
}

/* ---- user ---------------------------------------------------------------------- */

int cch_scope_set_user(cch_scope *s, int64_t id, const char *name, void *data,
                       void (*free_data)(void *)) {
    if (!s) return CCH_EINVAL;
    char *copy = NULL;
    if (name && *name) {
        copy = cch__strdup(name);
        if (!copy) return CCH_ENOMEM;
    }
    void *old = s->user_data;
    void (*old_free)(void *) = s->user_free;
    cch__free(s->user_name);
    s->user_name = copy;
    s->user_id = id;
    s->user_data = data;
    s->user_free = free_data;
    if (old && old != data && old_free) old_free(old);
    return 0;
}

int64_t cch_scope_user_id(const cch_scope *s) { return s ? s->user_id : CCH_USER_ANONYMOUS; }

const char *cch_scope_user_name(const cch_scope *s) {
    return (s && s->user_name) ? s->user_name : "";
}

void *cch_scope_user_data(const cch_scope *s) { return s ? s->user_data : NULL; }

bool cch_scope_user_is_authenticated(const cch_scope *s) {
    return s && s->user_id != CCH_USER_ANONYMOUS;
}

/* ---- middleware data ----------------------------------------------------------- */

int cch_scope_set_data(cch_scope *s, const void *key, void *data, void (*free_data)(void *)) {
    if (!s || !key) return CCH_EINVAL;
    struct cch__scope_data **link = &s->data;
    for (; *link; link = &(*link)->next)
        if ((*link)->key == key) break;
    struct cch__scope_data *d = *link;
    if (!d) {
        if (!data) return 0;
        d = cch__malloc(sizeof *d);
        if (!d) return CCH_ENOMEM;
        d->next = NULL;
        d->key = key;
        d->data = NULL;
        d->free_data = NULL;
        *link = d;
    }
    void *old = d->data;
    void (*old_free)(void *) = d->free_data;
    if (data) {
        d->data = data;
        d->free_data = free_data;
    } else {
        *link = d->next;
        cch__free(d);
    }
    if (old && old != data && old_free) old_free(old);
    return 0;
}

void *cch_scope_data(const cch_scope *s, const void *key) {
    if (!s || !key) return NULL;
    for (const struct cch__scope_data *d = s->data; d; d = d->next)
        if (d->key == key) return d->data;
    return NULL;
}
