/* lib/core/middleware_auth.c - the auth middleware (cchannels/middleware.h).
 *
 * Finds a token in the upgrade request and hands it to the host's resolve callback,
 * which sets the scope's user (the counterpart of Channels' AuthMiddleware with a
 * token instead of a Django session). Sources are tried in this order, and the first
 * one present (with a non-empty value) is used:
 *   the cookie;
 *   the header (a leading "Bearer" is stripped, case-insensitively, and so is the
 *   space around the token);
 *   the query parameter (percent-decoded).
 *
 * Outcomes: a token longer than token_max rejects with 400; resolve's 400..599
 * rejects with that status, a negative code with 500 (any other non-zero value is
 * treated as a failure: 500); a connection left anonymous is rejected with 403 when
 * `required` is set. The token is read into a stack buffer (a heap one for tokens
 * longer than 255 bytes), which is wiped afterwards.
 *
 * Built only on the public API: cch_app_use() and the scope accessors. */
#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "cchannels/app.h"
#include "cchannels/error.h"
#include "cchannels/middleware.h"
#include "cchannels/scope.h"

typedef struct auth_mw {
    char *cookie;
    char *header;
    char *query_param;
    cch_auth_resolve_fn resolve;
    void *ud;
    bool required;
    size_t token_max;
} auth_mw;

/* What find_token found. */
enum { TOKEN_NONE = 0, TOKEN_FOUND = 1, TOKEN_TOO_LONG = 2 };

/* Looks the token up in the configured sources. On TOKEN_FOUND, *tok / *len describe
 * it, copied NUL-terminated into buf. */
static int find_token(const auth_mw *a, cch_scope *s, char *buf, size_t cap,
                      const char **tok, size_t *len) {
    if (a->cookie) {
        int n = cch_scope_cookie(s, a->cookie, buf, cap);
        if (n == CCH_ETOOBIG) return TOKEN_TOO_LONG;
        if (n > 0) {
            *tok = buf;
            *len = (size_t)n;
            return TOKEN_FOUND;
        }
    }
    if (a->header) {
        const char *v = cch_scope_header(s, a->header);
        if (v) {
            while (*v == ' ' || *v == '\t') v++;
            if (strncasecmp(v, "Bearer", 6) == 0 && (v[6] == ' ' || v[6] == '\t' || !v[6]))
                v += 6;
            while (*v == ' ' || *v == '\t') v++;
            size_t n = strlen(v);
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
            if (n > 0) {
                if (n >= cap) return TOKEN_TOO_LONG;
                memcpy(buf, v, n);
                buf[n] = '\0';
                *tok = buf;
                *len = n;
                return TOKEN_FOUND;
            }
        }
    }
    if (a->query_param) {
        int n = cch_scope_query(s, a->query_param, buf, cap);
        if (n == CCH_ETOOBIG) return TOKEN_TOO_LONG;
        if (n > 0) {
            *tok = buf;
            *len = (size_t)n;
            return TOKEN_FOUND;
        }
    }
    return TOKEN_NONE;
}

/* Tokens up to this length are read into a stack buffer; longer ones (up to
 * token_max) into a heap buffer. */
#define AUTH_STACK_TOKEN 256

static int auth_process(cch_scope *s, void *ud) {
    const auth_mw *a = ud;
    char stack_buf[AUTH_STACK_TOKEN];
    char *buf = stack_buf;
    size_t cap = a->token_max + 1;
    if (cap > sizeof stack_buf) cap = sizeof stack_buf;
    const char *tok = NULL;
    size_t len = 0;
    int found = find_token(a, s, buf, cap, &tok, &len);
    if (found == TOKEN_TOO_LONG && cap < a->token_max + 1) {
        /* Longer than the stack buffer but maybe not than token_max: look again. */
        explicit_bzero(stack_buf, sizeof stack_buf);
        cap = a->token_max + 1;
        buf = cch__malloc(cap);
        if (!buf) return CCH_ENOMEM;
        found = find_token(a, s, buf, cap, &tok, &len);
    }
    int rc = 0;
    if (found == TOKEN_TOO_LONG) {
        rc = 400;
    } else if (found == TOKEN_FOUND) {
        int r = a->resolve(s, tok, len, a->ud);
        if (r >= 400 && r <= 599) rc = r;
        else if (r != 0) rc = 500;
    }
    /* The token is a secret: do not leave it in freed or reused memory. */
    explicit_bzero(buf, cap);
    if (buf != stack_buf) cch__free(buf);
    if (rc == 0 && a->required && !cch_scope_user_is_authenticated(s)) rc = 403;
    return rc;
}

static void auth_destroy(void *ud) {
    auth_mw *a = ud;
    if (!a) return;
    cch__free(a->cookie);
    cch__free(a->header);
    cch__free(a->query_param);
    cch__free(a);
}

static const cch_middleware auth_middleware = {
    .name = "auth",
    .process = auth_process,
    .destroy = auth_destroy,
};

/* Copies an optional string; false only on ENOMEM. */
static bool dup_opt(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return true;
    *dst = cch__strdup(src);
    return *dst != NULL;
}

int cch_app_use_auth(cch_app *app, const cch_auth_options *opts) {
    if (!app || !opts || !opts->resolve) return CCH_EINVAL;
    bool cookie = opts->cookie && opts->cookie[0];
    bool header = opts->header && opts->header[0];
    bool query = opts->query_param && opts->query_param[0];
    if (!cookie && !header && !query) return CCH_EINVAL;
    size_t token_max = opts->token_max ? opts->token_max : CCH_AUTH_DEFAULT_TOKEN_MAX;
    if (token_max >= SIZE_MAX / 2) return CCH_EINVAL;
    auth_mw *a = cch__calloc(1, sizeof *a);
    if (!a) return CCH_ENOMEM;
    a->resolve = opts->resolve;
    a->ud = opts->ud;
    a->required = opts->required;
    a->token_max = token_max;
    int rc = 0;
    if (!dup_opt(&a->cookie, cookie ? opts->cookie : NULL) ||
        !dup_opt(&a->header, header ? opts->header : NULL) ||
        !dup_opt(&a->query_param, query ? opts->query_param : NULL))
        rc = CCH_ENOMEM;
    if (rc == 0) rc = cch_app_use(app, &auth_middleware, a);
    if (rc != 0) auth_destroy(a);
    return rc;
}
