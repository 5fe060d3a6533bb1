/* lib/core/conn.c - one connection: opening it (middleware, routing, channel,
 * connect), the consumer API of cchannels/consumer.h (accept, reject, send, close,
 * groups), the built-in websocket.send / websocket.close handlers, and its end.
 *
 * States: pending -> accepted -> closing -> gone, or pending -> rejected -> gone.
 * A connection is one allocation (struct cch_conn with its channel's name, then the
 * consumer's state, then its scope's buffer); the names of the groups it joined share
 * the rest of the name's buffer, or take one more allocation when they do not fit. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "app_internal.h"
#include "msg_internal.h"
#include "cchannels/consumer.h"
#include "cchannels/error.h"
#include "cchannels/layer.h"
#include "cchannels/msg.h"

#define CLOSE_REASON_MAX 123

/* ---- helpers ---------------------------------------------------------------------- */

/* Whether c->groups lives in channel_buf (after the channel's name). */
static bool groups_inline(const cch_conn *c) {
    uintptr_t g = (uintptr_t)c->groups, b = (uintptr_t)c->channel_buf;
    return g >= b && g < b + sizeof c->channel_buf;
}

static void groups_free(cch_conn *c) {
    if (!groups_inline(c)) cch__free(c->groups);
    c->groups = NULL;
}

/* Makes room for `need` bytes of group names: in channel_buf after the channel's name
 * while they fit, else on the heap (what is there is kept). Returns 0 or CCH_ENOMEM. */
static int groups_reserve(cch_conn *c, size_t need) {
    if (!c->channel_big && (!c->groups || groups_inline(c))) {
        size_t at = strlen(c->channel_buf) + 1;
        if (need <= sizeof c->channel_buf - at) {
            c->groups = c->channel_buf + at;
            return 0;
        }
    }
    char *grown = cch__realloc(groups_inline(c) ? NULL : c->groups, need);
    if (!grown) return CCH_ENOMEM;
    if (groups_inline(c)) memcpy(grown, c->groups, c->groups_len);
    c->groups = grown;
    return 0;
}

static void reject_now(cch_conn *c, int status) {
    c->state = CCH__CONN_REJECTED;
    c->app->stats.connections_rejected++;
    int rc = c->tp->reject(c->tctx, status);
    if (rc < 0)
        cch__app_log(c->app, CCH_LOG_WARN, "transport failed to reject %.200s with %d: %s",
                     cch_scope_path(&c->scope), status, cch_strerror(rc));
    cch__scope_drop_offers(&c->scope);
}

