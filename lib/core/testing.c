/* lib/core/testing.c - the communicator (cchannels/testing.h): an in-process host.
 *
 * A communicator implements cch_transport for one connection of an app, without any
 * socket: it records the handshake outcome (101 or the rejection status), the chosen
 * subprotocol, every message the consumer sends (copied, in a FIFO) and the close
 * code and reason.
 *
 * The transport contract forbids calling cch_conn_disconnected from inside a
 * transport callback. So when the consumer closes (or rejects), the callback only
 * records that the transport is gone, and the communicator ends the connection at
 * the start or end of its own next call (connect, receive, close_code, send,
 * disconnect, conn, free), never while the connection's code is on the stack. */
#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "cchannels/app.h"
#include "cchannels/error.h"
#include "cchannels/msg.h"
#include "cchannels/testing.h"

/* Code given to cch_conn_disconnected after a rejected handshake: no close frame was
 * ever exchanged. */
#define REJECTED_DISCONNECT_CODE 1006

typedef struct frame {
    struct frame *next;
    size_t len;
    bool binary;
    char data[]; /* len bytes + NUL */
} frame;

enum comm_state {
    COMM_NEW,          /* connect not called yet (or cch_conn_open failed) */
    COMM_OPEN,         /* a connection exists (decided or not) */
    COMM_GONE          /* the connection has ended */
};

struct cch_communicator {
    cch_app *app;
    char *path;               /* owned; the path without the query */
    char *query;              /* owned; NULL when the path had no '?' */
    cch_header *headers;      /* n_headers copies + 1 slot for Sec-WebSocket-Protocol */
    size_t n_headers;
    char *header_text;        /* one block holding every copied name and value */
    char *subprotocols;       /* offered list, or NULL */

    enum comm_state state;
    cch_conn *conn;
    bool connect_reported;    /* connect returned a decision (0 or CCH_EREJECTED) */
    int status;               /* 0, 101, or the rejection status */
    char *subprotocol;        /* chosen by the consumer */
    int close_code;           /* the consumer's close code, 0 while not closed */
    char *close_reason;
    bool transport_gone;      /* end the connection at the next safe point */
    int gone_code;

    frame *head, *tail;       /* what the consumer sent, oldest first */
    frame *held;              /* the frame last returned by receive */
};

/* ---- transport callbacks (never end the connection here) --------------------- */

static int tp_accept(void *tctx, const char *subprotocol) {
    cch_communicator *t = tctx;
    if (subprotocol) {
        char *copy = cch__strdup(subprotocol);
        if (!copy) return CCH_ENOMEM;
        cch__free(t->subprotocol);
        t->subprotocol = copy;
    }
    t->status = 101;
    return 0;
}

static int tp_reject(void *tctx, int http_status) {
    cch_communicator *t = tctx;
    t->status = http_status;
    t->transport_gone = true;
    t->gone_code = REJECTED_DISCONNECT_CODE;
    return 0;
}

static int push_frame(cch_communicator *t, const void *data, size_t len, bool binary) {
    if (t->transport_gone || t->close_code) return CCH_ECLOSED;
    frame *f = cch__malloc(sizeof *f + len + 1);
    if (!f) return CCH_ENOMEM;
    f->next = NULL;
    f->len = len;
    f->binary = binary;
    if (len) memcpy(f->data, data, len);
    f->data[len] = '\0';
    if (t->tail) t->tail->next = f;
    else t->head = f;
    t->tail = f;
    return 0;
}

static int tp_send(void *tctx, const void *data, size_t len, bool binary) {
    return push_frame(tctx, data, len, binary);
}

static int tp_send_body(void *tctx, const cch_msg *m) {
    return push_frame(tctx, cch_msg_body(m), cch_msg_body_len(m), false);
}

static int tp_close(void *tctx, int code, const char *reason) {
    cch_communicator *t = tctx;
    if (t->close_code) return 0;
    char *copy = cch__strdup(reason ? reason : "");
    if (!copy) return CCH_ENOMEM;
    t->close_reason = copy;
    t->close_code = code;
    /* The client answers the close frame with the same code. */
    t->transport_gone = true;
    t->gone_code = code;
    return 0;
}

