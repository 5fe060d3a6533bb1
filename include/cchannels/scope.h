/* cchannels/scope.h - what a connection knows about its request and its user.
 *
 * The scope is built from the host's request when a connection opens. Middleware
 * reads and changes it (sets the user, keeps its own data), routing adds the route
 * parameters, and consumers read it from every callback (cch_conn_scope()).
 *
 * Lifetime of what it returns: path, query string, route parameters, client address,
 * user and middleware data live as long as the connection. Headers and cookies are
 * read from the host's request, which is only borrowed while the connection opens
 * (middleware and the consumer's connect callback): after connect returns,
 * cch_scope_header() returns NULL and cookie/subprotocol lookups find nothing. Copy
 * what you need later into the connection's state. (Keeping every header would cost
 * each idle connection about a kilobyte.) */
#ifndef CCHANNELS_SCOPE_H
#define CCHANNELS_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_scope cch_scope;

/* The anonymous user's id. */
#define CCH_USER_ANONYMOUS INT64_MIN

/* The request path, without the query string, as the client sent it (not
 * percent-decoded). Never NULL. */
const char *cch_scope_path(const cch_scope *s);

/* The raw query string (after '?', not decoded; "" when none). Never NULL. */
const char *cch_scope_query_string(const cch_scope *s);

/* Looks up the first query parameter called `name` and copies its decoded value
 * ('+' is a space, %XX escapes resolved) into buf with a NUL. Returns the value's
 * length, CCH_ENOTFOUND, CCH_EINVAL, or CCH_ETOOBIG (buf holds a truncated prefix). */
int cch_scope_query(const cch_scope *s, const char *name, char *buf, size_t cap);

/* The value of header `name` (case-insensitive; the first one when repeated), or
 * NULL. Only while the connection opens (see the top of this file). The string is
 * owned by the host's request. */
const char *cch_scope_header(const cch_scope *s, const char *name);

/* Looks up cookie `name` in the Cookie header(s) and copies its value into buf.
 * Only while the connection opens. Returns the value's length, CCH_ENOTFOUND,
 * CCH_EINVAL or CCH_ETOOBIG. */
int cch_scope_cookie(const cch_scope *s, const char *name, char *buf, size_t cap);

/* Whether the client offered subprotocol `name` in Sec-WebSocket-Protocol. Only while
 * the connection opens, or until it is decided when connect left it undecided (the
 * offers are then kept so that a deferred cch_accept can check its choice). */
bool cch_scope_offers_subprotocol(const cch_scope *s, const char *name);

/* The subprotocol chosen by cch_accept(), or NULL. */
const char *cch_scope_subprotocol(const cch_scope *s);

/* The client's address ("127.0.0.1", "::1"; "" when the host gave none) and port
 * (0 when unknown). */
const char *cch_scope_client_host(const cch_scope *s);
int cch_scope_client_port(const cch_scope *s);

/* The value of route parameter `name` (percent-decoded), or NULL when the route has
 * no such parameter. Owned by the scope. */
const char *cch_scope_param(const cch_scope *s, const char *name);

/* The user. A scope starts anonymous: id CCH_USER_ANONYMOUS, name "", data NULL.
 * cch_scope_set_user copies `name` (NULL: "") and takes ownership of `data`, which is
 * freed with free_data (may be NULL) when the user is replaced or the connection
 * ends. Returns 0, CCH_EINVAL, CCH_ENOMEM (then nothing changed and data is still
 * the caller's). */
int cch_scope_set_user(cch_scope *s, int64_t id, const char *name, void *data,
                       void (*free_data)(void *));
int64_t cch_scope_user_id(const cch_scope *s);
const char *cch_scope_user_name(const cch_scope *s);
void *cch_scope_user_data(const cch_scope *s);
bool cch_scope_user_is_authenticated(const cch_scope *s);

/* A slot per middleware (or any module), keyed by an address that module owns.
 * cch_scope_set_data stores `data` (replacing and freeing any earlier value under
 * `key`); the scope frees it with free_data when the connection ends.
 * Returns 0, CCH_EINVAL, CCH_ENOMEM (data is then still the caller's). */
int cch_scope_set_data(cch_scope *s, const void *key, void *data, void (*free_data)(void *));
void *cch_scope_data(const cch_scope *s, const void *key);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
