/* bench/loadgen.c - a WebSocket load generator for chat-room benchmarks (issues 3, 5).
 *
 * Opens N client connections to one URL (default ws://127.0.0.1:8000/ws/chat/bench/,
 * each with ?name=c<i> appended), S of which are senders. A sender sends chat
 * messages {"message": "<ts>:<id>:<seq>:pad..."} (ts: CLOCK_MONOTONIC ns at sending,
 * id: the sender's index, seq: its message number) and keeps up to F of them in
 * flight: a message is in flight until the sender receives its own copy back
 * through the room. Every client counts the bench messages it receives (others, such
 * as the chat's join notices, are counted apart and otherwise ignored), checks that
 * each sender's messages arrive in order and none is skipped ("missing": a server
 * that drops messages, e.g. for a full channel), and records their latency (receive
 * time minus the carried ts) in a log-bucket histogram (32 buckets per power of two,
 * about 3% resolution; no allocation per message). A sender whose own copy never
 * comes back counts it "lost" (at the next later one, or after --stall) and goes on.
 *
 * Phases: connect (at most --connect-concurrency handshakes pending per thread);
 * settle (until nothing has arrived for --settle: the chat's join notices); then
 * the senders start: a warm-up, then the measured window. Only deliveries received
 * inside the window count. Reports deliveries/s, latency percentiles, the client's
 * CPU time per delivery (getrusage), and, with --server-pid, the server's CPU time
 * per delivery (utime+stime from /proc/PID/stat) and RSS (VmRSS, before connecting
 * and at the end; with idle clients, -s 0, that gives RSS per connection); then one
 * JSON line.
 *
 * Cheap by construction: one epoll loop per thread, level-triggered, one read of up
 * to 64 KiB (more for big messages) per readable socket per loop turn into a buffer
 * shared by the thread's connections; frames are parsed in place and only a
 * trailing partial frame is copied aside; messages too big to be ours are skipped
 * unread. A sender writes all the messages it may send in one write. With --rate R
 * a sender also keeps to R messages per second (an open-loop schedule, still capped
 * at F in flight), so that a server can be measured at a given load. With
 * --src-ips K the clients bind to 127.0.0.1 .. 127.0.0.K (IP_BIND_ADDRESS_NO_PORT,
 * before connect), so more than 60 000 connections fit; --threads spreads the
 * clients over several loops.
 *
 * Needs only libc and pthreads (and the library's SHA-1, lib/ws/sha1.c, compiled in
 * to check accept keys). Exit status 0; 1 when any error was seen (a failed
 * connection or handshake, a close or EOF from the server, a protocol error, a
 * missing, reordered or lost message); 2 for a usage error. --help lists options. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "sha1.h" /* lib/ws/sha1.c, compiled in */

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_PIDS 8
#define EVENTS_MAX 1024
#define READ_BUF_MIN (64u * 1024u)
#define MAX_RESPONSE_HEAD 16384u
#define MAX_TRACKED_PAIRS (64u * 1024u * 1024u)   /* expected-seq cells (4 bytes each) */

/* ---- configuration ---------------------------------------------------------------- */

static struct config {
    const char *url;
    char host[256];              /* as in the URL, for the Host header */
    char port_str[8];
    char path[1024];             /* path and query, without the name parameter */
    bool add_name;
    size_t clients, senders, inflight, size, threads, src_ips, concurrency;
    double warmup_s, duration_s, connect_timeout_s, settle_s, stall_s;
    double rate;                 /* messages per second per sender; 0: as fast as F allows */
    pid_t pids[MAX_PIDS];
    int n_pids;
    uint16_t ports[MAX_PIDS];    /* --ports: client i connects to ports[i % n_ports] */
    int n_ports;
    bool json_only;
    const char *label;
    struct sockaddr_storage addr;
    socklen_t addr_len;
} cfg = {
    .url = "ws://127.0.0.1:8000/ws/chat/bench/",
    .add_name = true,
    .clients = 10, .senders = 1, .inflight = 16, .size = 32, .threads = 1,
    .concurrency = 256, .warmup_s = 1.0, .duration_s = 5.0, .connect_timeout_s = 30.0,
    .settle_s = 0.2, .stall_s = 1.0,
};

static const char usage[] =
    "Usage: %s [OPTIONS]\n"
    "A WebSocket chat-room load generator: N clients in one room, S of them senders.\n"
    "\n"
    "  -u, --url URL               ws://HOST:PORT/PATH (default\n"
    "                              ws://127.0.0.1:8000/ws/chat/bench/)\n"
    "  -c, --clients N             connections (default 10)\n"
    "  -s, --senders S             how many of them send (default 1; 0: idle clients)\n"
    "  -f, --inflight F            messages in flight per sender (default 16)\n"
    "  -r, --rate R                at most R messages per second per sender, evenly\n"
    "                              spaced (default: no limit but --inflight)\n"
    "  -m, --size BYTES            message text length (default 32; longer if the\n"
    "                              timestamp, id and sequence number need more)\n"
    "  -w, --warmup SECS           warm-up before measuring (default 1)\n"
    "  -d, --duration SECS         measured window (default 5)\n"
    "  -t, --threads T             client threads (default 1)\n"
    "      --src-ips K             bind clients to 127.0.0.1 .. 127.0.0.K (round robin)\n"
    "                              so that more than ~28 000 connections fit\n"
    "      --no-name               do not append ?name=c<i> to the URL\n"
    "      --connect-concurrency P handshakes pending at once per thread (default 256)\n"
    "      --connect-timeout SECS  give up on connections not open by then (default 30)\n"
    "      --settle SECS           once all are open, wait until nothing has arrived for\n"
    "                              this long (join notices; at most 30 s) before the\n"
    "                              senders start (default 0.2)\n"
    "      --stall SECS            a sender whose messages have not come back for this\n"
    "                              long counts them lost and sends again (default 1)\n"
    "      --server-pid PID[,PID]  sample these processes' CPU time and RSS\n"
    "      --ports P[,P...]        spread the clients over these ports of the URL's host\n"
    "                              (client i: the (i mod K)-th; e.g. several servers)\n"
    "      --label TEXT            copied into the JSON line\n"
    "      --json                  print only the JSON line\n"
    "  -h, --help                  this help\n";

