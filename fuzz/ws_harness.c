/* fuzz/ws_harness.c - the in-process WebSocket servers the ws fuzz targets talk to.
 *
 * See ws_harness.h. The consumers mounted here reach every path a client's bytes can
 * take in the library: accept, reject, a decision made later from a layer message,
 * subprotocols, route parameters and scope lookups, groups and fan-out, the built-in
 * websocket.send / websocket.close handlers fed with bodies the client chose, close
 * codes, sends beyond the outbound limit, the example chat (JSON on jansson). */
#include "ws_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cchannels/cchannels.h>
#include <cchannels/middleware.h>
#include <cchannels/ws.h>

#include "chat.h"
#include "echo_consumer.h"
#include "room_consumer.h"
#include "ws_consumers.h"
#include "ws_internal.h"

_Noreturn void fz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: harness check failed: %s\n", file, line, what);
    fflush(stderr);
    __builtin_trap();
}

/* ---- consumers ------------------------------------------------------------------- */

/* The example room (examples/room_consumer.c), but a binary message leaves the room. */
static void room_receive_or_leave(cch_conn *c, const char *data, size_t len, bool binary)
{
    if (binary) {
        room_state *st = cch_state(c);
        cch_group_discard(c, st->group);
        return;
    }
    room_receive(c, data, len, binary);
}

static const cch_consumer_class room_or_leave_consumer = {
    .state_size = sizeof(room_state),
    .connect = room_connect,
    .receive = room_receive_or_leave,
    .handlers = room_handlers,
};

/* Decides from a layer message: accept, or (query "no") reject. */
static int later_connect(cch_conn *c)
{
    char v[8];
    bool no = cch_scope_query(cch_conn_scope(c), "no", v, sizeof v) >= 0;
    cch_msg *m = cch_msg_new(no ? "later.reject" : "later.accept", NULL, 0);
    if (!m)
        return CCH_ENOMEM;
    int rc = cch_channel_send(c, cch_channel_name(c), m);
    cch_msg_unref(m);
    return rc;
}

static void later_accept(cch_conn *c, const cch_msg *m)
{
    (void)m;
    cch_accept(c, NULL);
}

static void later_reject(cch_conn *c, const cch_msg *m)
{
    (void)m;
    cch_reject(c, 409);
}

static void echo_text(cch_conn *c, const char *data, size_t len, bool binary)
{
    if (binary)
        cch_send_binary(c, data, len);
    else
        cch_send_text(c, data, len);
}

static const cch_consumer_class later_consumer = {
    .connect = later_connect,
    .receive = echo_text,
    .handlers = (const cch_handler[]){{"later.accept", later_accept},
                                      {"later_reject", later_reject},
                                      {NULL, NULL}},
};

/* Commands, one per text message (see the corpus of fuzz_ws_input). */
static void cmd_body_back(cch_conn *c, const cch_msg *m)
{
    (void)cch_send_body(c, m);
}

static void send_msg(cch_conn *c, int how, const char *target, const char *type,
                     const char *body)
{
    cch_msg *m = NULL;
    if (cch_msg_create(&m, type, body, strlen(body)) < 0)
        return;
    if (how == 0)
        cch_group_send(c, target, m);
    else if (how == 1)
        cch_group_send_others(c, target, m);
    else
        cch_channel_send(c, cch_channel_name(c), m);
    cch_msg_unref(m);
}

