/* lib/ws/input.c - what clients send, parsed by wslay, with a parser only when needed.
 *
 * wslay does the protocol work: unmasking, fragmentation, control frames, UTF-8
 * validation (also across fragments and in close reasons), close codes, and the
 * frame size limit (max_recv_msg_length -> 1009). Its pongs and close frames go
 * through our send callback into the connection's own output queue, so they keep
 * their order with our frames.
 *
 * Data messages are assembled here, not by wslay (which runs without buffering):
 * wslay keeps each fragment in its own pair of allocations, so a message of 1-byte
 * fragments would cost about 100 times its size, and checks the size of each frame
 * only. We append every fragment's payload to one buffer per connection, growing it
 * geometrically up to max_message_bytes, and refuse (1009) a fragment that would
 * take the message past the limit when its frame starts, before buffering any of it.
 *
 * A wslay event context costs about 9 KiB, far more than an idle connection may.
 * So a connection has one (a ws_input) only while it holds an unfinished frame or
 * message: it is taken when bytes arrive and given back when the bytes are consumed
 * at a message boundary. We know where we are from wslay's frame callbacks (start,
 * end, fin bit, opcode) and by counting the bytes of complete frames against the
 * bytes handed to wslay, which tells whether part of a next header is still in
 * wslay's buffer. A clean context is kept as the server's spare and reused, so the
 * common case (whole messages per read) allocates nothing. */
#include "alloc.h"
#include "json_scan.h"
#include "ws_internal.h"

#include <string.h>

#include <wslay/wslay.h>

struct ws_input {
    wslay_event_context_ptr ctx;
    uint64_t fed;                /* bytes handed to wslay */
    uint64_t consumed;           /* bytes of complete frames */
    uint64_t frame_total;        /* header + payload of the frame being read */
    bool frame_open;             /* a frame started and has not ended */
    bool msg_open;               /* a fragmented data message is unfinished */
    bool data_frame;             /* the current frame is text, binary or continuation */
    bool close_frame;            /* the current frame is a close frame */
    uint8_t close_len;           /* bytes of its payload so far (at most 125) */
    uint8_t close_payload[125];  /* code + reason: wslay, unbuffered, would echo an
                                    invalid reason back; we check it is UTF-8 */
    uint16_t fail_code;          /* a protocol error we found ourselves */
    uint8_t *msg;                /* the data message being assembled */
    size_t msg_len, msg_cap;
};

/* A parser given back keeps a message buffer up to this size for the next one. */
#define WS_INPUT_KEEP_BUF 4096

/* ---- wslay callbacks (user data: the server; the connection is srv->cur) ------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    (void)flags;
    ws_server *s = ud;
    size_t avail = s->cur_len - s->cur_off;
    if (avail == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = avail < len ? avail : len;
    memcpy(buf, s->cur_data + s->cur_off, n);
    s->cur_off += n;
    s->cur->in->fed += n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    (void)flags;
    ws_server *s = ud;
    ws_conn *c = s->cur;
    if (c->flags & WS_F_CLOSE_SENT)
        return (ssize_t)len; /* we said close already: nothing may follow it */
    if (ws_out_pending(c) + len > s->opts.max_outbound_bytes + 4096) {
        /* A client that sends pings and reads nothing: count its pongs. */
        c->in->fail_code = 1008;
        return (ssize_t)len;
    }
    if (ws_out_raw(c, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    (void)ctx, (void)ud;
    memset(buf, 0, len); /* servers do not mask */
    return 0;
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    ws_server *s = ud;
    ws_input *in = s->cur->in;
    uint64_t pl = arg->payload_length;
    /* Client frames are masked (wslay refuses the others before this callback), and
     * wslay insists on the shortest length encoding: the header size follows. */
    uint64_t hlen = 2 + 4 + (pl < 126 ? 0 : pl <= 0xffffu ? 2 : 8);
    in->frame_open = true;
    in->frame_total = hlen + pl;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && pl == 1) {
        /* A close payload is empty or holds a 2-byte code: 1 byte is an error
         * wslay lets through. */
        in->fail_code = 1002;
        wslay_event_shutdown_read(ctx);
    }
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        in->msg_open = !arg->fin;
    else if (arg->opcode == WSLAY_CONTINUATION_FRAME && arg->fin)
        in->msg_open = false;
    in->data_frame = arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME ||
                     arg->opcode == WSLAY_CONTINUATION_FRAME;
    in->close_frame = arg->opcode == WSLAY_CONNECTION_CLOSE;
    in->close_len = 0;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        in->msg_len = 0;
    if (in->data_frame && pl > s->opts.max_message_bytes - in->msg_len && !in->fail_code) {
        /* The whole message, not only this frame, must fit the limit. */
        in->fail_code = 1009;
        wslay_event_shutdown_read(ctx);
    }
}