/* ---- small helpers ---------------------------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static _Atomic unsigned n_error_lines;

/* Prints the first few error descriptions on stderr (they are counted anyway). */
static void note(const char *fmt, ...)
{
    if (atomic_fetch_add(&n_error_lines, 1) >= 10)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Writes `v` in decimal at `p`; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* ---- SHA-1 and base64, for the handshake ------------------------------------------ */

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = tbl[v >> 18];
        *out++ = tbl[(v >> 12) & 63];
        *out++ = tbl[(v >> 6) & 63];
        *out++ = tbl[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = tbl[v >> 18];
        *out++ = tbl[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = tbl[v >> 18];
        *out++ = tbl[(v >> 12) & 63];
        *out++ = tbl[(v >> 6) & 63];
        *out++ = '=';
    }
    *out = '\0';
}

/* The Sec-WebSocket-Accept value for `key` (RFC 6455, 4.2.2): 28 characters. */
static void accept_value(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[64 + sizeof guid];
    size_t k = strlen(key);
    memcpy(buf, key, k);
    memcpy(buf + k, guid, sizeof guid - 1);
    uint8_t digest[20];
    ws_sha1(buf, k + sizeof guid - 1, digest);
    base64(digest, 20, out);
}

/* ---- latency histogram ------------------------------------------------------------ */

/* Values below 64 ns have a bucket each; above, 32 buckets per power of two. */
#define H_SUB_BITS 5
#define H_SUB (1u << H_SUB_BITS)
#define H_BUCKETS ((64 - H_SUB_BITS) * H_SUB)

static inline unsigned h_index(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - H_SUB_BITS;
    return (shift + 1) * H_SUB + (unsigned)((v >> shift) - H_SUB);
}

/* The middle of bucket `i`, in ns. */
static double h_value(unsigned i)
{
    if (i < 2 * H_SUB)
        return i;
    unsigned shift = i / H_SUB - 1;
    uint64_t lo = (uint64_t)(H_SUB + i % H_SUB) << shift;
    return (double)lo + (double)((uint64_t)1 << shift) / 2.0;
}

/* The `q` quantile of the histogram, in ns (0 when empty). */
static double h_quantile(const uint64_t *h, uint64_t total, double q)
{
    if (!total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h[i];
        if (seen >= rank)
            return h_value(i);
    }
    return h_value(H_BUCKETS - 1);
}

/* ---- connections and workers ------------------------------------------------------ */

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSED };

typedef struct conn {
    int fd;
    uint8_t state;
    bool sender;
    bool want_out;               /* EPOLLOUT registered */
    uint32_t id;                 /* client index; senders are 0 .. S-1 */
    uint32_t inflight;           /* sender: messages sent, own copy not back yet */
    uint32_t rlen, rcap;         /* leftover: a partial frame or response head */
    uint32_t wlen, wcap;         /* bytes the socket did not take yet */
    uint64_t seq;                /* sender: next message number */
    uint64_t skip;               /* payload bytes of an oversized frame to skip */
    uint64_t deliveries;         /* bench messages received, whole run */
    uint64_t progress;           /* sender: when its in-flight set last changed */
    uint64_t rate_t0;            /* sender with --rate: when its schedule started */
    uint64_t rate_sent;          /* sender with --rate: messages sent on it */
    char *rbuf, *wbuf;
    char key[25];                /* Sec-WebSocket-Key */
} conn;

typedef struct worker {
    size_t index;
    int epfd;
    pthread_t thread;
    size_t next;                 /* next client index to connect */
    size_t pending;              /* connecting or in the handshake */
    uint8_t *buf;                /* read buffer shared by the worker's connections */
    size_t cap;
    char *sbuf;                  /* sender scratch: F frames */
    uint32_t *expect;            /* [local client][sender]: next seq, or NULL */
    uint32_t rng;
    bool sending;
    uint64_t stall_check;        /* when senders were last checked for lost messages */
    /* counters (deliveries, others, sends, reads: inside the window only) */
    uint64_t deliveries, others, sends, reads, bytes_in;
    _Atomic uint64_t last_rx;    /* when a read last returned data */
    uint64_t lost;               /* own messages that never came back */
    uint64_t missing, reordered, connect_failed, handshake_failed, closed_by_server;
    uint64_t protocol_errors, eof;
    uint64_t hist[H_BUCKETS];
} worker;

static conn *conns;
static worker *workers;
static size_t frame_max;          /* largest frame a sender builds */

enum { PH_CONNECT, PH_SETTLE, PH_RUN, PH_DONE };
static _Atomic int g_phase = PH_CONNECT;
static _Atomic size_t g_opened, g_failed;
static _Atomic uint64_t g_t_measure, g_t_end;
static uint64_t g_connect_deadline, g_t_opened, g_t_run;
static volatile sig_atomic_t g_stop;

/* Samples taken by worker 0 at the window's edges. */
typedef struct sample {
    uint64_t t;
    double cpu_s;                 /* this process: user + system */
    double srv_cpu_s;             /* the servers: utime + stime */
    double machine_busy_s;        /* every CPU's non-idle time (/proc/stat) */
    long srv_rss_kb;
} sample;
static sample s_begin, s_start, s_end;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static inline uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void set_events(worker *w, conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u), .data.ptr = c};
    if (out != c->want_out && epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = out;
}

/* Closes `c`. A connection that had not opened yet counts as failed. */
static void conn_close(worker *w, conn *c)
{
    if (c->state == C_CLOSED || c->state == C_IDLE)
        return;
    if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) {
        w->pending--;
        atomic_fetch_add(&g_failed, 1);
    }
    close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
    free(c->rbuf);
    free(c->wbuf);
    c->rbuf = c->wbuf = NULL;
    c->rlen = c->rcap = c->wlen = c->wcap = 0;
}

/* Sends `n` bytes, keeping what the socket does not take for EPOLLOUT. */
static void conn_send(worker *w, conn *c, const void *data, size_t n)
{
    const char *p = data;
    if (!c->wlen) {
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            note("client %u: send: %s", c->id, strerror(errno));
            w->eof++;
            conn_close(w, c);
            return;
        }
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        }
        if (!n)
            return;
    }
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 256;
        while (cap < c->wlen + n)
            cap *= 2;
        char *nb = realloc(c->wbuf, cap);
        if (!nb) {
            note("out of memory");
            exit(1);
        }
        c->wbuf = nb;
        c->wcap = (uint32_t)cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += (uint32_t)n;
    set_events(w, c, true);
}