static void cmd_receive(cch_conn *c, const char *data, size_t len, bool binary)
{
    char buf[1024], a[128], b[128];
    if (binary || len >= sizeof buf)
        return;
    memcpy(buf, data, len);
    buf[len] = '\0';
    int code, off = 0;
    unsigned n, size;
    if (sscanf(buf, "close %d %n", &code, &off) == 1) {
        cch_close(c, code, off ? buf + off : "");
    } else if (sscanf(buf, "send %u %u", &n, &size) == 2 ||
               sscanf(buf, "bin %u %u", &n, &size) == 2) {
        static char payload[70000];
        memset(payload, buf[0] == 's' ? 'x' : 0xfe, sizeof payload);
        size = size > sizeof payload ? (unsigned)sizeof payload : size;
        for (unsigned i = 0; i < n && i < 64; i++) {
            int rc = buf[0] == 's' ? cch_send_text(c, payload, size)
                                   : cch_send_binary(c, payload, size);
            if (rc < 0)
                break;
        }
    } else if (sscanf(buf, "join %127s", a) == 1) {
        cch_group_add(c, a);
    } else if (sscanf(buf, "leave %127s", a) == 1) {
        cch_group_discard(c, a);
    } else if (sscanf(buf, "gsend %127s %n", a, &off) == 1 && off) {
        send_msg(c, 0, a, "websocket.send", buf + off);
    } else if (sscanf(buf, "others %127s %n", a, &off) == 1 && off) {
        send_msg(c, 1, a, "cmd.echo", buf + off);
    } else if (sscanf(buf, "self %127s %n", b, &off) == 1 && off) {
        send_msg(c, 2, NULL, b, buf + off);
    } else if (strcmp(buf, "reject") == 0) {
        cch_reject(c, 403);
    } else if (strcmp(buf, "accept") == 0) {
        cch_accept(c, NULL);
    } else {
        cch_send_text(c, buf, len);
    }
}

static const cch_consumer_class cmd_consumer = {
    .receive = cmd_receive,
    .handlers = (const cch_handler[]){{"cmd.echo", cmd_body_back}, {NULL, NULL}},
};

static const char *or_dash(const char *s)
{
    return s ? s : "-";
}

/* Route parameters and scope lookups, sent back on connect. */
static int params_connect(cch_conn *c)
{
    int rc = cch_accept(c, NULL);
    if (rc < 0)
        return rc;
    const cch_scope *s = cch_conn_scope(c);
    char q[64] = "", ck[64] = "", out[1024];
    cch_scope_query(s, "q", q, sizeof q);
    cch_scope_cookie(s, "c", ck, sizeof ck);
    const char *h = cch_scope_header(s, "X-Any");
    const char *host = cch_scope_client_host(s);
    int n = snprintf(out, sizeof out, "%s|%s|%s|%s|%s|%s|%s|%d", or_dash(cch_param(c, "id")),
                     or_dash(cch_param(c, "slug")), or_dash(cch_param(c, "rest")), q, ck,
                     or_dash(h),
                     host ? "host" : "-", cch_scope_query_string(s) != NULL);
    if (n < 0)
        return 0;
    size_t len = (size_t)n < sizeof out ? (size_t)n : sizeof out - 1;
    return cch_send_binary(c, out, len); /* parameters need not be UTF-8 */
}

static const cch_consumer_class params_consumer = {.connect = params_connect,
                                                   .receive = echo_text};

/* FZ_GUARDED: who the auth middleware says the client is. */
static int user_connect(cch_conn *c)
{
    int rc = cch_accept(c, NULL);
    if (rc < 0)
        return rc;
    char out[256];
    const char *name = cch_scope_user_name(cch_conn_scope(c));
    int n = snprintf(out, sizeof out, "%lld %s %s", (long long)cch_user_id(c), or_dash(name),
                     or_dash(cch_param(c, "id")));
    return cch_send_binary(c, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
}

static const cch_consumer_class user_consumer = {.connect = user_connect,
                                                 .receive = echo_text};

static int auth_resolve(cch_scope *s, const char *token, size_t len, void *ud)
{
    (void)ud;
    if (len > 5 && memcmp(token, "user-", 5) == 0) {
        char *end;
        long long id = strtoll(token + 5, &end, 10);
        if (*end == '\0' && id > 0)
            return cch_scope_set_user(s, id, token, NULL, NULL);
        return 0;
    }
    if (strcmp(token, "deny") == 0)
        return 401;
    if (strcmp(token, "fail") == 0)
        return CCH_EIO;
    return 0;
}

/* ---- set-up ----------------------------------------------------------------------- */

static uv_loop_t loop;
static cch_app *apps[FZ_SERVERS];
static cch_ws_server *servers[FZ_SERVERS];
static chat_server *chat;
static fz_client clients[FZ_MAX_CLIENTS];
static bool ready;

/* The static files: their contents are the only bodies a 200 may carry. */
static char base_dir[64];
static char static_dir[96];
static struct {
    const char *name;
    char *data;
    size_t len;
} files[] = {
    {"index.html", NULL, 0}, {"app.js", NULL, 0}, {"style.css", NULL, 0},
    {"big.bin", NULL, 0},    {"sub/index.html", NULL, 0}, {"sub/x.json", NULL, 0},
};
#define N_FILES (sizeof files / sizeof files[0])

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FZ_ASSERT(f && fwrite(data, 1, len, f) == len && fclose(f) == 0, path);
}

