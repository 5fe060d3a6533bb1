/* bench/epoll_room.c - the "machine's limit" reference of issue 5: a minimal plain-C
 * epoll WebSocket chat room, bench-only, no cchannels code (libc, and libcrypto for the
 * handshake's accept key). Every client of /ws/chat/<any room>/ joins one room; each
 * text frame {"message": "..."} is broadcast to every member as the example chat shapes
 * it, {"message": "...", "user": "<name>"} (name: ?name=... of the URL). Batching: a
 * frame is built once per message in a per-turn arena; each member keeps (offset,
 * length) ranges into it; at the end of the loop turn every dirty connection gets one
 * writev. Whatever the kernel does not take is copied to that connection's own buffer.
 *
 *   epoll_room [--host ADDR] [--port PORT]     (prints "listening on PORT" when ready)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 1024
#define MAX_PENDING (64u << 20) /* a client this far behind is dropped */
#define MAX_IN (1u << 20)       /* largest frame or request accepted */

typedef struct { size_t off, len; } range;
typedef struct conn {
    int fd;
    int ws;                   /* 0: reading the HTTP request; 1: WebSocket */
    int dead, dirty;
    size_t member;            /* index in room[] */
    char name[32];
    uint8_t *in; size_t in_len, in_cap;     /* unparsed input, only while some is left */
    uint8_t *out; size_t out_len, out_cap;  /* unsent output (own copy) */
    range *rg; size_t n_rg, cap_rg;         /* this turn's frames, in the arena */
} conn;

static conn **room, **dirty, **graves;
static size_t n_room, cap_room, n_dirty, cap_dirty, n_graves, cap_graves;
static uint8_t *arena, rbuf[65536];
static size_t arena_len, arena_cap;

static void *grow(void *p, size_t *cap, size_t need, size_t elt)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elt);
    if (!q) { perror("epoll_room: realloc"); exit(1); }
    *cap = c;
    return q;
}
#define PUSH(arr, n, cap, v) ((arr) = grow((arr), &(cap), (n) + 1, sizeof *(arr)), (arr)[(n)++] = (v))

static void mark_dirty(conn *c)
{
    if (!c->dirty && !c->dead) {
        c->dirty = 1;
        PUSH(dirty, n_dirty, cap_dirty, c);
    }
}

static void kill_conn(conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    close(c->fd);
    if (c->ws) {             /* leave the room: swap-remove */
        room[c->member] = room[--n_room];
        room[c->member]->member = c->member;
    }
    PUSH(graves, n_graves, cap_graves, c);
}

/* Appends a frame (opcode op, payload p[0..n)) to the arena; returns its offset. */
static size_t frame(int op, const void *p, size_t n)
{
    arena = grow(arena, &arena_cap, arena_len + n + 10, 1);
    size_t at = arena_len;
    uint8_t *h = arena + at;
    h[0] = (uint8_t)(0x80 | op);
    size_t hl = 2;
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h[1] = 126; h[2] = (uint8_t)(n >> 8); h[3] = (uint8_t)n; hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    memcpy(h + hl, p, n);
    arena_len += hl + n;
    return at;
}

/* Queues arena[off..off+len) for c, merged with its last range when adjacent. */
static void queue(conn *c, size_t off, size_t len)
{
    if (c->n_rg && c->rg[c->n_rg - 1].off + c->rg[c->n_rg - 1].len == off)
        c->rg[c->n_rg - 1].len += len;
    else
        PUSH(c->rg, c->n_rg, c->cap_rg, ((range){off, len}));
    mark_dirty(c);
}