static void conn_flush(worker *w, conn *c)
{
    if (!c->wlen) {
        set_events(w, c, false);
        return;
    }
    ssize_t r = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        note("client %u: send: %s", c->id, strerror(errno));
        w->eof++;
        conn_close(w, c);
        return;
    }
    memmove(c->wbuf, c->wbuf + r, c->wlen - (size_t)r);
    c->wlen -= (uint32_t)r;
    if (!c->wlen)
        set_events(w, c, false);
}

/* Builds one masked client frame of `opcode` carrying the `len` bytes at `payload` at
 * `out` (`payload` may already sit where the frame's payload goes: right after the
 * header, see frame_header_len). Returns the frame length. */
static size_t put_frame(worker *w, uint8_t *out, unsigned opcode, const uint8_t *payload,
                        size_t len)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key = xorshift32(&w->rng);
    uint8_t mask[4];
    memcpy(mask, &key, 4);
    memcpy(out + h, mask, 4);
    h += 4;
    uint8_t *dst = out + h;
    if (payload != dst)
        memmove(dst, payload, len);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t v;
        memcpy(&v, dst + i, 4);
        v ^= key;
        memcpy(dst + i, &v, 4);
    }
    for (; i < len; i++)
        dst[i] ^= mask[i & 3];
    return h + len;
}

/* The length of a frame header for a client frame of `len` payload bytes. */
static size_t frame_header_len(size_t len)
{
    return (len < 126 ? 2 : len < 65536 ? 4 : 10) + 4;
}

/* Sends as many messages as `c` may have in flight, in one write. */
static void top_up(worker *w, conn *c, uint64_t now, bool counting)
{
    if (c->state != C_OPEN || !c->sender || !w->sending || c->inflight >= cfg.inflight)
        return;
    size_t k = cfg.inflight - c->inflight;
    now = now_ns();                     /* the send time the messages carry */
    if (cfg.rate > 0) {
        if (!c->rate_t0)
            c->rate_t0 = now;
        uint64_t due = (uint64_t)((double)(now - c->rate_t0) * cfg.rate / 1e9) + 1;
        if (due <= c->rate_sent)
            return;
        if (due - c->rate_sent < k)
            k = (size_t)(due - c->rate_sent);
        c->rate_sent += k;
    }
    uint8_t *p = (uint8_t *)w->sbuf;
    for (size_t i = 0; i < k; i++) {
        /* the payload is built where put_frame will leave it, then masked in place */
        char text[64];
        char *t = put_u64(text, now);
        *t++ = ':';
        t = put_u64(t, c->id);
        *t++ = ':';
        t = put_u64(t, c->seq++);
        *t++ = ':';
        size_t tlen = (size_t)(t - text);
        size_t body = tlen < cfg.size ? cfg.size : tlen;
        size_t plen = 13 + body + 2;
        uint8_t *pl = p + frame_header_len(plen);
        memcpy(pl, "{\"message\": \"", 13);
        memcpy(pl + 13, text, tlen);
        memset(pl + 13 + tlen, 'x', body - tlen);
        memcpy(pl + 13 + body, "\"}", 2);
        p += put_frame(w, p, 1, pl, plen);
    }
    c->inflight += (uint32_t)k;
    c->progress = now;
    if (counting)
        w->sends += k;
    conn_send(w, c, w->sbuf, (size_t)(p - (uint8_t *)w->sbuf));
}

/* Reads a decimal number followed by ':' at *q. */
static inline bool parse_num(const uint8_t **q, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *q;
    uint64_t v = 0;
    const uint8_t *start = p;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 20)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == start || p >= end || *p != ':')
        return false;
    *q = p + 1;
    *out = v;
    return true;
}

/* A text message: a bench message, or something else (notices, errors). */
static inline void on_text(worker *w, conn *c, const uint8_t *s, size_t len, uint64_t now,
                           bool counting)
{
    const uint8_t *end = s + len, *q;
    if (len > 13 && !memcmp(s, "{\"message\":", 11)) {
        q = s + 11;
    } else {
        q = memmem(s, len, "\"message\":", 10);
        if (!q)
            goto other;
        q += 10;
    }
    while (q < end && *q == ' ')
        q++;
    if (q >= end || *q != '"')
        goto other;
    q++;
    uint64_t ts, id, seq;
    if (!parse_num(&q, end, &ts) || !parse_num(&q, end, &id) || !parse_num(&q, end, &seq) ||
        id >= cfg.senders)
        goto other;
    c->deliveries++;
    if (counting) {
        w->deliveries++;
        w->hist[h_index(now > ts ? now - ts : 0)]++;
    }
    if (w->expect) {
        uint32_t *e = &w->expect[(size_t)(c->id / cfg.threads) * cfg.senders + id];
        if ((uint32_t)seq != *e) {
            if (!w->missing && !w->reordered)
                note("client %u: from sender %" PRIu64 " got message %" PRIu64
                     ", expected %u", c->id, id, seq, *e);
            if ((uint32_t)seq > *e)
                w->missing += (uint32_t)seq - *e;   /* skipped: never to come */
            else
                w->reordered++;
        }
        if ((uint32_t)seq >= *e)
            *e = (uint32_t)seq + 1;
    }
    if (id == c->id && c->sender && seq < c->seq) {
        /* the room keeps each sender's order: whatever was sent before `seq` and is
         * still in flight was dropped on the way (e.g. a full channel) */
        uint64_t after = c->seq - 1 - seq;       /* sent after it: still in flight */
        if (c->inflight > after) {
            w->lost += c->inflight - after - 1;
            c->inflight = (uint32_t)after;
        }
        c->progress = now;
    }
    return;
other:
    if (counting)
        w->others++;
}

static void protocol_error(worker *w, conn *c, const char *what)
{
    note("client %u: protocol error: %s", c->id, what);
    w->protocol_errors++;
    conn_close(w, c);
}

/* Parses the frames in p[0..n). Returns the bytes used; a trailing partial frame is
 * left. `c` may be closed on return (a close frame, a protocol error). */
