/* lib/ws/flow.c - flow control: stop reading clients while the layer is congested.
 *
 * With several loops over one layer (cch_ws_run_loops) nothing ties how fast one
 * loop reads its clients to how fast another dispatches to its members: a loop whose
 * clients group_send could fill the other loop's channels until the layer skips
 * them (counted as full). So before each read of an open connection (in libuv's
 * allocation callback) the server asks the layer whether it is congested
 * (cch_layer_congested: one atomic load) and, if so, hands libuv no buffer: libuv
 * reports UV_ENOBUFS without reading, and the server stops reading that connection
 * and lists it. (Asking after the read let every connection read once more, which
 * was enough to fill channels.) Once per loop iteration, after
 * dispatching, the prepare phase resumes the listed connections when the layer has
 * calmed down; a layer that calms wakes every receiver, so a loop whose clients are
 * all paused wakes up to do so. A pause lasts at most WS_FLOW_PAUSE_MAX_MS (the
 * server's timer): a receiver that is never polled keeps the layer congested, so
 * after a pause that ran out the server reads freely until the layer has been seen
 * calm again. Paused connections keep their deadlines; one that is killed leaves the
 * list; a stopping server resumes them all (they must read their clients' close). */
#include "alloc.h"
#include "ws_internal.h"

#include <string.h>

bool ws_flow_hold(ws_conn *c)
{
    ws_server *s = c->srv;
    if (c->state != WS_OPEN || (c->flags & WS_F_PAUSED) || s->flow_off || s->stopping)
        return false;
    if (s->n_paused == s->cap_paused) {
        size_t cap = s->cap_paused ? s->cap_paused * 2 : 16;
        ws_conn **p = cch__realloc(s->paused, cap * sizeof *p);
        if (!p)
            return false; /* keep reading: flow control is a hint */
        s->paused = p;
        s->cap_paused = cap;
    }
    return true;
}

void ws_flow_pause(ws_conn *c)
{
    ws_server *s = c->srv;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->flags = (uint16_t)((c->flags & ~WS_F_READING) | WS_F_PAUSED);
    s->paused[s->n_paused++] = c; /* room made by ws_flow_hold */
    s->stats.reads_paused++;
    if (!s->resume_at) {
        s->resume_at = uv_now(s->loop) + WS_FLOW_PAUSE_MAX_MS;
        if (s->resume_at < s->timer_due)
            ws_timer_rearm(s);
    }
}

void ws_flow_resume(ws_server *s, bool timed_out)
{
    if (timed_out && s->n_paused) {
        s->flow_off = true;
        s->stats.pause_timeouts++;
    }
    for (size_t i = 0; i < s->n_paused; i++) {
        ws_conn *c = s->paused[i];
        c->flags &= (uint16_t)~WS_F_PAUSED;
        ws_conn_start(c);
    }
    s->n_paused = 0;
    s->resume_at = 0;
}

void ws_flow_check(ws_server *s)
{
    if (cch_layer_congested(s->layer))
        return;
    s->flow_off = false;
    ws_flow_resume(s, false);
}

void ws_flow_forget(ws_conn *c)
{
    ws_server *s = c->srv;
    c->flags &= (uint16_t)~WS_F_PAUSED;
    for (size_t i = 0; i < s->n_paused; i++) {
        if (s->paused[i] == c) {
            s->paused[i] = s->paused[--s->n_paused];
            break;
        }
    }
    if (!s->n_paused)
        s->resume_at = 0;
}

void ws_flow_free(ws_server *s)
{
    cch__free(s->paused);
    s->paused = NULL;
    s->n_paused = s->cap_paused = 0;
}