/* Appends a chunk of a data frame's payload to the message being assembled. */
static void frame_chunk_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud)
{
    ws_server *s = ud;
    ws_input *in = s->cur->in;
    if (in->close_frame) { /* wslay refuses control frames over 125 bytes */
        size_t n = arg->data_length;
        if (n > sizeof in->close_payload - in->close_len)
            n = sizeof in->close_payload - in->close_len;
        memcpy(in->close_payload + in->close_len, arg->data, n);
        in->close_len = (uint8_t)(in->close_len + n);
        return;
    }
    if (!in->data_frame || in->fail_code || arg->data_length == 0)
        return;
    size_t need = in->msg_len + arg->data_length; /* <= max_message_bytes: checked */
    if (need > in->msg_cap) {
        size_t cap = in->msg_cap * 2;
        if (cap > s->opts.max_message_bytes)
            cap = s->opts.max_message_bytes;
        if (cap < need)
            cap = need;
        uint8_t *nb = cch__realloc(in->msg, cap);
        if (!nb) {
            in->fail_code = 1011;
            wslay_event_shutdown_read(ctx);
            return;
        }
        in->msg = nb;
        in->msg_cap = cap;
    }
    memcpy(in->msg + in->msg_len, arg->data, arg->data_length);
    in->msg_len = need;
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *ud)
{
    ws_server *s = ud;
    ws_input *in = s->cur->in;
    in->frame_open = false;
    in->consumed += in->frame_total;
    /* A close reason must be UTF-8 (RFC 6455 7.1.6): 1007, and wslay's echo of it
     * is never sent (its queue is not flushed once fail_code is set). */
    if (in->close_frame && in->close_len > 2 && !in->fail_code &&
        !cch__utf8_valid(in->close_payload + 2, in->close_len - 2u)) {
        in->fail_code = 1007;
        wslay_event_shutdown_read(ctx);
    }
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    ws_server *s = ud;
    ws_conn *c = s->cur;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        if (c->in->fail_code)
            return;
        /* After our close frame, messages are read and dropped (RFC 6455 7.1.2). */
        if (c->state == WS_OPEN && !(c->flags & WS_F_CLOSE_SENT) && ws_conn_cc(c)) {
            s->stats.messages_in++;
            cch_conn_receive(ws_conn_cc(c), c->in->msg_len ? (const void *)c->in->msg : "",
                             c->in->msg_len, arg->opcode == WSLAY_BINARY_FRAME);
        }
        c->in->msg_len = 0;
        break;
    case WSLAY_PONG:
        c->flags &= (uint16_t)~WS_F_PINGED;
        break;
    case WSLAY_PING:
        /* wslay queued the pong: move it to our queue now, so it keeps its place
         * among the replies to the messages around the ping. */
        if (wslay_event_send(ctx) != 0)
            c->in->fail_code = 1011;
        break;
    default:
        break; /* close: handled after recv */
    }
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .genmask_callback = genmask_cb,
    .on_frame_recv_start_callback = frame_start_cb,
    .on_frame_recv_chunk_callback = frame_chunk_cb,
    .on_frame_recv_end_callback = frame_end_cb,
    .on_msg_recv_callback = msg_cb,
};

/* ---- parsers: taken lazily, given back at message boundaries ------------------- */

static ws_input *input_get(ws_server *s)
{
    ws_input *in = s->spare_ctx;
    if (in) {
        s->spare_ctx = NULL;
        wslay_event_set_error(in->ctx, 0);
    } else {
        in = cch__malloc(sizeof *in);
        if (!in)
            return NULL;
        if (wslay_event_context_server_init(&in->ctx, &callbacks, s) != 0) {
            cch__free(in);
            return NULL;
        }
        wslay_event_config_set_max_recv_msg_length(in->ctx, s->opts.max_message_bytes);
        wslay_event_config_set_no_buffering(in->ctx, 1);
        in->msg = NULL;
        in->msg_cap = 0;
    }
    in->fed = in->consumed = in->frame_total = 0;
    in->frame_open = in->msg_open = in->data_frame = false;
    in->fail_code = 0;
    in->msg_len = 0;
    s->stats.input_contexts++;
    return in;
}