static void remove_static(void)
{
    char cmd[256];
    if (base_dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", base_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", base_dir);
    }
}

static void make_static(void)
{
    strcpy(base_dir, "/tmp/cch-fuzz-XXXXXX");
    FZ_ASSERT(mkdtemp(base_dir), "mkdtemp");
    atexit(remove_static);
    snprintf(static_dir, sizeof static_dir, "%s/www", base_dir);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/sub", static_dir);
    FZ_ASSERT(mkdir(static_dir, 0700) == 0 && mkdir(sub, 0700) == 0, "mkdir");
    /* Outside the static directory, and links that point there. */
    write_file(base_dir, "secret.txt", "SECRET\n", 7);
    char link[192];
    snprintf(link, sizeof link, "%s/leak.txt", static_dir);
    FZ_ASSERT(symlink("../secret.txt", link) == 0, "symlink");
    snprintf(link, sizeof link, "%s/up", static_dir);
    FZ_ASSERT(symlink("..", link) == 0, "symlink");
    for (size_t i = 0; i < N_FILES; i++) {
        size_t len = strcmp(files[i].name, "big.bin") == 0 ? 150000 : 20 + i;
        char *d = malloc(len);
        FZ_ASSERT(d, "malloc");
        for (size_t k = 0; k < len; k++)
            d[k] = (char)('a' + (k * 7 + i) % 26);
        files[i].data = d;
        files[i].len = len;
        write_file(static_dir, files[i].name, d, len);
    }
}

static bool is_static_body(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < N_FILES; i++)
        if (files[i].len == len && memcmp(files[i].data, p, len) == 0)
            return true;
    return false;
}

static void start(int which, cch_app *app, const char *sdir)
{
    cch_ws_options o = {
        .host = "127.0.0.1",
        .port = CCH_WS_ANY_PORT,
        .static_dir = sdir,
        /* Small limits, so that inputs of a few KiB reach them. */
        .max_header_bytes = 2048,
        .max_message_bytes = 4096,
        .max_outbound_bytes = 16384,
        .max_connections = 3,
    };
    int rc = cch_ws_server_start(&servers[which], app, &loop, &o);
    FZ_ASSERT(rc == 0, "cch_ws_server_start");
    apps[which] = app;
}

void fz_init(void)
{
    if (ready)
        return;
    signal(SIGPIPE, SIG_IGN);
    FZ_ASSERT(uv_loop_init(&loop) == 0, "uv_loop_init");
    make_static();

    cch_app *a = cch_app_new(cch_memory_layer_new(NULL));
    chat = chat_server_new(NULL, NULL);
    FZ_ASSERT(a && chat, "app");
    FZ_ASSERT(cch_app_route(a, "/ws/echo/", &echo_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/room/{room}/", &room_or_leave_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/reject/", &reject_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/proto/", &proto_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/later/", &later_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/cmd/", &cmd_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/p/{id:int}/{slug:slug}/{rest:path}", &params_consumer,
                                NULL) == 0 &&
                  cch_app_route(a, "/ws/s/id-{id:int}", &params_consumer, NULL) == 0 &&
                  cch_app_route(a, "/ws/chat/{room}/", &chat_consumer, chat) == 0,
              "routes");
    start(FZ_PLAIN, a, static_dir);

    cch_app *g = cch_app_new(cch_memory_layer_new(NULL));
    FZ_ASSERT(g, "app");
    static const char *const origins[] = {".example.com", "localhost:8000", "[::1]:9000"};
    cch_auth_options auth = {.cookie = "sessionid", .header = "Authorization",
                             .query_param = "token", .resolve = auth_resolve,
                             .token_max = 64};
    FZ_ASSERT(cch_app_use_origin_check(g, origins, 3) == 0 && cch_app_use_auth(g, &auth) == 0,
              "middleware");
    FZ_ASSERT(cch_app_route(g, "/ws/echo/", &echo_consumer, NULL) == 0 &&
                  cch_app_route(g, "/ws/user/{id:int}/", &user_consumer, NULL) == 0,
              "routes");
    start(FZ_GUARDED, g, NULL);

    for (int i = 0; i < FZ_MAX_CLIENTS; i++)
        clients[i].fd = -1;
    ready = true;
}

