/* lib/ws/timer.c - deadlines without a timer per connection.
 *
 * Every connection is on at most one of three lists: handshake (request head and
 * decision), idle (open WebSocket: time since the last byte read) and closing (close
 * handshake, lingering). Each list always uses the same timeout, so appending at the
 * tail keeps it sorted by deadline; a connection that shows activity moves to the
 * tail in O(1). One uv_timer per server fires at the earliest head. This keeps the
 * cost of an idle connection to two pointers and a deadline, kept in 30 bits: ticks
 * of WS_TICK_MS after the server's tick_epoch (a deadline rounds up to the next tick;
 * WS_TICK_NEVER: never). The epoch moves on every WS_REBASE_TICKS ticks, which shifts
 * the deadlines of the lists once, so ticks never overflow. The same timer trims
 * the output pools (output.c) about once a second while they hold parts not in use,
 * and polls the layer once deliveries have stopped for WS_IDLE_POLL_MS,
 * so that it can give back what its busy turns needed (ws_server_idle_poll); it
 * also bounds a pause of reading while the layer is congested (flow.c). */
#include "ws_internal.h"

#define WS_POOL_TRIM_MS 1000
/* A deadline is set less than WS_REBASE_TICKS after the epoch, at most UINT32_MAX ms on. */
_Static_assert((uint64_t)WS_REBASE_TICKS + (uint64_t)UINT32_MAX / WS_TICK_MS + 1 < WS_TICK_NEVER,
               "a deadline's ticks fit below WS_TICK_NEVER");

/* uv_now time of a deadline (UINT64_MAX: never). */
static uint64_t deadline_ms(const ws_server *s, uint32_t ticks)
{
    return ticks == WS_TICK_NEVER ? UINT64_MAX : s->tick_epoch + (uint64_t)ticks * WS_TICK_MS;
}

/* Moves the epoch on once it is WS_REBASE_TICKS behind `now`: every deadline on the
 * lists shifts by the same amount (those already due become 0). */
void ws_timer_rebase(ws_server *s, uint64_t now)
{
    if (now < s->tick_epoch || (now - s->tick_epoch) / WS_TICK_MS < WS_REBASE_TICKS)
        return;
    uint32_t shift = (uint32_t)((now - s->tick_epoch) / WS_TICK_MS);
    for (int which = 1; which < WS_TL_COUNT; which++)
        for (ws_conn *c = s->lists[which].head; c; c = c->tnext)
            if (c->deadline != WS_TICK_NEVER)
                c->deadline = c->deadline > shift ? c->deadline - shift : 0;
    s->tick_epoch += (uint64_t)shift * WS_TICK_MS;
}

uint64_t ws_timer_deadline(const ws_conn *c)
{
    return deadline_ms(c->srv, c->deadline);
}

void ws_timer_init(ws_server *s)
{
    s->tick_epoch = uv_now(s->loop);
}

static void list_remove(ws_conn *c)
{
    if (c->tlist == WS_TL_NONE)
        return;
    ws_tlist_head *l = &c->srv->lists[c->tlist];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = WS_TL_NONE;
}

static void timer_cb(uv_timer_t *t)
{
    ws_server *s = t->data;
    s->timer_due = UINT64_MAX;
    uint64_t now = uv_now(s->loop);
    ws_timer_rebase(s, now);
    if (s->pool_trim_at && s->pool_trim_at <= now)
        s->pool_trim_at = ws_out_trim_pools(s, false) ? now + WS_POOL_TRIM_MS : 0;
    if (s->resume_at && s->resume_at <= now)
        ws_flow_resume(s, true);
    if (s->idle_poll_at && s->idle_poll_at <= now) {
        s->idle_poll_at = 0;
        ws_server_idle_poll(s);
    }
    for (int which = 1; which < WS_TL_COUNT; which++) {
        ws_conn *c;
        while ((c = s->lists[which].head) != NULL && deadline_ms(s, c->deadline) <= now) {
            ws_timer_expired(c);
            /* Safety: whatever happened, an expired connection leaves the head. */
            if (s->lists[which].head == c && deadline_ms(s, c->deadline) <= now)
                list_remove(c);
        }
    }
    ws_timer_rearm(s);
}

void ws_timer_rearm(ws_server *s)
{
    if (uv_is_closing((uv_handle_t *)&s->timer))
        return;
    uint64_t due = s->pool_trim_at ? s->pool_trim_at : UINT64_MAX;
    if (s->idle_poll_at && s->idle_poll_at < due)
        due = s->idle_poll_at;
    if (s->resume_at && s->resume_at < due)
        due = s->resume_at;
    for (int which = 1; which < WS_TL_COUNT; which++) {
        ws_conn *c = s->lists[which].head;
        if (c && deadline_ms(s, c->deadline) < due)
            due = deadline_ms(s, c->deadline);
    }
    if (due == s->timer_due)
        return;
    s->timer_due = due;
    if (due == UINT64_MAX) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(s->loop);
    uv_timer_start(&s->timer, timer_cb, due > now ? due - now : 0, 0);
}

void ws_timer_want_idle_poll(ws_server *s)
{
    if (s->stopping)
        return;
    bool armed = s->idle_poll_at != 0;
    s->idle_poll_at = uv_now(s->loop) + WS_IDLE_POLL_MS;
    if (!armed && s->idle_poll_at < s->timer_due)  /* a later one: the timer re-arms */
        ws_timer_rearm(s);
}

void ws_timer_want_trim(ws_server *s)
{
    if (s->pool_trim_at || s->stopping)
        return;
    s->pool_trim_at = uv_now(s->loop) + WS_POOL_TRIM_MS;
    if (s->pool_trim_at < s->timer_due)
        ws_timer_rearm(s);
}

void ws_timer_set(ws_conn *c, int which, uint32_t ms)
{
    ws_server *s = c->srv;
    list_remove(c);
    if (which == WS_TL_NONE)
        return;
    if (ms == CCH_WS_NO_TIMEOUT) {
        c->deadline = WS_TICK_NEVER;
    } else {
        uint64_t now = uv_now(s->loop);
        ws_timer_rebase(s, now);
        uint64_t at = now < s->tick_epoch ? 0 : now - s->tick_epoch; /* ms after epoch */
        c->deadline = (uint32_t)((at + ms + WS_TICK_MS - 1) / WS_TICK_MS);
    }
    ws_tlist_head *l = &s->lists[which];
    c->tlist = (uint8_t)which;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
    if (deadline_ms(s, c->deadline) < s->timer_due)
        ws_timer_rearm(s);
}