static size_t parse_frames(worker *w, conn *c, const uint8_t *p, size_t n, uint64_t now,
                           bool counting)
{
    size_t off = 0;
    if (c->skip) {
        size_t k = c->skip < n ? (size_t)c->skip : n;
        c->skip -= k;
        off = k;
    }
    while (n - off >= 2) {
        const uint8_t *f = p + off;
        size_t avail = n - off, hdr = 2;
        uint64_t len = f[1] & 0x7f;
        unsigned op = f[0] & 0x0f;
        if (f[1] & 0x80) {
            protocol_error(w, c, "masked frame from the server");
            return n;
        }
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | f[i];
            hdr = 10;
        }
        if (op >= 8 && (len > 125 || !(f[0] & 0x80))) {
            protocol_error(w, c, "bad control frame");
            return n;
        }
        if (hdr + len > avail) {
            if (hdr + len <= w->cap / 2)
                break;                  /* partial: wait for the rest */
            if (counting && op != 0)
                w->others++;            /* too big to be ours: skip it */
            c->skip = hdr + len - avail;
            return n;
        }
        const uint8_t *pl = f + hdr;
        switch (op) {
        case 1: on_text(w, c, pl, (size_t)len, now, counting); break;
        case 0: break;
        case 2:
            if (counting)
                w->others++;
            break;
        case 8: {
            unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
            if (atomic_load_explicit(&g_phase, memory_order_relaxed) != PH_DONE) {
                note("client %u: closed by the server with %u %.*s", c->id, code,
                     len > 2 ? (int)len - 2 : 0, (const char *)pl + 2);
                w->closed_by_server++;
            }
            uint8_t out[16], body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
            size_t fl = put_frame(w, out, 8, body, code == 1005 ? 0 : 2);
            (void)send(c->fd, out, fl, MSG_NOSIGNAL | MSG_DONTWAIT);
            conn_close(w, c);
            return n;
        }
        case 9: {
            uint8_t out[140];
            size_t fl = put_frame(w, out, 10, pl, (size_t)len);
            conn_send(w, c, out, fl);
            if (c->state == C_CLOSED)
                return n;
            break;
        }
        case 10: break;
        default: protocol_error(w, c, "unknown opcode"); return n;
        }
        off += hdr + (size_t)len;
    }
    return off;
}

/* The 101 answer. Returns the bytes of the head (0: incomplete), or -1 after closing
 * `c` for a failed handshake. */
static long parse_response(worker *w, conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_RESPONSE_HEAD) {
            note("client %u: response head too long", c->id);
            w->handshake_failed++;
            conn_close(w, c);
            return -1;
        }
        return 0;
    }
    size_t head = (size_t)(end - p) + 4;
    const char *s = (const char *)p;
    if (head < 12 || memcmp(s, "HTTP/1.1 101", 12) != 0) {
        const char *eol = memchr(s, '\r', head);
        note("client %u: handshake refused: %.*s", c->id, (int)(eol ? eol - s : 0), s);
        w->handshake_failed++;
        conn_close(w, c);
        return -1;
    }
    char want[29];
    accept_value(c->key, want);
    bool ok = false;
    const char *l = s;
    while ((l = memchr(l, '\n', (size_t)(s + head - l))) != NULL && ++l < s + head) {
        static const char name[] = "sec-websocket-accept:";
        if ((size_t)(s + head - l) > sizeof name && !strncasecmp(l, name, sizeof name - 1)) {
            const char *v = l + sizeof name - 1;
            while (*v == ' ' || *v == '\t')
                v++;
            ok = !strncmp(v, want, 28) && (v[28] == '\r' || v[28] == ' ' || v[28] == '\t');
            break;
        }
    }
    if (!ok) {
        note("client %u: missing or wrong Sec-WebSocket-Accept", c->id);
        w->handshake_failed++;
        conn_close(w, c);
        return -1;
    }
    c->state = C_OPEN;
    w->pending--;
    atomic_fetch_add(&g_opened, 1);
    return (long)head;
}

/* One read, then everything that can be parsed; keeps a trailing partial frame. */
static void on_readable(worker *w, conn *c, bool running)
{
    size_t have = c->rlen;
    if (have)
        memcpy(w->buf, c->rbuf, have);
    ssize_t r = read(c->fd, w->buf + have, w->cap - have);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (atomic_load_explicit(&g_phase, memory_order_relaxed) != PH_DONE) {
            if (c->state == C_HANDSHAKE) {
                note("client %u: connection closed during the handshake%s%s", c->id,
                     r ? ": " : "", r ? strerror(errno) : "");
                w->handshake_failed++;
            } else {
                note("client %u: connection closed by the server%s%s", c->id, r ? ": " : "",
                     r ? strerror(errno) : "");
                w->eof++;
            }
        }
        conn_close(w, c);
        return;
    }
    uint64_t now = now_ns();
    atomic_store_explicit(&w->last_rx, now, memory_order_relaxed);
    bool counting = running && now >= atomic_load_explicit(&g_t_measure, memory_order_relaxed) &&
                    now < atomic_load_explicit(&g_t_end, memory_order_relaxed);
    if (counting) {
        w->reads++;
        w->bytes_in += (uint64_t)r;
    }
    size_t n = have + (size_t)r, used = 0;
    if (c->state == C_HANDSHAKE) {
        long h = parse_response(w, c, w->buf, n);
        if (h <= 0) {
            if (h == 0)
                goto keep;
            return;
        }
        used = (size_t)h;
        if (running && c->sender)
            top_up(w, c, now, false);
    }
    used += parse_frames(w, c, w->buf + used, n - used, now, counting);
    if (c->state == C_CLOSED)
        return;
keep:
    if (n - used > c->rcap) {
        char *nb = realloc(c->rbuf, n - used);
        if (!nb) {
            note("out of memory");
            exit(1);
        }
        c->rbuf = nb;
        c->rcap = (uint32_t)(n - used);
    }
    if (n > used)
        memcpy(c->rbuf, w->buf + used, n - used);
    c->rlen = (uint32_t)(n - used);
    if (running && c->sender)
        top_up(w, c, now, counting);
}