size_t fz_handshake(char *buf, size_t cap, const char *path)
{
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: localhost:8000\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Origin: http://www.example.com\r\n"
                     "Cookie: sessionid=user-12\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Protocol: chat, superchat\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     path);
    FZ_ASSERT(n > 0 && (size_t)n < cap, "handshake buffer");
    return (size_t)n;
}

/* ---- clients and the loop --------------------------------------------------------- */

fz_client *fz_connect(int which)
{
    fz_client *c = NULL;
    for (int i = 0; i < FZ_MAX_CLIENTS; i++)
        if (clients[i].fd < 0 && !clients[i].out) {
            c = &clients[i];
            break;
        }
    FZ_ASSERT(c, "too many clients");
    int sv[2];
    FZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0,
              "socketpair");
    FZ_ASSERT(ws_server_adopt(servers[which], sv[1]) == 0, "ws_server_adopt");
    memset(c, 0, sizeof *c);
    c->fd = sv[0];
    c->out = malloc(1024);
    FZ_ASSERT(c->out, "malloc");
    return c;
}

static size_t out_cap(const fz_client *c)
{
    size_t cap = 1024;
    while (cap < c->out_len)
        cap *= 2;
    return cap;
}

/* Reads what the server sent to c; returns the number of bytes read. */
static size_t drain(fz_client *c)
{
    size_t got = 0;
    unsigned char tmp[65536];
    while (c->fd >= 0 && !c->eof) {
        ssize_t n = read(c->fd, tmp, sizeof tmp);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            c->eof = true;
            break;
        }
        if (n < 0) {
            FZ_ASSERT(errno == EAGAIN || errno == EINTR, "read");
            break;
        }
        got += (size_t)n;
        if (c->overflow || c->out_len + (size_t)n > FZ_OUT_MAX) {
            c->overflow = true;
            continue;
        }
        size_t cap = out_cap(c);
        if (c->out_len + (size_t)n > cap) {
            while (cap < c->out_len + (size_t)n)
                cap *= 2;
            unsigned char *p = realloc(c->out, cap);
            FZ_ASSERT(p, "realloc");
            c->out = p;
        }
        memcpy(c->out + c->out_len, tmp, (size_t)n);
        c->out_len += (size_t)n;
    }
    return got;
}

static uint64_t activity(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < FZ_SERVERS; i++) {
        cch_ws_stats s;
        cch_app_stats a;
        cch_ws_server_stats(servers[i], &s);
        cch_app_stats_get(apps[i], &a);
        sum += s.bytes_in + s.bytes_out + s.tcp_active + s.ws_active + s.writes +
               s.messages_in + s.messages_out + s.outbound_bytes + s.input_contexts +
               a.messages_dispatched + a.connections_active + a.connections_opened +
               a.unknown_type + a.dropped_closed;
    }
    return sum;
}

void fz_settle(void)
{
    int quiet = 0;
    uint64_t last = activity();
    for (int turn = 0; turn < 2000 && quiet < 3; turn++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        size_t got = 0;
        for (int i = 0; i < FZ_MAX_CLIENTS; i++)
            got += drain(&clients[i]);
        uint64_t now = activity();
        quiet = (got == 0 && now == last) ? quiet + 1 : 0;
        last = now;
    }
}

void fz_send(fz_client *c, const void *data, size_t len, size_t chunk)
{
    const unsigned char *p = data;
    if (chunk == 0)
        chunk = len;
    size_t off = 0;
    int stuck = 0;
    while (off < len && c->fd >= 0 && !c->peer_gone && stuck < 2) {
        size_t n = len - off < chunk ? len - off : chunk;
        ssize_t w = send(c->fd, p + off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                stuck++; /* the server is not reading (deciding, or a full buffer) */
                fz_settle();
                continue;
            }
            c->peer_gone = true;
            break;
        }
        stuck = 0;
        off += (size_t)w;
        fz_settle();
    }
}