static void input_destroy(ws_input *in)
{
    wslay_event_context_free(in->ctx);
    cch__free(in->msg);
    cch__free(in);
}

/* Gives back a parser that sits at a message boundary with nothing buffered. */
static void input_put(ws_conn *c)
{
    ws_server *s = c->srv;
    ws_input *in = c->in;
    c->in = NULL;
    s->stats.input_contexts--;
    if (!s->spare_ctx && !s->stopping) {
        if (in->msg_cap > WS_INPUT_KEEP_BUF) {
            cch__free(in->msg);
            in->msg = NULL;
            in->msg_cap = 0;
        }
        s->spare_ctx = in;
    } else {
        input_destroy(in);
    }
}

void ws_input_free(ws_conn *c)
{
    if (!c->in)
        return;
    input_destroy(c->in);
    c->in = NULL;
    c->srv->stats.input_contexts--;
}

void ws_input_free_spare(ws_server *s)
{
    if (s->spare_ctx) {
        input_destroy(s->spare_ctx);
        s->spare_ctx = NULL;
    }
}

static void count_close(ws_server *s, int code)
{
    if (code == 1009)
        s->stats.closed_too_big++;
    else if (code == 1002 || code == 1007)
        s->stats.closed_protocol++;
}

void ws_input_feed(ws_conn *c, const uint8_t *data, size_t len)
{
    ws_server *s = c->srv;
    if (!c->in && !(c->in = input_get(s))) {
        ws_conn_fail(c, 1011, "out of memory");
        return;
    }
    ws_input *in = c->in;
    s->cur = c;
    s->cur_data = data;
    s->cur_len = len;
    s->cur_off = 0;
    int rr = wslay_event_recv(in->ctx);
    int sr = 0;
    if (rr == 0 && !in->fail_code)
        sr = wslay_event_send(in->ctx);
    s->cur = NULL;
    s->cur_data = NULL;
    s->cur_len = s->cur_off = 0;
    if (c->state == WS_DEAD)
        return;

    if (rr != 0 || sr != 0 || in->fail_code) {
        /* A framing error wslay reports without a code (control frame too long or
         * fragmented, bad length encoding), one we found, or no memory. */
        int code = in->fail_code ? in->fail_code
                   : (rr == WSLAY_ERR_NOMEM || sr != 0) ? 1011 : 1002;
        if (code == 1008)
            s->stats.closed_slow++;
        count_close(s, code);
        char peer[64];
        ws_conn_peer(c, peer, sizeof peer);
        ws_log(s, CCH_LOG_INFO, "%s: protocol error, closing with %d", peer, code);
        ws_conn_fail(c, code, NULL);
        return;
    }
    wslay_event_context_ptr ctx = in->ctx;
    if (wslay_event_get_close_received(ctx)) {
        c->flags |= WS_F_CLOSE_RECV;
        ws_conn_set_code(c, wslay_event_get_status_code_received(ctx)); /* over ours */
        if (wslay_event_get_close_sent(ctx))
            c->flags |= WS_F_CLOSE_SENT;
        ws_input_free(c);
        ws_conn_linger(c);
        return;
    }
    if (wslay_event_get_close_sent(ctx)) {
        /* wslay failed the connection itself: 1002, 1007 or 1009. */
        int code = wslay_event_get_status_code_sent(ctx);
        if (!(c->flags & WS_F_CLOSE_SENT)) {
            c->flags |= WS_F_CLOSE_SENT;
            if (!(c->flags & WS_F_CLOSE_RECV))
                ws_conn_set_code(c, code);
        }
        count_close(s, code);
        char peer[64];
        ws_conn_peer(c, peer, sizeof peer);
        ws_log(s, CCH_LOG_INFO, "%s: closing with %d (%s)", peer, code,
               code == 1009 ? "message too big" : code == 1007 ? "invalid UTF-8" : "protocol error");
        ws_input_free(c);
        ws_conn_linger(c);
        return;
    }
    if (!in->frame_open && !in->msg_open && in->fed == in->consumed &&
        wslay_event_get_read_enabled(ctx) && !wslay_event_want_write(ctx))
        input_put(c);
}