static const cch_transport communicator_transport = {
    .accept = tp_accept,
    .reject = tp_reject,
    .send = tp_send,
    .send_body = tp_send_body,
    .close = tp_close,
};

/* ---- helpers ----------------------------------------------------------------- */

/* Ends the connection if its transport went away during an earlier callback. */
static void settle(cch_communicator *t) {
    if (!t->transport_gone || !t->conn) return;
    cch_conn *c = t->conn;
    t->conn = NULL;
    t->state = COMM_GONE;
    cch_conn_disconnected(c, t->gone_code);
}

static void free_frames(cch_communicator *t) {
    cch__free(t->held);
    t->held = NULL;
    for (frame *f = t->head, *next; f; f = next) {
        next = f->next;
        cch__free(f);
    }
    t->head = t->tail = NULL;
}

/* Copies the headers into one block: names and values NUL-terminated. */
static int copy_headers(cch_communicator *t, const cch_header *headers, size_t n) {
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if ((!headers[i].name && headers[i].name_len) ||
            (!headers[i].value && headers[i].value_len))
            return CCH_EINVAL;
        total += headers[i].name_len + headers[i].value_len + 2;
    }
    t->headers = cch__calloc(n + 1, sizeof *t->headers);
    t->header_text = cch__malloc(total);
    if (!t->headers || !t->header_text) return CCH_ENOMEM;
    char *p = t->header_text;
    for (size_t i = 0; i < n; i++) {
        cch_header *h = &t->headers[i];
        if (headers[i].name_len) memcpy(p, headers[i].name, headers[i].name_len);
        p[headers[i].name_len] = '\0';
        h->name = p;
        h->name_len = headers[i].name_len;
        p += h->name_len + 1;
        if (headers[i].value_len) memcpy(p, headers[i].value, headers[i].value_len);
        p[headers[i].value_len] = '\0';
        h->value = p;
        h->value_len = headers[i].value_len;
        p += h->value_len + 1;
    }
    t->n_headers = n;
    return 0;
}

static void free_communicator(cch_communicator *t) {
    free_frames(t);
    cch__free(t->path);
    cch__free(t->query);
    cch__free(t->headers);
    cch__free(t->header_text);
    cch__free(t->subprotocols);
    cch__free(t->subprotocol);
    cch__free(t->close_reason);
    cch__free(t);
}

/* ---- the public API ---------------------------------------------------------- */

cch_communicator *cch_communicator_new(cch_app *app, const char *path,
                                       const cch_header *headers, size_t n_headers) {
    if (!app || !path || (n_headers > 0 && !headers)) return NULL;
    cch_communicator *t = cch__calloc(1, sizeof *t);
    if (!t) return NULL;
    t->app = app;
    const char *q = strchr(path, '?');
    if (q) {
        t->path = cch__strndup(path, (size_t)(q - path));
        t->query = cch__strdup(q + 1);
    } else {
        t->path = cch__strdup(path);
    }
    if (!t->path || (q && !t->query) || copy_headers(t, headers, n_headers) != 0) {
        free_communicator(t);
        return NULL;
    }
    return t;
}

int cch_communicator_offer_subprotocols(cch_communicator *t, const char *list) {
    if (!t || !list) return CCH_EINVAL;
    if (t->state != COMM_NEW) return CCH_ESTATE;
    char *copy = cch__strdup(list);
    if (!copy) return CCH_ENOMEM;
    cch__free(t->subprotocols);
    t->subprotocols = copy;
    return 0;
}

/* What connect reports for the current handshake state. */
static int report_decision(cch_communicator *t) {
    if (t->status == 0) return CCH_EAGAIN;
    t->connect_reported = true;
    return t->status == 101 ? 0 : CCH_EREJECTED;
}

