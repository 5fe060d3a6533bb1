/* lib/ws/http.c - the HTTP/1.1 request head (llhttp) and the WebSocket handshake.
 *
 * The request head is collected into a per-connection buffer that exists only until
 * the handshake is decided, and parsed incrementally by llhttp as it arrives (header
 * names and values are kept as offsets into that buffer). A complete head is either a
 * WebSocket upgrade, checked here (RFC 6455 4.2.1) and handed to the app with
 * cch_conn_open, or a plain GET/HEAD served from the static directory. Every failure
 * gets a complete HTTP answer with "Connection: close".
 *
 * The request state (ws_http: the parser, the header spans and the first
 * WS_HTTP_INLINE bytes of the head, in one block) never comes from the heap between
 * a connection's long-lived allocations, where it would be left as a hole once the
 * handshake is over: a handshake decided within one read (the usual case) uses the
 * server's one spare, the others take one from a slab pool (slab.h) that is unmapped
 * as soon as no handshake uses it. Only a head longer than the inline room, or more
 * than WS_HTTP_INLINE_HDRS headers, grows onto the heap.
 *
 * The accept key is SHA-1 (sha1.c, not libcrypto: see there) and base64. */
#include "alloc.h"
#include "ws_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <llhttp.h>

#define WS_MAX_HEADERS 100

enum { SPAN_NONE = 0, SPAN_URL, SPAN_FIELD, SPAN_VALUE };

typedef struct ws_hdr_span {
    uint32_t name_off, name_len, value_off, value_len;
} ws_hdr_span;

/* The ws_http block (a slab object, or the server's spare) is WS_HTTP_BLOCK bytes: the
 * state, WS_HTTP_INLINE_HDRS header spans and the head's first bytes. */
#define WS_HTTP_BLOCK 2048
#define WS_HTTP_INLINE_HDRS 24

struct ws_http {
    llhttp_t parser;
    char *buf;                   /* the request head, then what followed it (+1: NUL) */
    size_t len, cap;             /* cap: bytes buf holds before its NUL */
    size_t head_end;             /* bytes of the head, once complete */
    uint32_t url_off, url_len;
    ws_hdr_span *hdr;
    uint32_t n_hdr, cap_hdr;
    uint8_t span;
    bool complete;
    bool too_many;
    bool in_open;                /* cch_conn_open is running: keep this alive */
    bool free_pending;           /* freed while in_open: free when it returns */
    char accept_key[29];
    int fd;                      /* a static file being sent, or -1 */
    uint64_t file_left;
    ws_hdr_span hdr_inline[WS_HTTP_INLINE_HDRS];
    char buf_inline[];           /* up to WS_HTTP_BLOCK */
};

#define WS_HTTP_INLINE (WS_HTTP_BLOCK - sizeof(ws_http))
_Static_assert(sizeof(ws_http) + 1024 <= WS_HTTP_BLOCK, "room for a 1 KiB head");

/* ---- small helpers ------------------------------------------------------------- */

const char *ws_http_reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:
        return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Unknown";
    }
}

static bool is_tchar_sep(char ch)
{
    return ch == ',' || ch == ' ' || ch == '\t';
}

