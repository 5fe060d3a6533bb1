/* lib/ws/static.c - plain GET and HEAD requests answered from the static directory.
 *
 * The path is percent-decoded and checked (no NUL, no backslash, no "." or ".."
 * segment), then resolved with realpath() and required to stay inside the static
 * directory (itself resolved at start), so neither "../" nor a symbolic link can
 * reach a file outside it. A directory is answered with its index.html (after a 301
 * to the path with a trailing '/'). Files are sent in chunks as the output queue
 * drains, so a large file never sits in memory; the answer ends the connection
 * (Connection: close). */
#include "alloc.h"
#include "ws_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define WS_FILE_CHUNK (64 * 1024)

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"pdf", "application/pdf"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
};

const char *ws_content_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot && dot[1])
        for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++)
            if (strcasecmp(dot + 1, content_types[i].ext) == 0)
                return content_types[i].type;
    return "application/octet-stream";
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int ws_static_sanitize(const char *raw, char *out, size_t cap)
{
    if (!raw || !out || cap == 0 || raw[0] != '/')
        return CCH_EINVAL;
    size_t o = 0;
    const char *p = raw + 1;
    while (*p) {
        char ch = *p;
        if (ch == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0)
                return CCH_EINVAL;
            ch = (char)(hi * 16 + lo);
            if (ch == '\0')
                return CCH_EINVAL;
            p += 3;
        } else {
            p++;
        }
        if (ch == '\\')
            return CCH_EINVAL;
        if (ch == '/' && (o == 0 || out[o - 1] == '/'))
            continue; /* collapse "//" and a leading '/' */
        if (o + 1 >= cap)
            return CCH_ETOOBIG;
        out[o++] = ch;
    }
    out[o] = '\0';
    /* No "." or ".." segment, decoded or not. */
    for (const char *seg = out; *seg;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return CCH_EINVAL;
        if (!end)
            break;
        seg = end + 1;
    }
    return 0;
}

static bool inside(ws_server *s, const char *resolved)
{
    return strncmp(resolved, s->static_dir, s->static_dir_len) == 0 &&
           (resolved[s->static_dir_len] == '/' || resolved[s->static_dir_len] == '\0');
}

void ws_static_serve(ws_conn *c, const char *raw_path)
{
    ws_server *s = c->srv;
    if (!s->static_dir) {
        ws_http_error(c, 404, NULL);
        return;
    }
    char rel[PATH_MAX];
    int rc = ws_static_sanitize(raw_path, rel, sizeof rel);
    if (rc < 0) {
        ws_http_error(c, rc == CCH_ETOOBIG ? 414 : 404, NULL);
        return;
    }
    char full[PATH_MAX + 32];
    int n = snprintf(full, sizeof full, "%s/%s", s->static_dir, rel);
    if (n < 0 || (size_t)n >= sizeof full - 16) {
        ws_http_error(c, 404, NULL);
        return;
    }
    struct stat st;
    if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t rl = strlen(raw_path);
        if (rl && raw_path[rl - 1] != '/') {
            char loc[PATH_MAX + 32];
            if (rl < PATH_MAX && (size_t)snprintf(loc, sizeof loc, "Location: %s/\r\n", raw_path) < sizeof loc) {
                ws_http_error(c, 301, loc);
                return;
            }
            ws_http_error(c, 404, NULL);
            return;
        }
        strcat(full, full[n - 1] == '/' ? "index.html" : "/index.html");
    }
    char resolved[PATH_MAX];
    if (!realpath(full, resolved) || !inside(s, resolved)) {
        ws_http_error(c, 404, NULL);
        return;
    }
    int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); /* a FIFO must not block */
    if (fd < 0) {
        ws_http_error(c, errno == EACCES ? 403 : 404, NULL);
        return;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        ws_http_error(c, 404, NULL);
        return;
    }
    char hdr[512];
    n = snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 200 OK\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %llu\r\n"
                 "Cache-Control: no-cache\r\n"
                 "X-Content-Type-Options: nosniff\r\n"
                 "Connection: close\r\n"
                 "\r\n",
                 ws_content_type(resolved), (unsigned long long)st.st_size);
    if (ws_out_raw(c, hdr, (size_t)n) < 0) {
        close(fd);
        ws_conn_kill(c);
        return;
    }
    s->stats.static_served++;
    char peer[64];
    ws_conn_peer(c, peer, sizeof peer);
    ws_log(s, CCH_LOG_INFO, "%s %s %s 200 %llu", peer, (c->flags & WS_F_HEAD_ONLY) ? "HEAD" : "GET",
           raw_path, (unsigned long long)st.st_size);
    if ((c->flags & WS_F_HEAD_ONLY) || st.st_size == 0) {
        close(fd);
        ws_conn_linger(c);
        ws_http_release(c);
        return;
    }
    ws_http_set_file(c, fd, (uint64_t)st.st_size);
    /* While the file is sent, the idle timeout bounds a client that stops reading. */
    ws_timer_set(c, WS_TL_IDLE, s->opts.idle_timeout_ms);
}

void ws_static_continue(ws_conn *c)
{
    int fd;
    uint64_t *left;
    if (!ws_http_file_next(c, &fd, &left))
        return;
    size_t want = *left < WS_FILE_CHUNK ? (size_t)*left : WS_FILE_CHUNK;
    uint8_t *data;
    void *buf = ws_out_buf_new(want, &data);
    if (!buf) {
        ws_conn_kill(c);
        return;
    }
    ssize_t n;
    do
        n = read(fd, data, want);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        cch__free(buf);
        ws_log(c->srv, CCH_LOG_WARN, "static file read failed: %s", n < 0 ? strerror(errno) : "file shrank");
        ws_conn_kill(c);
        return;
    }
    *left -= (uint64_t)n;
    if (ws_out_buf_push(c, buf, (size_t)n) < 0) {
        ws_conn_kill(c);
        return;
    }
    if (*left == 0) {
        ws_http_file_done(c);
        ws_conn_linger(c);
    } else {
        ws_timer_set(c, WS_TL_IDLE, c->srv->opts.idle_timeout_ms);
    }
}
