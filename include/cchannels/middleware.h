/* cchannels/middleware.h - built-in middleware: origin check and authentication.
 *
 * Both run before routing and connect (see cch_app_use in cchannels/app.h). */
#ifndef CCHANNELS_MIDDLEWARE_H
#define CCHANNELS_MIDDLEWARE_H

#include <stdbool.h>
#include <stddef.h>

#include "app.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* Origin validation, like Channels' AllowedHostsOriginValidator: the host part of
 * the Origin header must match an entry of `allowed_hosts`:
 *   "*"             any origin, and a request without an Origin header;
 *   "example.com"   exactly that host (case-insensitive);
 *   ".example.com"  example.com and every subdomain of it;
 *   "host:port"     that host with that port only.
 * A request without an Origin header, with an unparsable one or with "null" is
 * rejected unless "*" is allowed. Rejection is HTTP 403. The list is copied.
 * Returns 0, CCH_EINVAL (NULL or empty entry), CCH_ENOMEM. */
int cch_app_use_origin_check(cch_app *app, const char *const *allowed_hosts, size_t n);

/* Resolves a token to a user: call cch_scope_set_user(s, ...) on success and return
 * 0; return 0 without setting a user to stay anonymous; return an HTTP status
 * 400..599 to reject the handshake; a negative code rejects with 500.
 * `token` (len bytes, NUL-terminated) is valid during the call. */
typedef int (*cch_auth_resolve_fn)(cch_scope *s, const char *token, size_t len, void *ud);

typedef struct cch_auth_options {
    /* Where the token comes from; the first one present is used. NULL: not used. */
    const char *cookie;        /* a cookie name, e.g. "sessionid" */
    const char *header;        /* a header name, e.g. "Authorization" ("Bearer " is
                                  stripped from its value) */
    const char *query_param;   /* a query parameter, e.g. "token" */
    cch_auth_resolve_fn resolve;
    void *ud;                  /* passed to resolve; not freed by the app */
    /* When true, a connection that ends anonymous (no token, or resolve set no user)
     * is rejected with 403. When false it continues anonymous. */
    bool required;
    /* Longest token accepted (0: CCH_AUTH_DEFAULT_TOKEN_MAX); a longer one rejects
     * the handshake with 400. */
    size_t token_max;
} cch_auth_options;

#define CCH_AUTH_DEFAULT_TOKEN_MAX 4096

/* Adds the auth middleware. `opts` is copied (the strings too). Returns 0,
 * CCH_EINVAL (no resolve callback, or no token source), CCH_ENOMEM. */
int cch_app_use_auth(cch_app *app, const cch_auth_options *opts);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