bool ws_header_has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < len) {
        while (i < len && is_tchar_sep(v[i]))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

bool ws_key_valid(const char *key, size_t len)
{
    /* base64 of 16 bytes: 22 significant characters and "==". The last significant
     * character carries 4 bits of padding that must be zero. */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (b64val(key[i]) < 0)
            return false;
    return (b64val(key[21]) & 0x0f) == 0;
}

int ws_accept_key(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char in[128];
    uint8_t md[21]; /* the digest, and a zero byte so that it is 7 groups of 3 */
    if (len > sizeof in - (sizeof guid - 1))
        return CCH_EINVAL;
    memcpy(in, key, len);
    memcpy(in + len, guid, sizeof guid - 1);
    ws_sha1(in, len + sizeof guid - 1, md);
    md[20] = 0;
    for (int i = 0; i < 7; i++) {
        uint32_t v = (uint32_t)md[3 * i] << 16 | (uint32_t)md[3 * i + 1] << 8 | md[3 * i + 2];
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = b64chars[(v >> (18 - 6 * j)) & 63];
    }
    out[27] = '='; /* 20 bytes: the last group holds 2, padded with one '=' */
    out[28] = '\0';
    return 0;
}

/* ---- llhttp callbacks ------------------------------------------------------------ */

static ws_http *parser_http(llhttp_t *p)
{
    return (ws_http *)p; /* the parser is the first member */
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    ws_http *h = parser_http(p);
    if (h->span != SPAN_URL) {
        h->span = SPAN_URL;
        h->url_off = (uint32_t)(at - h->buf);
        h->url_len = 0;
    }
    h->url_len += (uint32_t)len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    ws_http *h = parser_http(p);
    if (h->span != SPAN_FIELD) {
        if (h->n_hdr == WS_MAX_HEADERS) {
            h->too_many = true;
            return -1;
        }
        if (h->n_hdr == h->cap_hdr) {
            uint32_t nc = h->cap_hdr * 2;
            bool inl = h->hdr == h->hdr_inline;
            ws_hdr_span *n = cch__realloc(inl ? NULL : h->hdr, nc * sizeof *n);
            if (!n)
                return -1;
            if (inl)
                memcpy(n, h->hdr_inline, sizeof h->hdr_inline);
            h->hdr = n;
            h->cap_hdr = nc;
        }
        ws_hdr_span *sp = &h->hdr[h->n_hdr++];
        sp->name_off = (uint32_t)(at - h->buf);
        sp->name_len = 0;
        sp->value_off = sp->value_len = 0;
        h->span = SPAN_FIELD;
    }
    h->hdr[h->n_hdr - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    ws_http *h = parser_http(p);
    ws_hdr_span *sp = &h->hdr[h->n_hdr - 1];
    if (h->span != SPAN_VALUE) {
        sp->value_off = (uint32_t)(at - h->buf);
        sp->value_len = 0;
        h->span = SPAN_VALUE;
    }
    sp->value_len += (uint32_t)len;
    return 0;
}

static int on_span_complete(llhttp_t *p)
{
    parser_http(p)->span = SPAN_NONE;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    parser_http(p)->complete = true;
    return HPE_PAUSED;
}

/* Constant (llhttp_settings_init only zeroes): shared by the loops of several
 * threads, so never initialised lazily. */
static const llhttp_settings_t parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_url_complete = on_span_complete,
    .on_header_field_complete = on_span_complete,
    .on_header_value_complete = on_span_complete,
    .on_headers_complete = on_headers_complete,
};

static const llhttp_settings_t *settings(void)
{
    return &parser_settings;
}

/* ---- answers --------------------------------------------------------------------- */

/* A request state for c's server: its spare, else a slab object. */
static ws_http *http_new(ws_server *s)
{
    if (!s->http_spare)
        s->http_spare = cch__malloc(WS_HTTP_BLOCK); /* once: kept until the server ends */
    ws_http *h = s->http_spare;
    if (h && !s->http_spare_busy)
        s->http_spare_busy = true;
    else if (!(h = cch__slab_take(&s->http_slabs)))
        return NULL;
    memset(h, 0, sizeof *h);
    h->fd = -1;
    h->buf = h->buf_inline;
    h->cap = WS_HTTP_INLINE - 1;
    h->hdr = h->hdr_inline;
    h->cap_hdr = WS_HTTP_INLINE_HDRS;
    llhttp_init(&h->parser, HTTP_REQUEST, settings());
    return h;
}

static void http_give(ws_server *s, ws_http *h)
{
    if (h->buf != h->buf_inline)
        cch__free(h->buf);
    if (h->hdr != h->hdr_inline)
        cch__free(h->hdr);
    if (h == s->http_spare) {
        s->http_spare_busy = false;
        return;
    }
    cch__slab_give(&s->http_slabs, h);
    if (s->http_slabs.used == 0) /* no handshake left in the pool: unmap it */
        cch__slab_trim(&s->http_slabs, true);
}

void ws_http_init_pool(ws_server *s)
{
    cch__slab_pool_init(&s->http_slabs, WS_HTTP_BLOCK);
}

void ws_http_free_pool(ws_server *s)
{
    cch__free(s->http_spare);
    s->http_spare = NULL;
    cch__slab_pool_free(&s->http_slabs);
}

void ws_http_free(ws_conn *c)
{
    ws_http *h = c->http;
    if (!h)
        return;
    if (h->in_open) {
        h->free_pending = true; /* the connection died inside cch_conn_open */
        return;
    }
    if (h->fd >= 0)
        close(h->fd);
    c->http = NULL;
    http_give(c->srv, h);
}

/* Frees the request unless cch_conn_open is using it or a file is being sent. */
static void http_release(ws_conn *c)
{
    if (c->http && !c->http->in_open && c->http->fd < 0 && !(c->flags & WS_F_PENDING_INPUT))
        ws_http_free(c);
}

static void log_answer(ws_conn *c, int status)
{
    ws_server *s = c->srv;
    if (s->opts.log_level < CCH_LOG_INFO || !s->opts.log)
        return;
    char peer[64];
    ws_conn_peer(c, peer, sizeof peer);
    ws_http *h = c->http;
    if (h && h->url_len && h->complete) {
        const char *m = llhttp_method_name((llhttp_method_t)h->parser.method);
        ws_log(s, CCH_LOG_INFO, "%s %s %.*s %d", peer, m, (int)h->url_len, h->buf + h->url_off,
               status);
    } else {
        ws_log(s, CCH_LOG_INFO, "%s %d", peer, status);
    }
}

void ws_http_error(ws_conn *c, int status, const char *extra)
{
    if (c->state == WS_LINGER || c->state == WS_DEAD)
        return;
    ws_server *s = c->srv;
    if (status >= 400)
        s->stats.http_errors++;
    log_answer(c, status);
    char buf[512];
    const char *reason = ws_http_reason(status);
    int blen = (int)strlen(reason) + 5;
    bool head = c->http && c->http->complete && c->http->parser.method == HTTP_HEAD;
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n",
                     status, reason, blen, extra ? extra : "");
    if (n > 0 && (size_t)n < sizeof buf && !head)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%d %s\n", status, reason);
    if (n > 0 && (size_t)n < sizeof buf)
        ws_out_raw(c, buf, (size_t)n);
    ws_conn_linger(c);
    http_release(c);
}