static void kill_all(cch_ws_server *s)
{
    for (int which = 1; which < WS_TL_COUNT; which++)
        while (s->lists[which].head)
            ws_conn_kill(s->lists[which].head);
}

void fz_end(void)
{
    for (int i = 0; i < FZ_MAX_CLIENTS; i++)
        if (clients[i].fd >= 0)
            shutdown(clients[i].fd, SHUT_WR);
    fz_settle();
    for (int i = 0; i < FZ_MAX_CLIENTS; i++) {
        if (clients[i].fd >= 0)
            close(clients[i].fd);
        clients[i].fd = -1;
        free(clients[i].out);
        clients[i].out = NULL;
    }
    fz_settle();
    /* What is left waits for a timer (a decision that never comes, say): drop it as
     * the timers would. */
    for (int i = 0; i < FZ_SERVERS; i++)
        kill_all(servers[i]);
    fz_settle();
    for (int i = 0; i < FZ_SERVERS; i++) {
        cch_ws_server *s = servers[i];
        cch_app_stats a;
        cch_app_stats_get(apps[i], &a);
        FZ_ASSERT(s->stats.tcp_active == 0 && s->n_conns == 0, "a connection is left");
        FZ_ASSERT(s->stats.ws_active == 0, "ws_active is not 0");
        FZ_ASSERT(s->stats.input_contexts == 0, "a parser is left");
        FZ_ASSERT(s->stats.outbound_bytes == 0, "outbound bytes are still counted");
        FZ_ASSERT(a.connections_active == 0, "the app still counts a connection");
        FZ_ASSERT(!s->dirty_head && !s->cur, "the dirty list is not empty");
    }
}

/* ---- checking what a server sent -------------------------------------------------- */