/* One writev of everything c has pending; keeps (copies) what is not taken. */
static void flush(conn *c, int epfd)
{
    struct iovec iov[MAX_IOV];
    int n = 0;
    if (c->out_len)
        iov[n++] = (struct iovec){c->out, c->out_len};
    for (size_t i = 0; i < c->n_rg && n < MAX_IOV; i++)
        iov[n++] = (struct iovec){arena + c->rg[i].off, c->rg[i].len};
    ssize_t w = writev(c->fd, iov, n);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        kill_conn(c);
        return;
    }
    size_t done = w > 0 ? (size_t)w : 0, had = c->out_len;
    /* keep the rest: what is left of out, then the ranges not (fully) written */
    size_t skip = done;
    if (skip >= had) {
        skip -= had;
        c->out_len = 0;
    } else {
        memmove(c->out, c->out + skip, had - skip);
        c->out_len = had - skip;
        skip = 0;
    }
    for (size_t i = 0; i < c->n_rg; i++) {
        size_t len = c->rg[i].len, off = c->rg[i].off;
        if (skip >= len) { skip -= len; continue; }
        off += skip; len -= skip; skip = 0;
        c->out = grow(c->out, &c->out_cap, c->out_len + len, 1);
        memcpy(c->out + c->out_len, arena + off, len);
        c->out_len += len;
    }
    c->n_rg = 0;
    if (c->out_len > MAX_PENDING) {
        kill_conn(c);
        return;
    }
    if (!c->out_len && c->out_cap > 65536) {  /* give big buffers back once drained */
        free(c->out); c->out = NULL; c->out_cap = 0;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Copies the JSON string literal after "message": in p[0..n) (escapes kept). */
static int message_text(const uint8_t *p, size_t n, const uint8_t **s, size_t *len)
{
    const uint8_t *q = memmem(p, n, "\"message\"", 9), *end = p + n;
    if (!q)
        return -1;
    for (q += 9; q < end && (*q == ' ' || *q == ':' || *q == '\t'); q++) {}
    if (q >= end || *q++ != '"')
        return -1;
    const uint8_t *b = q;
    while (q < end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= end)
        return -1;
    *s = b;
    *len = (size_t)(q - b);
    return 0;
}

static void broadcast(conn *from, const uint8_t *p, size_t n)
{
    const uint8_t *s;
    size_t len;
    char buf[4096];
    if (message_text(p, n, &s, &len) < 0 || len + sizeof from->name + 32 > sizeof buf)
        return;
    int k = snprintf(buf, sizeof buf, "{\"message\": \"%.*s\", \"user\": \"%s\"}", (int)len,
                     (const char *)s, from->name);
    size_t off = frame(1, buf, (size_t)k), flen = arena_len - off;
    for (size_t i = 0; i < n_room; i++)
        queue(room[i], off, flen);
}

/* The HTTP upgrade request in c->in; returns bytes used, 0 if incomplete, -1 bad. */
static long handshake(conn *c)
{
    uint8_t *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!e)
        return c->in_len > 8192 ? -1 : 0;
    *e = '\0';
    char *req = (char *)c->in, *key = NULL;
    if (strncmp(req, "GET /ws/chat/", 13) != 0)
        return -1;
    char *nm = strstr(req, "name="), *sp = strchr(req + 4, ' ');
    snprintf(c->name, sizeof c->name, "anon");
    if (nm && sp && nm < sp) {
        size_t l = strcspn(nm + 5, "& ");
        snprintf(c->name, sizeof c->name, "%.*s", (int)(l < 31 ? l : 31), nm + 5);
    }
    for (char *l = strstr(req, "\r\n"); l; l = strstr(l + 2, "\r\n"))
        if (!strncasecmp(l + 2, "Sec-WebSocket-Key:", 18)) {
            key = l + 20;
            while (*key == ' ')
                key++;
            break;
        }
    if (!key)
        return -1;
    char kb[128];
    unsigned char md[EVP_MAX_MD_SIZE], acc[64];
    unsigned mdl = 0;
    int kl = snprintf(kb, sizeof kb, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                      (int)strcspn(key, " \r"), key);
    if (kl <= 0 || kl >= (int)sizeof kb || !EVP_Digest(kb, (size_t)kl, md, &mdl, EVP_sha1(), NULL))
        return -1;
    EVP_EncodeBlock(acc, md, (int)mdl);
    char resp[256];
    int rl = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", (char *)acc);
    size_t off = arena_len;
    arena = grow(arena, &arena_cap, arena_len + (size_t)rl, 1);
    memcpy(arena + off, resp, (size_t)rl);
    arena_len += (size_t)rl;
    queue(c, off, (size_t)rl);
    c->ws = 1;
    c->member = n_room;
    PUSH(room, n_room, cap_room, c);
    return (long)(e + 4 - c->in);
}

