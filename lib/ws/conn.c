/* lib/ws/conn.c - one TCP connection's life: states, close paths, the transport.
 *
 *   WS_HTTP --head complete--> (static file) or cch_conn_open
 *      accept -> WS_OPEN      reject / error -> WS_LINGER      undecided -> WS_DECIDING
 *   WS_OPEN --we close--> WS_CLOSING --client's close--> WS_LINGER
 *   WS_OPEN --client's close / protocol error--> WS_LINGER
 *   WS_LINGER: flush, shutdown(SHUT_WR), read and drop until EOF or close_timeout
 *   any state --EOF, error, timeout--> WS_DEAD (uv_close)
 *
 * cch_conn_disconnected runs exactly once per connection cch_conn_open made, from
 * the TCP handle's close callback: always from the loop, never from inside a
 * transport callback. */
#include "alloc.h"
#include "ws_internal.h"

#include <string.h>
#include <sys/socket.h>

static void close_cb(uv_handle_t *h)
{
    ws_conn *c = (ws_conn *)h;
    ws_server *s = c->srv;
    ws_out_free(c);
    ws_input_free(c);
    ws_http_free(c);
    int code = c->code ? c->code : 1006;
    if (c->flags & WS_F_UPGRADED) {
        s->stats.ws_active--;
        if (s->opts.log && s->opts.log_level >= CCH_LOG_INFO) {
            cch_conn *cc = ws_conn_cc(c);
            const char *path = cc ? cch_scope_path(cch_conn_scope(cc)) : "";
            ws_log(s, CCH_LOG_INFO, "%s closed %d", path, code);
        }
    }
    if (ws_conn_cc(c)) {
        cch_conn *cc = ws_conn_cc(c);
        c->tcp.data = NULL;
        cch_conn_disconnected(cc, code);
    }
    s->stats.tcp_active--;
    if (!(c->flags & WS_F_BUSY))
        s->n_conns--;
    if (c->flags & WS_F_DIRTY)
        c->flags |= WS_F_FREE_ME; /* still on the dirty list: freed from there */
    else
        cch__free(c);
    ws_server_maybe_done(s);
}

static void plain_close_cb(uv_handle_t *h)
{
    cch__free(h);
}

ws_conn *ws_conn_new(ws_server *s)
{
    ws_conn *c = cch__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        cch__free(c);
        return NULL;
    }
    c->srv = s;
    c->tcp.data = NULL;
    c->state = WS_HTTP;
    return c;
}

void ws_conn_discard_new(ws_conn *c)
{
    /* Accept failed: nothing was counted, nothing else to undo. */
    uv_close((uv_handle_t *)&c->tcp, plain_close_cb);
}

void ws_conn_kill(ws_conn *c)
{
    if (c->state == WS_DEAD)
        return;
    ws_server *s = c->srv;
    c->state = WS_DEAD;
    ws_timer_set(c, WS_TL_NONE, 0);
    if (c->flags & WS_F_PAUSED)
        ws_flow_forget(c);
    if (s->cur != c)
        ws_input_free(c); /* else input.c frees it when wslay returns */
    ws_http_free(c);
    uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static void start_reading(ws_conn *c)
{
    if (c->flags & WS_F_READING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, ws_alloc_cb, ws_read_cb) == 0)
        c->flags |= WS_F_READING;
}

static void shutdown_write(ws_conn *c)
{
    if (c->flags & WS_F_SHUT_WR)
        return;
    c->flags |= WS_F_SHUT_WR;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        shutdown(fd, SHUT_WR);
}

void ws_conn_linger(ws_conn *c)
{
    if (c->state == WS_LINGER || c->state == WS_DEAD)
        return;
    c->state = WS_LINGER;
    if (c->srv->cur != c)
        ws_input_free(c);
    ws_timer_set(c, WS_TL_CLOSING, c->srv->opts.close_timeout_ms);
    start_reading(c);
    if (!c->outq)
        shutdown_write(c);
    else
        ws_mark_dirty(c);
}

void ws_conn_drained(ws_conn *c)
{
    int fd;
    uint64_t *left;
    if (ws_http_file_next(c, &fd, &left))
        ws_static_continue(c);
    else if (c->state == WS_LINGER)
        shutdown_write(c);
}

static int queue_close_frame(ws_conn *c, int code, const char *reason)
{
    uint8_t payload[125];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 123)
        rl = 123;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rl)
        memcpy(payload + 2, reason, rl);
    c->flags |= WS_F_CLOSE_SENT;
    if (!(c->flags & WS_F_CLOSE_RECV))
        ws_conn_set_code(c, code);
    return ws_out_control(c, 8, payload, 2 + rl);
}