/* ---- the handshake --------------------------------------------------------------- */

static const ws_hdr_span *find_header(ws_http *h, const char *name, int *count)
{
    const ws_hdr_span *found = NULL;
    size_t nl = strlen(name);
    int n = 0;
    for (uint32_t i = 0; i < h->n_hdr; i++) {
        const ws_hdr_span *sp = &h->hdr[i];
        if (sp->name_len == nl && strncasecmp(h->buf + sp->name_off, name, nl) == 0) {
            if (!found)
                found = sp;
            n++;
        }
    }
    if (count)
        *count = n;
    return found;
}

static void trim(const char **v, size_t *len)
{
    while (*len && (**v == ' ' || **v == '\t'))
        (*v)++, (*len)--;
    while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t'))
        (*len)--;
}

/* Splits the URL in place: path NUL-terminated, query after '?' (or NULL). Accepts
 * origin-form ("/a?b") and absolute-form ("http://host/a?b"). Returns false when the
 * target is not usable. */
static bool split_url(ws_http *h, char **path, char **query)
{
    char *u = h->buf + h->url_off;
    size_t len = h->url_len;
    /* The byte after the URL is the space before "HTTP/1.1": room for a NUL. */
    if (h->url_off + len >= h->len)
        return false;
    u[len] = '\0';
    if (len > 7 && (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0)) {
        char *p = strchr(u + (u[4] == ':' ? 7 : 8), '/');
        if (!p)
            return false;
        u = p;
    }
    if (u[0] != '/')
        return false;
    char *q = strchr(u, '?');
    if (q)
        *q++ = '\0';
    char *frag = strchr(q ? q : u, '#');
    if (frag)
        *frag = '\0';
    *path = u;
    *query = q;
    return true;
}

