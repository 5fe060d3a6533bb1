/* lib/core/scope_internal.h - internal: the scope's layout and its life cycle.
 *
 * A scope lives inside its connection (struct cch_conn). What it keeps for the
 * connection's whole life is one allocation, `buf`: "path\0query\0host\0" followed
 * by the decoded route parameter values, each NUL-terminated, in the route's
 * parameter order (names are borrowed from the compiled route, which the app owns).
 * The connection lays that buffer out in its own allocation (cch__scope_buf_size
 * says how big); a scope built without one allocates it. 
 * The host's request is borrowed only while the connection opens: `req` is set by
 * cch__scope_init and cleared by cch__scope_end_open. */
#ifndef CCH_INTERNAL_SCOPE_H
#define CCH_INTERNAL_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cchannels/app.h"
#include "cchannels/scope.h"
#include "route.h"

struct cch__scope_data;    /* a middleware data slot (scope.c) */
struct cch__header_copy;   /* a NUL-terminated copy of a header value (scope.c) */

struct cch_scope {
    const cch_request *req;                 /* borrowed while opening, else NULL */
    union {                                 /* which one: req set or not */
        struct cch__header_copy *header_copies; /* opening; freed by end_open */
        char *offers;    /* subprotocol offers kept while undecided after open */
    } u;
    char *buf;                              /* path, query, host, parameter values */
    const cch__route *route;                /* parameter names; NULL: no parameters */
    uint32_t query_off;
    uint32_t host_off;
    uint32_t params_off;
    int client_port : 31;
    unsigned buf_owned : 1;                 /* buf was allocated here (else the caller's) */
    char *subprotocol;   /* chosen by cch_accept */
    char *user_name;     /* NULL: "" */
    int64_t user_id;
    void *user_data;
    void (*user_free)(void *);
    struct cch__scope_data *data;
};

/* Builds the scope for `req` (borrowed until cch__scope_end_open). `route` and
 * `spans` (may be NULL: no parameters) give the matched route's parameters, which
 * are percent-decoded into the scope. Returns 0, CCH_EINVAL, CCH_ETOOBIG (a path
 * or query over 4 GiB) or CCH_ENOMEM; on failure nothing needs freeing. */
int cch__scope_init(cch_scope *s, const cch_request *req, const cch__route *route,
                    const cch__route_span *spans);

/* The bytes of the scope's buffer for the same arguments (0: cch__scope_init would
 * fail with CCH_EINVAL or CCH_ETOOBIG). */
size_t cch__scope_buf_size(const cch_request *req, const cch__route *route,
                           const cch__route_span *spans);

/* cch__scope_init with the buffer in `buf` (cch__scope_buf_size bytes, owned by the
 * caller and left alone by cch__scope_destroy); NULL: allocated, as cch__scope_init. */
int cch__scope_init_in(cch_scope *s, const cch_request *req, const cch__route *route,
                       const cch__route_span *spans, char *buf);

/* The connection has opened: forget the borrowed request (headers, cookies). When
 * keep_offers, the subprotocols the client offered are copied first, so that a
 * deferred cch_accept can still check its choice. Returns 0 or CCH_ENOMEM (the
 * request is forgotten either way; the offers are then lost). */
int cch__scope_end_open(cch_scope *s, bool keep_offers);

/* Forgets the kept subprotocol offers (the connection was decided). */
void cch__scope_drop_offers(cch_scope *s);

/* Records the chosen subprotocol (copied; NULL clears). Returns 0 or CCH_ENOMEM. */
int cch__scope_set_subprotocol(cch_scope *s, const char *name);

/* Frees everything the scope owns (user data and middleware data included). */
void cch__scope_destroy(cch_scope *s);

#endif