int cch_communicator_connect(cch_communicator *t) {
    if (!t) return CCH_EINVAL;
    settle(t);
    if (t->state != COMM_NEW) {
        if (t->connect_reported) return CCH_ESTATE;
        return report_decision(t);
    }
    size_t n = t->n_headers;
    if (t->subprotocols) {
        cch_header *h = &t->headers[n++];
        h->name = "Sec-WebSocket-Protocol";
        h->name_len = strlen(h->name);
        h->value = t->subprotocols;
        h->value_len = strlen(t->subprotocols);
    }
    cch_request req = {
        .path = t->path,
        .query = t->query,
        .headers = t->headers,
        .n_headers = n,
        .client_host = "127.0.0.1",
        .client_port = 50000,
    };
    t->status = 0;
    t->transport_gone = false;
    cch_conn *c = NULL;
    int rc = cch_conn_open(t->app, &req, &communicator_transport, t, &c);
    if (rc < 0) {
        /* No connection was made: a real host would answer 500. */
        t->status = 500;
        return rc;
    }
    t->conn = c;
    t->state = COMM_OPEN;
    settle(t);
    return report_decision(t);
}

int cch_communicator_status(cch_communicator *t) { return t ? t->status : 0; }

const char *cch_communicator_subprotocol(cch_communicator *t) {
    return t ? t->subprotocol : NULL;
}

static int send_message(cch_communicator *t, const void *data, size_t len, bool binary) {
    if (!t || (!data && len)) return CCH_EINVAL;
    settle(t);
    if (t->state == COMM_NEW) return CCH_ESTATE;
    if (t->state == COMM_GONE || t->transport_gone) return CCH_ECLOSED;
    if (t->status != 101) return CCH_ESTATE;
    int rc = cch_conn_receive(t->conn, data ? data : "", len, binary);
    settle(t);
    return rc;
}

int cch_communicator_send_text(cch_communicator *t, const char *text, size_t len) {
    return send_message(t, text, len, false);
}

int cch_communicator_send_binary(cch_communicator *t, const void *data, size_t len) {
    return send_message(t, data, len, true);
}

/* Delivers pending layer messages (to every connection of the app) and ends this
 * connection if a handler closed it. */
static int dispatch(cch_communicator *t) {
    settle(t);
    int rc = cch_app_dispatch(t->app, 0);
    settle(t);
    return rc < 0 ? rc : 0;
}

int cch_communicator_receive(cch_communicator *t, const char **data, size_t *len,
                             bool *binary) {
    if (!t || !data || !len || !binary) return CCH_EINVAL;
    cch__free(t->held);
    t->held = NULL;
    if (t->state == COMM_NEW) return CCH_ESTATE;
    int rc = dispatch(t);
    if (rc < 0) return rc;
    frame *f = t->head;
    if (!f) return t->state == COMM_GONE || t->transport_gone ? CCH_ECLOSED : CCH_EAGAIN;
    t->head = f->next;
    if (!t->head) t->tail = NULL;
    t->held = f;
    *data = f->data;
    *len = f->len;
    *binary = f->binary;
    return 0;
}

int cch_communicator_close_code(cch_communicator *t) {
    if (!t) return 0;
    if (t->state != COMM_NEW) (void)dispatch(t);
    return t->close_code;
}

const char *cch_communicator_close_reason(cch_communicator *t) {
    return t ? t->close_reason : NULL;
}

int cch_communicator_disconnect(cch_communicator *t, int code) {
    if (!t) return CCH_EINVAL;
    settle(t);
    if (t->state != COMM_OPEN || !t->conn) return CCH_ESTATE;
    cch_conn *c = t->conn;
    t->conn = NULL;
    t->state = COMM_GONE;
    cch_conn_disconnected(c, code);
    return 0;
}

cch_conn *cch_communicator_conn(cch_communicator *t) {
    if (!t) return NULL;
    settle(t);
    return t->conn;
}

void cch_communicator_free(cch_communicator *t) {
    if (!t) return;
    settle(t);
    if (t->conn) (void)cch_communicator_disconnect(t, 1000);
    free_communicator(t);
}