static void upgrade(ws_conn *c, char *path, char *query)
{
    ws_server *s = c->srv;
    ws_http *h = c->http;
    const ws_hdr_span *sp;
    int n;

    if (h->parser.method != HTTP_GET || h->parser.http_major != 1 || h->parser.http_minor < 1) {
        ws_http_error(c, 400, NULL);
        return;
    }
    if (!find_header(h, "Host", NULL) ||
        !(sp = find_header(h, "Connection", NULL)) ||
        !ws_header_has_token(h->buf + sp->value_off, sp->value_len, "upgrade")) {
        ws_http_error(c, 400, NULL);
        return;
    }
    sp = find_header(h, "Sec-WebSocket-Version", &n);
    if (!sp || n != 1) {
        ws_http_error(c, 400, "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    const char *v = h->buf + sp->value_off;
    size_t vl = sp->value_len;
    trim(&v, &vl);
    if (vl != 2 || memcmp(v, "13", 2) != 0) {
        ws_http_error(c, 426, "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    sp = find_header(h, "Sec-WebSocket-Key", &n);
    if (!sp || n != 1) {
        ws_http_error(c, 400, NULL);
        return;
    }
    v = h->buf + sp->value_off;
    vl = sp->value_len;
    trim(&v, &vl);
    if (!ws_key_valid(v, vl) || ws_accept_key(v, vl, h->accept_key) < 0) {
        ws_http_error(c, 400, NULL);
        return;
    }

    cch_header hdrs[WS_MAX_HEADERS];
    for (uint32_t i = 0; i < h->n_hdr; i++) {
        hdrs[i].name = h->buf + h->hdr[i].name_off;
        hdrs[i].name_len = h->hdr[i].name_len;
        hdrs[i].value = h->hdr[i].value_len ? h->buf + h->hdr[i].value_off : "";
        hdrs[i].value_len = h->hdr[i].value_len;
    }
    char host[64] = "";
    int port = 0;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    cch_request req = {
        .path = path,
        .query = query,
        .headers = hdrs,
        .n_headers = h->n_hdr,
        .client_host = host[0] ? host : NULL,
        .client_port = port,
    };
    h->in_open = true;
    cch_conn *cc = NULL;
    c->tcp.data = NULL;
    int rc = cch_conn_open(s->app, &req, &ws_transport, c, &cc);
    h->in_open = false;
    c->tcp.data = rc < 0 ? NULL : cc;
    if (h->free_pending || c->state == WS_DEAD) {
        /* Killed meanwhile (the server stopped from inside connect, say). */
        ws_http_free(c);
        return;
    }
    if (rc < 0) {
        ws_log(s, CCH_LOG_ERROR, "cannot open a connection for %s: %s", path, cch_strerror(rc));
        ws_http_error(c, 500, NULL);
        return;
    }
    if (c->state == WS_HTTP) {
        /* Undecided: stop reading until the consumer decides. */
        c->state = WS_DECIDING;
        if (c->flags & WS_F_READING) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->flags &= (uint16_t)~WS_F_READING;
        }
        return;
    }
    if (c->state == WS_OPEN && h->len > h->head_end) {
        c->flags |= WS_F_PENDING_INPUT;
        ws_mark_dirty(c);
        return;
    }
    http_release(c);
}

/* Called by the transport's accept: queues the 101 answer. */
int ws_http_accept(ws_conn *c, const char *subprotocol)
{
    ws_http *h = c->http;
    if (!h || (c->state != WS_HTTP && c->state != WS_DECIDING))
        return CCH_ESTATE;
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%s%s"
                     "\r\n",
                     h->accept_key, subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     subprotocol ? subprotocol : "", subprotocol ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof buf)
        return CCH_EINVAL;
    int rc = ws_out_raw(c, buf, (size_t)n);
    if (rc < 0) {
        /* No memory for the answer: no answer will do; drop the connection. */
        ws_log(c->srv, CCH_LOG_ERROR, "out of memory: dropping a connection in its handshake");
        ws_conn_kill(c);
        return CCH_ETRANSPORT;
    }
    log_answer(c, 101);
    bool was_deciding = c->state == WS_DECIDING;
    ws_conn_opened(c);
    if (was_deciding) {
        if (h->len > h->head_end) {
            c->flags |= WS_F_PENDING_INPUT;
            ws_mark_dirty(c);
        } else {
            http_release(c);
        }
    }
    return 0;
}

/* Called by the transport's reject. */
int ws_http_reject(ws_conn *c, int status)
{
    if (c->state != WS_HTTP && c->state != WS_DECIDING)
        return CCH_ESTATE;
    ws_http_error(c, status, NULL);
    return 0;
}

/* The bytes that followed the request head (a client that did not wait for 101). */
void ws_conn_pending_input(ws_conn *c)
{
    ws_http *h = c->http;
    c->flags &= (uint16_t)~WS_F_PENDING_INPUT;
    if (!h)
        return;
    if (c->state == WS_OPEN || c->state == WS_CLOSING) {
        /* Copy: the parser reads from the server's shared cursor, and h goes away. */
        size_t n = h->len - h->head_end;
        char *rest;
        if (h->buf == h->buf_inline) {
            rest = cch__malloc(n ? n : 1);
            if (!rest) {
                ws_conn_kill(c);
                return;
            }
            memcpy(rest, h->buf + h->head_end, n);
        } else {
            rest = h->buf;
            memmove(rest, h->buf + h->head_end, n);
            h->buf = h->buf_inline;
        }
        ws_http_free(c);
        ws_input_feed(c, (const uint8_t *)rest, n);
        cch__free(rest);
        return;
    }
    http_release(c);
}

static void request_complete(ws_conn *c)
{
    ws_http *h = c->http;
    char *path, *query;
    if (!split_url(h, &path, &query)) {
        ws_http_error(c, 400, NULL);
        return;
    }
    const ws_hdr_span *up = find_header(h, "Upgrade", NULL);
    if (up && ws_header_has_token(h->buf + up->value_off, up->value_len, "websocket")) {
        upgrade(c, path, query);
        return;
    }
    if (h->parser.method != HTTP_GET && h->parser.method != HTTP_HEAD) {
        ws_http_error(c, 405, "Allow: GET, HEAD\r\n");
        return;
    }
    if (h->parser.method == HTTP_HEAD)
        c->flags |= WS_F_HEAD_ONLY;
    ws_static_serve(c, path);
}

void ws_http_feed(ws_conn *c, const char *data, size_t len)
{
    ws_server *s = c->srv;
    ws_http *h = c->http;
    if (!h) {
        if (!(h = http_new(s))) {
            ws_conn_kill(c);
            return;
        }
        c->http = h;
    }
    if (h->complete)
        return; /* deciding or answering: more bytes wait */
    size_t max = s->opts.max_header_bytes;
    size_t take = len < max - h->len ? len : max - h->len;
    size_t need = h->len + len;
    if (need > h->cap) {
        size_t nc = 2 * (h->cap + 1);
        while (nc < need)
            nc *= 2;
        bool inl = h->buf == h->buf_inline;
        char *nb = cch__realloc(inl ? NULL : h->buf, nc + 1);
        if (!nb) {
            ws_http_error(c, 500, NULL);
            return;
        }
        if (inl)
            memcpy(nb, h->buf, h->len);
        h->buf = nb;
        h->cap = nc;
    }
    size_t start = h->len;
    memcpy(h->buf + start, data, take);
    h->len += take;
    llhttp_errno_t err = llhttp_execute(&h->parser, h->buf + start, take);
    if (err == HPE_PAUSED && h->complete) {
        h->head_end = (size_t)(llhttp_get_error_pos(&h->parser) - h->buf);
        memcpy(h->buf + h->len, data + take, len - take);
        h->len += len - take;
        h->buf[h->len] = '\0';
        request_complete(c);
        return;
    }
    if (err == HPE_OK) {
        if (h->len >= max) {
            s->stats.rejected_header_size++;
            ws_http_error(c, 431, NULL);
        }
        return;
    }
    if (h->too_many) {
        s->stats.rejected_header_size++;
        ws_http_error(c, 431, NULL);
        return;
    }
    ws_log(s, CCH_LOG_DEBUG, "bad request: %s", llhttp_get_error_reason(&h->parser));
    ws_http_error(c, err == HPE_INVALID_METHOD ? 405 : 400,
                  err == HPE_INVALID_METHOD ? "Allow: GET, HEAD\r\n" : NULL);
}

/* ---- static files: the state lives in ws_http ---------------------------------- */

void ws_http_set_file(ws_conn *c, int fd, uint64_t size)
{
    c->http->fd = fd;
    c->http->file_left = size;
}

bool ws_http_file_next(ws_conn *c, int *fd, uint64_t **left)
{
    if (!c->http || c->http->fd < 0)
        return false;
    *fd = c->http->fd;
    *left = &c->http->file_left;
    return true;
}

void ws_http_file_done(ws_conn *c)
{
    if (c->http && c->http->fd >= 0) {
        close(c->http->fd);
        c->http->fd = -1;
    }
    http_release(c);
}

void ws_http_release(ws_conn *c)
{
    http_release(c);
}