static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char ch = s[i];
        size_t n;
        uint32_t cp;
        if (ch < 0x80) {
            i++;
            continue;
        } else if (ch >= 0xc2 && ch <= 0xdf) {
            n = 1, cp = ch & 0x1f;
        } else if (ch >= 0xe0 && ch <= 0xef) {
            n = 2, cp = ch & 0x0f;
        } else if (ch >= 0xf0 && ch <= 0xf4) {
            n = 3, cp = ch & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static bool valid_close_code(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* Server frames: unmasked, RSV 0, known opcodes, shortest length form, control frames
 * whole and short, text valid UTF-8 (across fragments), nothing after a close. */
static void check_frames(const unsigned char *p, size_t len)
{
    size_t off = 0;
    bool in_msg = false, msg_text = false, closed = false;
    unsigned char *text = NULL;
    size_t text_len = 0;
    while (off < len) {
        FZ_ASSERT(!closed, "bytes after the server's close frame");
        if (len - off < 2)
            break; /* incomplete (the server may still be writing) */
        unsigned b0 = p[off], b1 = p[off + 1];
        unsigned op = b0 & 0x0f;
        bool fin = b0 & 0x80;
        FZ_ASSERT((b0 & 0x70) == 0, "server frame with RSV bits");
        FZ_ASSERT(!(b1 & 0x80), "masked server frame");
        uint64_t pl = b1 & 0x7f;
        size_t h = 2;
        if (pl == 126) {
            if (len - off < 4)
                break;
            pl = ((uint64_t)p[off + 2] << 8) | p[off + 3];
            FZ_ASSERT(pl >= 126, "length not in its shortest form");
            h = 4;
        } else if (pl == 127) {
            if (len - off < 10)
                break;
            pl = 0;
            for (int k = 0; k < 8; k++)
                pl = (pl << 8) | p[off + 2 + k];
            FZ_ASSERT(pl > 0xffff && pl < ((uint64_t)1 << 63), "length not in its shortest form");
            h = 10;
        }
        if (len - off - h < pl)
            break;
        const unsigned char *pay = p + off + h;
        switch (op) {
        case 0:
            FZ_ASSERT(in_msg, "continuation without a message");
            break;
        case 1:
        case 2:
            FZ_ASSERT(!in_msg, "data frame inside a fragmented message");
            in_msg = true;
            msg_text = op == 1;
            text_len = 0;
            break;
        case 8:
        case 9:
        case 10:
            FZ_ASSERT(fin && pl <= 125, "fragmented or long control frame");
            if (op == 8) {
                FZ_ASSERT(pl != 1, "close payload of one byte");
                if (pl >= 2) {
                    unsigned code = (unsigned)pay[0] << 8 | pay[1];
                    FZ_ASSERT(valid_close_code(code), "invalid close code sent");
                    FZ_ASSERT(utf8_valid(pay + 2, pl - 2), "close reason is not UTF-8");
                }
                closed = true;
            }
            break;
        default:
            FZ_ASSERT(false, "unknown opcode sent");
        }
        if (op <= 2) {
            if (msg_text) {
                unsigned char *t = realloc(text, text_len + pl + 1);
                FZ_ASSERT(t, "realloc");
                text = t;
                memcpy(text + text_len, pay, pl);
                text_len += pl;
            }
            if (fin) {
                if (msg_text)
                    FZ_ASSERT(utf8_valid(text, text_len), "text message is not UTF-8");
                in_msg = false;
            }
        }
        off += h + pl;
    }
    free(text);
}

static const char *find_head_end(const unsigned char *p, size_t len)
{
    return memmem(p, len, "\r\n\r\n", 4);
}

static bool has_header(const char *head, size_t len, const char *line)
{
    return memmem(head, len, line, strlen(line)) != NULL;
}

static void trace(const fz_client *c)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FZ_TRACE") != NULL;
    if (!on)
        return;
    size_t n = c->out_len < 60 ? c->out_len : 60;
    fprintf(stderr, "[fz] client got %zu bytes%s%s: ", c->out_len, c->eof ? ", eof" : "",
            c->overflow ? ", overflow" : "");
    for (size_t i = 0; i < n; i++)
        fputc(c->out[i] >= 32 && c->out[i] < 127 ? c->out[i] : '.', stderr);
    if (c->out_len > 60) {
        fputs(" ... ", stderr);
        for (size_t i = c->out_len - 40 > 60 ? c->out_len - 40 : 60; i < c->out_len; i++)
            fprintf(stderr, "%02x", c->out[i]);
    }
    fputc('\n', stderr);
}

int fz_check_client(const fz_client *c)
{
    trace(c);
    if (c->overflow || c->out_len == 0)
        return 0;
    const unsigned char *p = c->out;
    size_t len = c->out_len;
    FZ_ASSERT(len >= 12 || !c->eof, "short answer");
    if (len < 12)
        return 0;
    FZ_ASSERT(memcmp(p, "HTTP/1.1 ", 9) == 0, "answer without an HTTP/1.1 status line");
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    FZ_ASSERT(status >= 101 && status <= 599, "bad status");
    const char *end = find_head_end(p, len);
    if (!end) {
        FZ_ASSERT(!c->eof, "answer head without its end");
        return status;
    }
    size_t hlen = (size_t)(end - (const char *)p) + 4;
    const char *head = (const char *)p;
    if (status == 101) {
        FZ_ASSERT(has_header(head, hlen, "\r\nUpgrade: websocket\r\n") &&
                      has_header(head, hlen, "\r\nConnection: Upgrade\r\n") &&
                      has_header(head, hlen, "\r\nSec-WebSocket-Accept: "),
                  "101 without its headers");
        check_frames(p + hlen, len - hlen);
        return status;
    }
    FZ_ASSERT(has_header(head, hlen, "\r\nConnection: close\r\n"), "answer without close");
    const char *cl = memmem(head, hlen, "\r\nContent-Length: ", 18);
    FZ_ASSERT(cl, "answer without Content-Length");
    size_t body = strtoul(cl + 18, NULL, 10);
    /* A HEAD answer has no body; the bytes after the head are the body, exactly. */
    size_t got = len - hlen;
    FZ_ASSERT(got == body || got == 0, "body length differs from Content-Length");
    if (status == 200 && got > 0)
        FZ_ASSERT(is_static_body(p + hlen, got), "a 200 body that is none of the files");
    return status;
}