static bool valid_close_code(int code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

static int can_send(cch_conn *c) {
    if (!c) return CCH_EINVAL;
    if (c->state == CCH__CONN_PENDING) return CCH_ESTATE;
    if (c->state != CCH__CONN_ACCEPTED) return CCH_ECLOSED;
    return 0;
}

/* ---- opening, receiving, ending --------------------------------------------------- */

int cch_conn_open(cch_app *app, const cch_request *req, const cch_transport *tp, void *tctx,
                  cch_conn **out) {
    if (out) *out = NULL;
    if (!app || !req || !req->path || !tp || !out) return CCH_EINVAL;
    if (!tp->accept || !tp->reject || !tp->send || !tp->close) return CCH_EINVAL;
    if (req->n_headers > 0 && !req->headers) return CCH_EINVAL;

    cch__route_span spans[CCH__ROUTE_MAX_PARAMS];
    const cch__route_entry *route = cch__app_match(app, req->path, spans);
    size_t state_size = route ? route->cls->state_size : 0;
    const cch__route *pattern = route ? route->pattern : NULL;
    const cch__route_span *pspans = route ? spans : NULL;
    size_t scope_size = cch__scope_buf_size(req, pattern, pspans); /* 0: init says why */
    size_t size = state_size ? CCH__CONN_STATE_OFFSET : sizeof(struct cch_conn);
    if (state_size > SIZE_MAX - size - scope_size) return CCH_ENOMEM;
    size += state_size;
    cch_conn *c = cch__calloc(1, size + scope_size);
    if (!c) return CCH_ENOMEM;
    int rc = cch__scope_init_in(&c->scope, req, pattern, pspans,
                                scope_size ? (char *)c + size : NULL);
    if (rc < 0) {
        cch__free(c);
        return rc;
    }
    c->app = app;
    c->tp = tp;
    c->tctx = tctx;
    c->state = CCH__CONN_PENDING;

    int status = cch__app_run_middleware(app, &c->scope);
    if (status == 0 && !route) {
        cch__app_log(app, CCH_LOG_INFO, "no route for %.200s: 404", req->path);
        status = 404;
    }
    if (status == 0) {
        rc = cch_layer_new_channel(app->layer, NULL, app->receiver, c, c->channel_buf,
                                   sizeof c->channel_buf);
        if (rc == CCH_ETOOBIG) { /* a long name: nothing was made, ask again */
            char *big = cch__malloc(CCH_NAME_BUF);
            rc = big ? cch_layer_new_channel(app->layer, NULL, app->receiver, c, big,
                                             CCH_NAME_BUF)
                     : CCH_ENOMEM;
            if (rc == 0) {
                memcpy(c->channel_buf, &big, sizeof big);
                c->channel_big = true;
            } else {
                cch__free(big);
            }
        }
        if (rc < 0) {
            cch__app_log(app, CCH_LOG_ERROR, "cannot create a channel for %.200s: %s",
                         req->path, cch_strerror(rc));
            cch__scope_destroy(&c->scope);
            cch__free(c);
            return rc;
        }
        c->has_channel = true;
        c->route = route;
    }
    app->stats.connections_opened++;
    app->stats.connections_active++;

    if (status != 0) {
        reject_now(c, status);
    } else {
        c->connect_ran = true;
        if (route->cls->connect) {
            rc = route->cls->connect(c);
            if (rc < 0 && c->state == CCH__CONN_PENDING) {
                cch__app_log(app, CCH_LOG_WARN, "connect failed on %.200s: %s: 500",
                             req->path, cch_strerror(rc));
                reject_now(c, 500);
            }
        } else {
            cch_accept(c, NULL);
        }
    }
    if (cch__scope_end_open(&c->scope, c->state == CCH__CONN_PENDING) < 0)
        cch__app_log(app, CCH_LOG_WARN,
                     "out of memory keeping the subprotocol offers of %.200s", req->path);
    *out = c;
    return 0;
}

int cch_conn_receive(cch_conn *c, const void *data, size_t len, bool binary) {
    if (!c || (!data && len > 0)) return CCH_EINVAL;
    if (c->state != CCH__CONN_ACCEPTED) return CCH_ESTATE;
    c->app->stats.messages_received++;
    if (c->route->cls->receive) c->route->cls->receive(c, data ? data : "", len, binary);
    return 0;
}

void cch_conn_disconnected(cch_conn *c, int code) {
    if (!c) return;
    cch_app *app = c->app;
    c->state = CCH__CONN_GONE;
    if (c->connect_ran && c->route->cls->disconnect) c->route->cls->disconnect(c, code);
    for (uint32_t off = 0; off < c->groups_len;) {
        const char *g = c->groups + off;
        int rc = cch_layer_group_discard(app->layer, g, cch__conn_channel(c));
        if (rc < 0)
            cch__app_log(app, CCH_LOG_WARN, "leaving group %s failed: %s", g, cch_strerror(rc));
        off += (uint32_t)strlen(g) + 1;
    }
    groups_free(c);
    if (c->has_channel) {
        int rc = cch_layer_release_channel(app->layer, cch__conn_channel(c));
        if (rc < 0)
            cch__app_log(app, CCH_LOG_WARN, "releasing channel %s failed: %s", cch__conn_channel(c),
                         cch_strerror(rc));
    }
    cch__app_forget_conn(app, c);
    cch__scope_destroy(&c->scope);
    app->stats.connections_active--;
    if (c->channel_big) cch__free(cch__conn_channel(c));
    cch__free(c);
}

void *cch_conn_transport_ctx(cch_conn *c) { return c ? c->tctx : NULL; }

cch_app *cch_conn_app(cch_conn *c) { return c ? c->app : NULL; }

/* ---- accessors -------------------------------------------------------------------- */

void *cch_state(cch_conn *c) {
    if (!c || !c->route || c->route->cls->state_size == 0) return NULL;
    return (char *)c + CCH__CONN_STATE_OFFSET;
}

cch_scope *cch_conn_scope(cch_conn *c) { return c ? &c->scope : NULL; }

const char *cch_param(cch_conn *c, const char *name) {
    return c ? cch_scope_param(&c->scope, name) : NULL;
}

int64_t cch_user_id(cch_conn *c) { return c ? c->scope.user_id : CCH_USER_ANONYMOUS; }

void *cch_class_data(cch_conn *c) { return (c && c->route) ? c->route->class_ud : NULL; }

const char *cch_channel_name(cch_conn *c) { return c ? cch__conn_channel(c) : NULL; }

cch_layer *cch_conn_layer(cch_conn *c) { return c ? c->app->layer : NULL; }

bool cch_is_open(cch_conn *c) { return c && c->state == CCH__CONN_ACCEPTED; }

/* ---- the handshake ---------------------------------------------------------------- */

int cch_accept(cch_conn *c, const char *subprotocol) {
    if (!c) return CCH_EINVAL;
    if (c->state != CCH__CONN_PENDING) return CCH_ESTATE;
    if (subprotocol) {
        if (!cch_scope_offers_subprotocol(&c->scope, subprotocol)) return CCH_EINVAL;
        int rc = cch__scope_set_subprotocol(&c->scope, subprotocol);
        if (rc < 0) return rc;
    }
    int rc = c->tp->accept(c->tctx, c->scope.subprotocol);
    cch__scope_drop_offers(&c->scope);
    if (rc < 0) {
        cch__app_log(c->app, CCH_LOG_WARN, "transport failed to accept %.200s: %s",
                     cch_scope_path(&c->scope), cch_strerror(rc));
        cch__scope_set_subprotocol(&c->scope, NULL);
        c->state = CCH__CONN_CLOSING;
        return rc;
    }
    c->state = CCH__CONN_ACCEPTED;
    c->app->stats.connections_accepted++;
    return 0;
}

int cch_reject(cch_conn *c, int http_status) {
    if (!c) return CCH_EINVAL;
    if (c->state != CCH__CONN_PENDING) return CCH_ESTATE;
    if (http_status == 0) http_status = 403;
    if (http_status < 400 || http_status > 599) return CCH_EINVAL;
    reject_now(c, http_status);
    return 0;
}

int cch_close(cch_conn *c, int code, const char *reason) {
    if (!c) return CCH_EINVAL;
    if (c->state != CCH__CONN_PENDING && c->state != CCH__CONN_ACCEPTED) return CCH_ECLOSED;
    if (code == 0) code = 1000;
    if (!valid_close_code(code)) return CCH_EINVAL;
    if (!reason) reason = "";
    if (strnlen(reason, CLOSE_REASON_MAX + 1) > CLOSE_REASON_MAX) return CCH_EINVAL;
    if (c->state == CCH__CONN_PENDING) {
        reject_now(c, 403);
        return 0;
    }
    c->state = CCH__CONN_CLOSING;
    int rc = c->tp->close(c->tctx, code, reason);
    if (rc < 0) {
        cch__app_log(c->app, CCH_LOG_WARN, "transport failed to close %s: %s", cch__conn_channel(c),
                     cch_strerror(rc));
        return rc;
    }
    return 0;
}

/* ---- sending to the client -------------------------------------------------------- */

int cch_send_text(cch_conn *c, const char *text, size_t len) {
    int rc = can_send(c);
    if (rc < 0) return rc;
    if (!text && len > 0) return CCH_EINVAL;
    return c->tp->send(c->tctx, text ? text : "", len, false);
}

int cch_send_binary(cch_conn *c, const void *data, size_t len) {
    int rc = can_send(c);
    if (rc < 0) return rc;
    if (!data && len > 0) return CCH_EINVAL;
    return c->tp->send(c->tctx, data ? data : "", len, true);
}

int cch_send_body(cch_conn *c, const cch_msg *m) {
    int rc = can_send(c);
    if (rc < 0) return rc;
    if (!m) return CCH_EINVAL;
    if (c->tp->send_body) return c->tp->send_body(c->tctx, m);
    return c->tp->send(c->tctx, cch_msg_body(m), cch_msg_body_len(m), false);
}

/* ---- built-in handlers ------------------------------------------------------------ */

/* websocket.send's decoded "text" is derived once per message and kept on it as an
 * attachment: a raw message whose body is the text. Every member then sends it with
 * cch_send_body, so the transport frames it once for the whole group, as it does a
 * body, instead of decoding and copying it per member. */
static const char builtin_text_key;

static void unref_attached(void *msg) { cch_msg_unref(msg); }

/* The attached text message of `m`, made on first use. NULL when the body has no
 * string "text" (*err CCH_EBODY) or on CCH_ENOMEM. */
static const cch_msg *builtin_text(const cch_msg *m, int *err) {
    const cch_msg *text = cch_msg_attachment(m, &builtin_text_key);
    if (text) return text;
    const char *raw;
    size_t rlen;
    *err = CCH_EBODY;
    if (cch_msg_field_raw(m, "text", &raw, &rlen) < 0 || rlen < 2 || raw[0] != '"')
        return NULL;
    /* A decoded JSON string is never longer than its source text. */
    char *buf = cch__malloc(rlen + 1);
    *err = CCH_ENOMEM;
    if (!buf) return NULL;
    int n = cch_msg_field_string(m, "text", buf, rlen + 1);
    cch_msg *made = NULL;
    *err = n < 0 ? n : cch__msg_create_raw(&made, "websocket.send", buf, (size_t)n);
    cch__free(buf);
    if (!made) return NULL;
    const cch_msg *won = cch_msg_attach(m, &builtin_text_key, made, unref_attached);
    if (won != made) cch_msg_unref(made); /* lost the race, or out of memory */
    *err = CCH_ENOMEM;
    return won;
}

void cch__conn_builtin_send(cch_conn *c, const cch_msg *m) {
    int err = 0;
    const cch_msg *text = builtin_text(m, &err);
    if (!text) {
        if (err != CCH_ENOMEM) c->app->stats.handler_errors++;
        cch__app_log(c->app, err == CCH_ENOMEM ? CCH_LOG_ERROR : CCH_LOG_WARN,
                     "websocket.send to %s: %s", cch__conn_channel(c),
                     err == CCH_ENOMEM ? "out of memory" : "no string \"text\" in the body");
        return;
    }
    int rc = cch_send_body(c, text);
    if (rc < 0)
        cch__app_log(c->app, CCH_LOG_DEBUG, "websocket.send to %s failed: %s", cch__conn_channel(c),
                     cch_strerror(rc));
}

void cch__conn_builtin_close(cch_conn *c, const cch_msg *m) {
    bool bad = false;
    int64_t code = 1000;
    int rc = cch_msg_field_int(m, "code", &code);
    if (rc == CCH_ENOTFOUND) {
        code = 1000;
    } else if (rc < 0 || code < 1000 || code > 4999 || !valid_close_code((int)code)) {
        bad = true;
        code = 1000;
    }
    char reason[CLOSE_REASON_MAX + 1];
    rc = cch_msg_field_string(m, "reason", reason, sizeof reason);
    if (rc < 0) {
        if (rc != CCH_ENOTFOUND) bad = true;
        reason[0] = '\0';
    }
    if (bad) {
        c->app->stats.handler_errors++;
        cch__app_log(c->app, CCH_LOG_WARN,
                     "websocket.close to %s: bad \"code\" or \"reason\" in %.200s",
                     cch__conn_channel(c), cch_msg_body(m));
    }
    rc = cch_close(c, (int)code, reason);
    if (rc < 0)
        cch__app_log(c->app, CCH_LOG_DEBUG, "websocket.close to %s: %s", cch__conn_channel(c),
                     cch_strerror(rc));
}

/* ---- groups and the layer --------------------------------------------------------- */

/* The offset of `group` in c->groups, or -1 when c is not a member. */
static long find_group(const cch_conn *c, const char *group) {
    for (uint32_t off = 0; off < c->groups_len;) {
        const char *g = c->groups + off;
        if (strcmp(g, group) == 0) return (long)off;
        off += (uint32_t)strlen(g) + 1;
    }
    return -1;
}

int cch_group_add(cch_conn *c, const char *group) {
    if (!c || !group) return CCH_EINVAL;
    if (!cch_valid_group_name(group)) return CCH_ENAME;
    if (!c->has_channel) return CCH_ESTATE;
    if (find_group(c, group) >= 0) /* already a member: renew */
        return cch_layer_group_add(c->app->layer, group, cch__conn_channel(c));
    size_t n = strlen(group) + 1; /* <= CCH_NAME_BUF */
    if (c->groups_len > UINT32_MAX - n) return CCH_ENOMEM;
    int rc = groups_reserve(c, c->groups_len + n);
    if (rc < 0) return rc;
    rc = cch_layer_group_add(c->app->layer, group, cch__conn_channel(c));
    if (rc < 0) return rc; /* the buffer may have grown or moved: harmless */
    memcpy(c->groups + c->groups_len, group, n);
    c->groups_len += (uint32_t)n;
    c->n_groups++;
    return 0;
}

int cch_group_discard(cch_conn *c, const char *group) {
    if (!c || !group) return CCH_EINVAL;
    if (!cch_valid_group_name(group)) return CCH_ENAME;
    if (!c->has_channel) return 0;
    long off = find_group(c, group);
    if (off >= 0) {
        uint32_t n = (uint32_t)strlen(group) + 1;
        memmove(c->groups + off, c->groups + off + n, c->groups_len - (uint32_t)off - n);
        c->groups_len -= n;
        c->n_groups--;
        if (c->groups_len == 0) groups_free(c);
    }
    return cch_layer_group_discard(c->app->layer, group, cch__conn_channel(c));
}

static int group_send(cch_conn *c, const char *group, const cch_msg *m, bool others) {
    if (!c || !group || !m) return CCH_EINVAL;
    if (!cch_valid_group_name(group)) return CCH_ENAME;
    const char *exclude = (others && c->has_channel) ? cch__conn_channel(c) : NULL;
    return cch_layer_group_send(c->app->layer, group, m, exclude, NULL);
}

int cch_group_send(cch_conn *c, const char *group, const cch_msg *m) {
    return group_send(c, group, m, false);
}

int cch_group_send_others(cch_conn *c, const char *group, const cch_msg *m) {
    return group_send(c, group, m, true);
}

int cch_channel_send(cch_conn *c, const char *channel, const cch_msg *m) {
    if (!c || !channel || !m) return CCH_EINVAL;
    return cch_layer_send(c->app->layer, channel, m);
}