static void start_connect(worker *w, conn *c)
{
    c->state = C_CONNECTING;
    w->pending++;
    int fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->fd = fd;
    if (fd < 0) {
        note("client %u: socket: %s", c->id, strerror(errno));
        w->connect_failed++;
        w->pending--;
        atomic_fetch_add(&g_failed, 1);
        c->state = C_CLOSED;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (cfg.src_ips && cfg.addr.ss_family == AF_INET) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->id % cfg.src_ips));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            note("client %u: bind: %s", c->id, strerror(errno));
            w->connect_failed++;
            conn_close(w, c);
            return;
        }
    }
    struct sockaddr_storage dst = cfg.addr;
    if (cfg.n_ports && dst.ss_family == AF_INET)
        ((struct sockaddr_in *)&dst)->sin_port = htons(cfg.ports[c->id % (unsigned)cfg.n_ports]);
    else if (cfg.n_ports && dst.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&dst)->sin6_port = htons(cfg.ports[c->id % (unsigned)cfg.n_ports]);
    if (connect(fd, (struct sockaddr *)&dst, cfg.addr_len) < 0 && errno != EINPROGRESS) {
        note("client %u: connect: %s%s", c->id, strerror(errno),
             errno == EADDRNOTAVAIL ? " (out of source ports: try --src-ips)" : "");
        w->connect_failed++;
        conn_close(w, c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        note("client %u: epoll_ctl: %s", c->id, strerror(errno));
        w->connect_failed++;
        conn_close(w, c);
        return;
    }
    c->want_out = true;
}

/* The TCP connection is up (or failed): send the upgrade request. */
static void on_connected(worker *w, conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        note("client %u: connect: %s%s", c->id, strerror(err),
             err == EADDRNOTAVAIL ? " (out of source ports: try --src-ips)" : "");
        w->connect_failed++;
        conn_close(w, c);
        return;
    }
    uint8_t raw[16];
    for (int i = 0; i < 4; i++) {
        uint32_t v = xorshift32(&w->rng);
        memcpy(raw + 4 * i, &v, 4);
    }
    base64(raw, 16, c->key);
    char name[32] = "";
    if (cfg.add_name)
        snprintf(name, sizeof name, "%sname=c%u", strchr(cfg.path, '?') ? "&" : "?", c->id);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s%s HTTP/1.1\r\n"
                     "Host: %s:%s\r\n"
                     "Origin: http://%s:%s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     cfg.path, name, cfg.host, cfg.port_str, cfg.host, cfg.port_str, c->key);
    c->state = C_HANDSHAKE;
    c->want_out = true;
    set_events(w, c, false);
    conn_send(w, c, req, (size_t)n);
}

/* Fails every connection of `w` still connecting or in its handshake. */
static void expire_pending(worker *w)
{
    for (size_t i = w->index; i < w->next; i += cfg.threads) {
        conn *c = &conns[i];
        if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) {
            note("client %u: not open after %.0f s", c->id, cfg.connect_timeout_s);
            if (c->state == C_CONNECTING)
                w->connect_failed++;
            else
                w->handshake_failed++;
            conn_close(w, c);
        }
    }
}

/* ---- server process sampling ------------------------------------------------------ */

static bool proc_cpu(pid_t pid, double *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return false;
    *out = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    return true;
}

static long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The CPU time the whole machine spent busy so far (all CPUs), in seconds. */
static double machine_busy(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return 0;
    /* user nice system idle iowait irq softirq steal: all but idle and iowait */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static void take_sample(sample *s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->t = now_ns();
    s->cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    s->srv_cpu_s = 0;
    s->srv_rss_kb = 0;
    s->machine_busy_s = machine_busy();
    for (int i = 0; i < cfg.n_pids; i++) {
        double cpu = 0;
        long rss = proc_rss_kb(cfg.pids[i]);
        if (proc_cpu(cfg.pids[i], &cpu))
            s->srv_cpu_s += cpu;
        if (rss > 0)
            s->srv_rss_kb += rss;
    }
}

/* ---- the worker loop -------------------------------------------------------------- */

static void begin_run(uint64_t now)
{
    uint64_t start = now + (uint64_t)(cfg.warmup_s * 1e9);
    g_t_run = now;
    atomic_store(&g_t_measure, start);
    atomic_store(&g_t_end, start + (uint64_t)(cfg.duration_s * 1e9));
    atomic_store(&g_phase, PH_RUN);
}

static void *worker_run(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[EVENTS_MAX];
    bool started = false, ended = false;
    for (;;) {
        uint64_t now = now_ns();
        int phase = atomic_load(&g_phase);
        int timeout = 10;
        if (g_stop && w->index == 0) {          /* Ctrl-C: end the window now */
            if (phase == PH_CONNECT || phase == PH_SETTLE) {
                atomic_store(&g_t_measure, now);
                atomic_store(&g_t_end, now);
                atomic_store(&g_phase, phase = PH_RUN);
            } else if (now < atomic_load(&g_t_end)) {
                atomic_store(&g_t_end, now);
            }
        }
        if (phase == PH_CONNECT) {
            while (w->pending < cfg.concurrency && w->next < cfg.clients) {
                start_connect(w, &conns[w->next]);
                w->next += cfg.threads;
            }
            if (now > g_connect_deadline)
                expire_pending(w);
            if (w->index == 0 && atomic_load(&g_opened) + atomic_load(&g_failed) == cfg.clients) {
                g_t_opened = now;
                atomic_store(&g_phase, PH_SETTLE);
            }
            timeout = 1;
        } else if (phase == PH_SETTLE) {
            /* wait for the join notices to drain: nothing read for settle_s */
            if (w->index == 0) {
                uint64_t last = g_t_opened;
                for (size_t i = 0; i < cfg.threads; i++) {
                    uint64_t t = atomic_load_explicit(&workers[i].last_rx, memory_order_relaxed);
                    last = t > last ? t : last;
                }
                if (now - last >= (uint64_t)(cfg.settle_s * 1e9) ||
                    now - g_t_opened >= 30000000000u)
                    begin_run(now);
            }
            timeout = 1;
        } else if (phase == PH_RUN) {
            uint64_t tm = atomic_load(&g_t_measure), te = atomic_load(&g_t_end);
            if (!w->sending) {
                w->sending = true;
                for (size_t i = w->index; i < cfg.senders; i += cfg.threads)
                    top_up(w, &conns[i], now, false);
            } else {
                if (cfg.rate > 0) /* the schedule: send what has become due */
                    for (size_t i = w->index; i < cfg.senders; i += cfg.threads)
                        top_up(w, &conns[i], now, now >= tm && now < te);
                if (now - w->stall_check >= 100000000u) {
                    /* a sender whose messages stopped coming back: count them lost
                     * (progress may be a little after `now`: it was just sent) */
                    w->stall_check = now;
                    for (size_t i = w->index; i < cfg.senders; i += cfg.threads) {
                        conn *c = &conns[i];
                        if (c->state == C_OPEN && c->inflight && now > c->progress &&
                            now - c->progress >= (uint64_t)(cfg.stall_s * 1e9)) {
                            note("sender %u: %u messages not back after %.1f s: lost", c->id,
                                 c->inflight, cfg.stall_s);
                            w->lost += c->inflight;
                            c->inflight = 0;
                            top_up(w, c, now, now >= tm && now < te);
                        }
                    }
                }
            }
            if (w->index == 0 && !started && now >= tm) {
                take_sample(&s_start);
                started = true;
            }
            if (now >= te) {
                if (w->index == 0) {
                    take_sample(&s_end);
                    atomic_store(&g_phase, PH_DONE);
                }
                ended = true;
            } else {
                uint64_t next = now < tm ? tm : te;
                uint64_t ms = (next - now + 999999) / 1000000;
                timeout = ms < 10 ? (int)ms : 10;
                if (cfg.rate > 0)
                    timeout = 1; /* the schedule's next sends */
            }
        } else {
            ended = true;
        }
        if (ended)
            break;
        int n = epoll_wait(w->epfd, evs, EVENTS_MAX, timeout);
        bool running = phase == PH_RUN;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (c->state == C_CONNECTING) {
                on_connected(w, c);
                continue;
            }
            if ((e & EPOLLOUT) && c->state != C_CLOSED)
                conn_flush(w, c);
            if ((e & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
                (c->state == C_HANDSHAKE || c->state == C_OPEN))
                on_readable(w, c, running);
        }
    }
    /* the end: a close frame (best effort), then close */
    for (size_t i = w->index; i < cfg.clients; i += cfg.threads) {
        conn *c = &conns[i];
        if (c->state == C_OPEN) {
            uint8_t out[16], body[2] = {0x03, 0xe8};
            size_t fl = put_frame(w, out, 8, body, 2);
            (void)send(c->fd, out, fl, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (c->state != C_IDLE && c->state != C_CLOSED) {
            close(c->fd);
            c->state = C_CLOSED;
        }
        free(c->rbuf);
        free(c->wbuf);
        c->rbuf = c->wbuf = NULL;
    }
    return NULL;
}

/* ---- command line ----------------------------------------------------------------- */

static bool parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max || *s == '-')
        return false;
    *out = (size_t)v;
    return true;
}

static bool parse_secs(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e6)
        return false;
    *out = v;
    return true;
}