int ws_conn_close(ws_conn *c, int code, const char *reason)
{
    if (c->state == WS_HTTP || c->state == WS_DECIDING)
        return ws_http_reject(c, 403);
    if (c->state != WS_OPEN || (c->flags & WS_F_CLOSE_SENT))
        return CCH_ECLOSED;
    if (code == 0)
        code = 1000;
    if (queue_close_frame(c, code, reason) < 0) {
        ws_conn_kill(c);
        return 0;
    }
    c->state = WS_CLOSING;
    ws_timer_set(c, WS_TL_CLOSING, c->srv->opts.close_timeout_ms);
    return 0;
}

void ws_conn_fail(ws_conn *c, int code, const char *reason)
{
    if (c->state == WS_DEAD || c->state == WS_LINGER)
        return;
    if (!(c->flags & WS_F_CLOSE_SENT) && queue_close_frame(c, code, reason) < 0) {
        ws_conn_kill(c);
        return;
    }
    ws_conn_linger(c);
}

void ws_conn_opened(ws_conn *c)
{
    ws_server *s = c->srv;
    c->state = WS_OPEN;
    c->flags |= WS_F_UPGRADED;
    s->stats.handshakes++;
    s->stats.ws_active++;
    ws_timer_set(c, WS_TL_IDLE, s->opts.idle_timeout_ms);
    start_reading(c);
}

void ws_conn_start(ws_conn *c)
{
    start_reading(c);
}

void ws_conn_on_data(ws_conn *c, const char *data, size_t len)
{
    switch (c->state) {
    case WS_HTTP:
        ws_http_feed(c, data, len);
        break;
    case WS_OPEN:
        if (c->tlist == WS_TL_IDLE)
            ws_timer_set(c, WS_TL_IDLE, c->srv->opts.idle_timeout_ms);
        c->flags &= (uint16_t)~WS_F_PINGED;
        ws_input_feed(c, (const uint8_t *)data, len);
        break;
    case WS_CLOSING:
        ws_input_feed(c, (const uint8_t *)data, len);
        break;
    default:
        break; /* lingering: read and drop */
    }
}

void ws_conn_on_eof(ws_conn *c)
{
    ws_conn_kill(c);
}

void ws_timer_expired(ws_conn *c)
{
    ws_server *s = c->srv;
    char peer[64];
    switch (c->tlist) {
    case WS_TL_HANDSHAKE:
        s->stats.handshake_timeouts++;
        ws_conn_peer(c, peer, sizeof peer);
        ws_log(s, CCH_LOG_INFO, "%s: handshake timeout", peer);
        ws_http_error(c, 408, NULL);
        break;
    case WS_TL_IDLE:
        if (c->state != WS_OPEN) {
            ws_conn_kill(c); /* a static file the client stopped reading */
        } else if (c->flags & WS_F_PINGED) {
            s->stats.idle_closed++;
            ws_conn_peer(c, peer, sizeof peer);
            ws_log(s, CCH_LOG_INFO, "%s: idle timeout, closing with 1001", peer);
            ws_conn_close(c, 1001, "idle timeout");
        } else {
            if (ws_out_control(c, 9, NULL, 0) < 0) {
                ws_conn_kill(c);
                break;
            }
            c->flags |= WS_F_PINGED;
            s->stats.pings_sent++;
            ws_timer_set(c, WS_TL_IDLE, s->opts.idle_timeout_ms);
        }
        break;
    case WS_TL_CLOSING:
        if (c->state == WS_CLOSING || ws_out_pending(c) > 0) {
            s->stats.close_timeouts++;
            ws_conn_peer(c, peer, sizeof peer);
            ws_log(s, CCH_LOG_INFO, "%s: close timeout, dropping the connection", peer);
        }
        ws_conn_kill(c);
        break;
    default:
        break;
    }
}

/* ---- the transport given to cch_conn_open (tctx: the ws_conn) ------------------- */

static int tp_accept(void *t, const char *subprotocol)
{
    return ws_http_accept(t, subprotocol);
}

static int tp_reject(void *t, int status)
{
    return ws_http_reject(t, status ? status : 403);
}

static int tp_send(void *t, const void *data, size_t len, bool binary)
{
    return ws_out_send(t, data, len, binary);
}

static int tp_send_body(void *t, const cch_msg *m)
{
    return ws_out_send_body(t, m);
}

static int tp_close(void *t, int code, const char *reason)
{
    ws_conn *c = t;
    if (c->state == WS_HTTP || c->state == WS_DECIDING)
        return ws_http_reject(c, 403);
    return ws_conn_close(c, code, reason);
}

const cch_transport ws_transport = {
    .accept = tp_accept,
    .reject = tp_reject,
    .send = tp_send,
    .send_body = tp_send_body,
    .close = tp_close,
};