/* Parses WebSocket frames in p[0..n); returns bytes used (a partial frame is left). */
static size_t frames(conn *c, uint8_t *p, size_t n)
{
    size_t used = 0;
    while (!c->dead && n - used >= 6) {
        uint8_t *f = p + used;
        int op = f[0] & 0x0f;
        size_t len = f[1] & 0x7f, hl = 2;
        if (!(f[1] & 0x80) || !(f[0] & 0x80)) {   /* unmasked, or fragmented: not here */
            kill_conn(c);
            break;
        }
        if (len == 126) {
            len = (size_t)f[2] << 8 | f[3]; hl = 4;
        } else if (len == 127) {
            if (n - used < 14) break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (len > MAX_IN) { kill_conn(c); break; }
        if (n - used < hl + 4 + len)
            break;
        uint8_t *m = f + hl, *d = m + 4;
        for (size_t i = 0; i < len; i++)
            d[i] ^= m[i & 3];
        used += hl + 4 + len;
        if (op == 1)
            broadcast(c, d, len);
        else if (op == 9) {
            size_t off = frame(10, d, len);
            queue(c, off, arena_len - off);
        } else if (op == 8) {
            size_t off = frame(8, d, len < 2 ? len : 2);
            queue(c, off, arena_len - off);
            flush(c, -1);
            kill_conn(c);
        }
    }
    return used;
}

static void on_readable(conn *c)
{
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        kill_conn(c);
        return;
    }
    if (r < 0)
        return;
    uint8_t *p = rbuf;
    size_t n = (size_t)r;
    if (c->in_len || !c->ws) {   /* leftover, or the request: parse in c->in */
        c->in = grow(c->in, &c->in_cap, c->in_len + n + 1, 1);
        memcpy(c->in + c->in_len, rbuf, n);
        c->in_len += n;
        p = c->in;
        n = c->in_len;
    }
    size_t used = 0;
    if (!c->ws) {
        long h = handshake(c);
        if (h < 0) { kill_conn(c); return; }
        used = (size_t)h;
    }
    if (c->ws)
        used += frames(c, p + used, n - used);
    if (c->dead)
        return;
    size_t left = n - used;
    if (left > MAX_IN + 14) { kill_conn(c); return; }
    if (left)
        memmove(c->in ? c->in : (c->in = grow(NULL, &c->in_cap, left, 1)), p + used, left);
    c->in_len = left;
    if (!left && c->in) {   /* no buffer while nothing is pending */
        free(c->in); c->in = NULL; c->in_cap = 0;
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 8000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof sa;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || bind(ls, (struct sockaddr *)&sa, sizeof sa) ||
        listen(ls, 4096) || getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("epoll_room: listen");
        return 1;
    }
    printf("listening on %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[1024];
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int k = epoll_wait(epfd, evs, 1024, -1);
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    c = calloc(1, sizeof *c);
                    if (!c) { close(fd); continue; }
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (c->dead)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
            if (!c->dead && (evs[i].events & EPOLLOUT))
                mark_dirty(c);
        }
        for (size_t i = 0; i < n_dirty; i++) {   /* the batch: one writev each */
            dirty[i]->dirty = 0;
            if (!dirty[i]->dead)
                flush(dirty[i], epfd);
        }
        n_dirty = 0;
        arena_len = 0;
        for (size_t i = 0; i < n_graves; i++) {
            free(graves[i]->in); free(graves[i]->out); free(graves[i]->rg); free(graves[i]);
        }
        n_graves = 0;
    }
}