/* ws://HOST[:PORT]/PATH, HOST may be [IPv6]. Resolves the address. */
static bool parse_url(const char *url)
{
    if (strncmp(url, "ws://", 5) != 0)
        return false;
    const char *h = url + 5, *he, *rest;
    if (*h == '[') {
        he = strchr(h, ']');
        if (!he)
            return false;
        h++;
        rest = he + 1;
    } else {
        he = h + strcspn(h, ":/?");
        rest = he;
    }
    size_t hl = (size_t)(he - h);
    if (!hl || hl >= sizeof cfg.host)
        return false;
    memcpy(cfg.host, h, hl);
    cfg.host[hl] = '\0';
    strcpy(cfg.port_str, "80");
    if (*rest == ':') {
        size_t pl = strcspn(rest + 1, "/?");
        if (!pl || pl >= sizeof cfg.port_str)
            return false;
        memcpy(cfg.port_str, rest + 1, pl);
        cfg.port_str[pl] = '\0';
        rest += 1 + pl;
    }
    if (strlen(rest) + 2 >= sizeof cfg.path)
        return false;
    snprintf(cfg.path, sizeof cfg.path, "%s%s", *rest == '/' ? "" : "/", rest);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(cfg.host, cfg.port_str, &hints, &ai);
    if (rc) {
        fprintf(stderr, "loadgen: %s: %s\n", cfg.host, gai_strerror(rc));
        return false;
    }
    memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
    cfg.addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (strchr(cfg.host, ':')) {            /* the Host header wants the brackets */
        char tmp[sizeof cfg.host];
        snprintf(tmp, sizeof tmp, "[%.*s]", (int)sizeof cfg.host - 3, cfg.host);
        memcpy(cfg.host, tmp, sizeof cfg.host);
    }
    return true;
}

static int parse_args(int argc, char **argv)
{
    enum { O_SRC = 1000, O_NONAME, O_CONC, O_CTIMEOUT, O_SETTLE, O_STALL, O_PID, O_LABEL, O_PORTS,
           O_JSON };
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"clients", required_argument, NULL, 'c'},
        {"senders", required_argument, NULL, 's'},
        {"inflight", required_argument, NULL, 'f'},
        {"rate", required_argument, NULL, 'r'},
        {"size", required_argument, NULL, 'm'},
        {"warmup", required_argument, NULL, 'w'},
        {"duration", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"src-ips", required_argument, NULL, O_SRC},
        {"no-name", no_argument, NULL, O_NONAME},
        {"connect-concurrency", required_argument, NULL, O_CONC},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"settle", required_argument, NULL, O_SETTLE},
        {"stall", required_argument, NULL, O_STALL},
        {"server-pid", required_argument, NULL, O_PID},
        {"label", required_argument, NULL, O_LABEL},
        {"ports", required_argument, NULL, O_PORTS},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    for (int o; (o = getopt_long(argc, argv, "u:c:s:f:r:m:w:d:t:h", opts, NULL)) != -1;) {
        bool ok = true;
        switch (o) {
        case 'u': cfg.url = optarg; break;
        case 'c': ok = parse_size(optarg, 1, 10000000, &cfg.clients); break;
        case 's': ok = parse_size(optarg, 0, 10000000, &cfg.senders); break;
        case 'f': ok = parse_size(optarg, 1, 65536, &cfg.inflight); break;
        case 'r': ok = parse_secs(optarg, &cfg.rate) && cfg.rate > 0; break;
        case 'm': ok = parse_size(optarg, 0, 64u << 20, &cfg.size); break;
        case 'w': ok = parse_secs(optarg, &cfg.warmup_s); break;
        case 'd': ok = parse_secs(optarg, &cfg.duration_s); break;
        case 't': ok = parse_size(optarg, 1, 1024, &cfg.threads); break;
        case O_SRC: ok = parse_size(optarg, 0, 1u << 22, &cfg.src_ips); break;
        case O_NONAME: cfg.add_name = false; break;
        case O_CONC: ok = parse_size(optarg, 1, 1000000, &cfg.concurrency); break;
        case O_CTIMEOUT: ok = parse_secs(optarg, &cfg.connect_timeout_s); break;
        case O_SETTLE: ok = parse_secs(optarg, &cfg.settle_s); break;
        case O_STALL: ok = parse_secs(optarg, &cfg.stall_s) && cfg.stall_s > 0; break;
        case O_PID: {
            char *s = optarg, *tok;
            while ((tok = strsep(&s, ",")) != NULL) {
                size_t v;
                if (cfg.n_pids == MAX_PIDS || !parse_size(tok, 1, INT32_MAX, &v)) {
                    ok = false;
                    break;
                }
                cfg.pids[cfg.n_pids++] = (pid_t)v;
            }
            break;
        }
        case O_LABEL: cfg.label = optarg; break;
        case O_PORTS: {
            char *s = optarg, *tok;
            while ((tok = strsep(&s, ",")) != NULL) {
                size_t v;
                if (cfg.n_ports == MAX_PIDS || !parse_size(tok, 1, 65535, &v)) {
                    ok = false;
                    break;
                }
                cfg.ports[cfg.n_ports++] = (uint16_t)v;
            }
            break;
        }
        case O_JSON: cfg.json_only = true; break;
        case 'h': printf(usage, argv[0]); return 0;
        default: fprintf(stderr, usage, argv[0]); return 2;
        }
        if (!ok) {
            fprintf(stderr, "loadgen: bad value for option %s: \"%s\"\n",
                     argv[optind - 1], optarg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!parse_url(cfg.url)) {
        fprintf(stderr, "loadgen: bad URL \"%s\" (expected ws://HOST:PORT/PATH)\n", cfg.url);
        return 2;
    }
    if (cfg.senders > cfg.clients) {
        fprintf(stderr, "loadgen: more senders (%zu) than clients (%zu)\n", cfg.senders,
                cfg.clients);
        return 2;
    }
    if (cfg.threads > cfg.clients)
        cfg.threads = cfg.clients;
    return -1;
}

/* ---- main ------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv)
{
    int status = parse_args(argc, argv);
    if (status >= 0)
        return status;

    char got[29];                 /* the RFC 6455 example, as a self-check */
    accept_value("dGhlIHNhbXBsZSBub25jZQ==", got);
    if (strcmp(got, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != 0) {
        fprintf(stderr, "loadgen: SHA-1 self-check failed\n");
        return 1;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        cfg.clients + cfg.threads + 16 > rl.rlim_cur) {
        fprintf(stderr, "loadgen: %zu clients need more file descriptors than the limit "
                        "(%llu): raise ulimit -n\n", cfg.clients,
                (unsigned long long)rl.rlim_cur);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    size_t text_max = (cfg.size > 64 ? cfg.size : 64);
    frame_max = frame_header_len(text_max + 15) + text_max + 15;
    size_t cap = READ_BUF_MIN;
    while (cap / 2 < frame_max + 64)
        cap *= 2;
    conns = calloc(cfg.clients, sizeof *conns);
    workers = calloc(cfg.threads, sizeof *workers);
    if (!conns || !workers) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < cfg.clients; i++) {
        conns[i].fd = -1;
        conns[i].id = (uint32_t)i;
        conns[i].sender = i < cfg.senders;
    }
    uint32_t seed;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint32_t)now_ns();
    size_t per_worker = (cfg.clients + cfg.threads - 1) / cfg.threads;
    bool track = cfg.senders && per_worker * cfg.senders <= MAX_TRACKED_PAIRS;
    for (size_t i = 0; i < cfg.threads; i++) {
        worker *w = &workers[i];
        w->index = i;
        w->next = i;
        w->rng = seed + (uint32_t)i * 0x9E3779B9u;
        if (!w->rng)
            w->rng = 1;
        w->cap = cap;
        w->buf = malloc(cap);
        w->sbuf = malloc(cfg.senders ? cfg.inflight * frame_max : 1);
        w->expect = track ? calloc(per_worker * cfg.senders, sizeof *w->expect) : NULL;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (!w->buf || !w->sbuf || (track && !w->expect) || w->epfd < 0) {
            fprintf(stderr, "loadgen: cannot set up worker %zu\n", i);
            return 1;
        }
    }

    take_sample(&s_begin);
    g_connect_deadline = s_begin.t + (uint64_t)(cfg.connect_timeout_s * 1e9);
    for (size_t i = 1; i < cfg.threads; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_run, &workers[i]) != 0) {
            fprintf(stderr, "loadgen: cannot start thread %zu\n", i);
            return 1;
        }
    worker_run(&workers[0]);
    for (size_t i = 1; i < cfg.threads; i++)
        pthread_join(workers[i].thread, NULL);

    /* totals */
    worker t = {0};
    for (size_t i = 0; i < cfg.threads; i++) {
        worker *w = &workers[i];
        t.deliveries += w->deliveries;
        t.others += w->others;
        t.sends += w->sends;
        t.reads += w->reads;
        t.bytes_in += w->bytes_in;
        t.missing += w->missing;
        t.reordered += w->reordered;
        t.lost += w->lost;
        t.connect_failed += w->connect_failed;
        t.handshake_failed += w->handshake_failed;
        t.closed_by_server += w->closed_by_server;
        t.protocol_errors += w->protocol_errors;
        t.eof += w->eof;
        for (unsigned b = 0; b < H_BUCKETS; b++)
            t.hist[b] += w->hist[b];
    }
    if (!s_start.t)             /* stopped before the window */
        s_start = s_end;
    if (!g_t_opened)
        g_t_opened = s_end.t;
    if (!g_t_run)
        g_t_run = s_end.t;
    double connect_s = (double)(g_t_opened - s_begin.t) / 1e9;
    double settle_s = (double)(g_t_run - g_t_opened) / 1e9;
    size_t opened = atomic_load(&g_opened);
    uint64_t all_deliveries = 0;       /* the whole run, warm-up included */
    for (size_t i = 0; i < cfg.clients; i++)
        all_deliveries += conns[i].deliveries;
    double secs = (double)(s_end.t - s_start.t) / 1e9;
    double rate = secs > 0 ? (double)t.deliveries / secs : 0;
    double cpu = s_end.cpu_s - s_start.cpu_s;
    double srv_cpu = s_end.srv_cpu_s - s_start.srv_cpu_s;
    /* CPUs kept busy during the window by everything else on the machine (other
     * processes, and interrupt time not charged to a process) */
    double others_cpus = secs > 0 ? (s_end.machine_busy_s - s_start.machine_busy_s - cpu -
                                     srv_cpu) / secs : 0;
    if (others_cpus < 0)        /* the counters tick at 100 Hz: noise */
        others_cpus = 0;
    double per = t.deliveries ? 1e9 / (double)t.deliveries : 0;
    double p50 = h_quantile(t.hist, t.deliveries, 0.50) / 1e3;
    double p90 = h_quantile(t.hist, t.deliveries, 0.90) / 1e3;
    double p99 = h_quantile(t.hist, t.deliveries, 0.99) / 1e3;
    double p999 = h_quantile(t.hist, t.deliveries, 0.999) / 1e3;
    double pmax = h_quantile(t.hist, t.deliveries, 1.0) / 1e3;
    uint64_t errors = t.connect_failed + t.handshake_failed + t.closed_by_server +
                      t.protocol_errors + t.eof + t.missing + t.reordered +
                      t.lost;
    double rss_per_conn = cfg.n_pids && opened
                              ? (double)(s_end.srv_rss_kb - s_begin.srv_rss_kb) * 1024.0 /
                                    (double)opened
                              : 0;

    if (!cfg.json_only) {
        printf("%s: %zu clients (%zu open), %zu senders x %zu in flight, %zu-byte messages, "
               "%zu thread%s\n", cfg.url, cfg.clients, opened, cfg.senders, cfg.inflight,
               cfg.size, cfg.threads, cfg.threads == 1 ? "" : "s");
        printf("  connect     %.3f s, then %.3f s until quiet\n", connect_s, settle_s);
        printf("  window      %.3f s after %.3f s of warm-up\n", secs, cfg.warmup_s);
        printf("  deliveries  %" PRIu64 " (%.0f/s), from %" PRIu64 " sends; %" PRIu64
               " other messages\n", t.deliveries, rate, t.sends, t.others);
        printf("  latency     p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, "
               "max %.1f us\n", p50, p90, p99, p999, pmax);
        printf("  client CPU  %.3f s, %.1f ns per delivery, %.1f deliveries per read\n", cpu,
               cpu * per, t.reads ? (double)t.deliveries / (double)t.reads : 0.0);
        printf("  machine     %.2f CPUs busy with anything else%s\n", others_cpus,
               cfg.n_pids ? "" : " (the server included)");
        if (cfg.n_pids)
            printf("  server      CPU %.2f s, %.1f ns per delivery; RSS %ld KiB (%ld KiB "
                   "before connecting; %.0f B per connection)\n", srv_cpu, srv_cpu * per,
                   s_end.srv_rss_kb, s_begin.srv_rss_kb, rss_per_conn);
        printf("  errors      %" PRIu64 " (connect %" PRIu64 ", handshake %" PRIu64
               ", closed by server %" PRIu64 ", protocol %" PRIu64 ", eof %" PRIu64
               ",\n              missing %" PRIu64 ", reordered %" PRIu64 ", lost %" PRIu64
               ")\n", errors, t.connect_failed, t.handshake_failed, t.closed_by_server,
               t.protocol_errors, t.eof, t.missing, t.reordered, t.lost);
    }
    printf("{\"tool\": \"loadgen\", \"label\": ");
    json_str(stdout, cfg.label ? cfg.label : "");
    printf(", \"url\": ");
    json_str(stdout, cfg.url);
    printf(", \"clients\": %zu, \"clients_open\": %zu, \"senders\": %zu, \"inflight\": %zu, "
           "\"rate\": %.1f, \"size\": %zu, \"threads\": %zu, \"connect_s\": %.3f, \"settle_s\": %.3f, "
           "\"warmup_s\": %.3f, \"duration_s\": %.3f, "
           "\"deliveries\": %" PRIu64 ", \"deliveries_per_s\": %.1f, \"sends\": %" PRIu64
           ", \"deliveries_total\": %" PRIu64 ", \"other_messages\": %" PRIu64
           ", \"reads\": %" PRIu64 ", \"bytes_in\": %" PRIu64
           ", \"lat_p50_us\": %.2f, \"lat_p90_us\": %.2f, \"lat_p99_us\": %.2f, "
           "\"lat_p999_us\": %.2f, \"lat_max_us\": %.2f, \"client_cpu_s\": %.4f, "
           "\"client_cpu_ns_per_delivery\": %.2f, \"other_busy_cpus\": %.3f",
           cfg.clients, opened, cfg.senders, cfg.inflight, cfg.rate, cfg.size, cfg.threads,
           connect_s, settle_s, cfg.warmup_s, secs, t.deliveries, rate, t.sends,
           all_deliveries, t.others, t.reads, t.bytes_in,
           p50, p90, p99, p999, pmax, cpu, cpu * per, others_cpus);
    if (cfg.n_pids)
        printf(", \"server_cpu_s\": %.4f, \"server_cpu_ns_per_delivery\": %.2f, "
               "\"server_rss_start_kb\": %ld, \"server_rss_kb\": %ld, "
               "\"server_rss_per_conn_bytes\": %.1f",
               srv_cpu, srv_cpu * per, s_begin.srv_rss_kb, s_end.srv_rss_kb, rss_per_conn);
    printf(", \"errors\": %" PRIu64 ", \"connect_failed\": %" PRIu64
           ", \"handshake_failed\": %" PRIu64 ", \"closed_by_server\": %" PRIu64
           ", \"protocol_errors\": %" PRIu64 ", \"eof\": %" PRIu64 ", \"missing\": %" PRIu64
           ", \"reordered\": %" PRIu64 ", \"lost\": %" PRIu64 "}\n", errors,
           t.connect_failed, t.handshake_failed, t.closed_by_server, t.protocol_errors, t.eof,
           t.missing, t.reordered, t.lost);
    for (size_t i = 0; i < cfg.threads; i++) {
        close(workers[i].epfd);
        free(workers[i].buf);
        free(workers[i].sbuf);
        free(workers[i].expect);
    }
    free(workers);
    free(conns);
    return errors ? 1 : 0;
}
