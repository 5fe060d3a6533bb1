/* lib/core/middleware_origin.c - the origin-check middleware (cchannels/middleware.h).
 *
 * The counterpart of Django Channels' AllowedHostsOriginValidator / OriginValidator:
 * the Origin header of the upgrade request ("scheme://host[:port]") must match one of
 * the allowed-hosts rules, or the handshake is refused with HTTP 403.
 *
 * Rules (compared case-insensitively):
 *   "*"               anything, including a request without an Origin header;
 *   "example.com"     exactly that host, any port;
 *   ".example.com"    example.com and every subdomain of it, any port;
 *   "host:port"       that host (or ".domain") with that port only; an origin without
 *                     a port has its scheme's default port (80 for http/ws, 443 for
 *                     https/wss);
 *   "[::1]"           IPv6 literals are written in brackets, with an optional port;
 *   "https://host"    a rule with a scheme also requires that scheme (as
 *                     Channels' OriginValidator does).
 * A missing Origin header, "null", or an origin that does not parse (no scheme, no
 * host, user info, a bad port, characters a host cannot contain) is rejected unless
 * "*" is allowed. A rule that cannot parse is refused when it is added (CCH_EINVAL).
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

#define PORT_ANY (-1)

/* One parsed allowed-hosts rule. The strings point into `text`. */
typedef struct origin_rule {
    char *text;           /* owned copy of the rule, split in place */
    const char *scheme;   /* NULL: any scheme */
    const char *host;     /* without brackets; without the leading '.' of a domain rule */
    size_t host_len;
    bool subdomains;      /* ".example.com" */
    int port;             /* PORT_ANY or 0..65535 */
} origin_rule;

typedef struct origin_check {
    bool any;             /* "*" was allowed */
    size_t n;
    origin_rule rules[];
} origin_check;

/* A parsed Origin header; the strings point into the header value. */
typedef struct origin {
    const char *scheme;
    size_t scheme_len;
    const char *host;     /* without brackets */
    size_t host_len;
    int port;             /* explicit port, or the scheme's default, or PORT_ANY */
} origin;

static bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_hex(char ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* Characters of a registered name (RFC 3986 unreserved, as hosts actually use). */
static bool is_host_char(char ch) {
    return is_alpha(ch) || is_digit(ch) || ch == '-' || ch == '.' || ch == '_';
}

/* Parses "digits" in [p, end) as a port 0..65535. Returns the port or -2 when invalid. */
static int parse_port(const char *p, const char *end) {
    if (p == end || end - p > 5) return -2;
    int port = 0;
    for (; p < end; p++) {
        if (!is_digit(*p)) return -2;
        port = port * 10 + (*p - '0');
    }
    return port > 65535 ? -2 : port;
}

/* Parses "host[:port]" or "[v6]:port" in [p, end). Sets host, host_len and port
 * (PORT_ANY when there is none). Returns false when it does not parse. */
static bool parse_authority(const char *p, const char *end, const char **host,
                            size_t *host_len, int *port) {
    const char *h, *h_end, *rest;
    if (p < end && *p == '[') {
        h = p + 1;
        h_end = memchr(h, ']', (size_t)(end - h));
        if (!h_end || h_end == h) return false;
        for (const char *q = h; q < h_end; q++)
            if (!is_hex(*q) && *q != ':' && *q != '.') return false;
        rest = h_end + 1;
    } else {
        h = p;
        h_end = p;
        while (h_end < end && *h_end != ':') {
            if (!is_host_char(*h_end)) return false;
            h_end++;
        }
        if (h_end == h) return false;
        rest = h_end;
    }
    *host = h;
    *host_len = (size_t)(h_end - h);
    if (rest == end) {
        *port = PORT_ANY;
        return true;
    }
    if (*rest != ':') return false;
    int pt = parse_port(rest + 1, end);
    if (pt < 0) return false;
    *port = pt;
    return true;
}

static int default_port(const char *scheme, size_t len) {
    if ((len == 4 && strncasecmp(scheme, "http", 4) == 0) ||
        (len == 2 && strncasecmp(scheme, "ws", 2) == 0))
        return 80;
    if ((len == 5 && strncasecmp(scheme, "https", 5) == 0) ||
        (len == 3 && strncasecmp(scheme, "wss", 3) == 0))
        return 443;
    return PORT_ANY;
}

/* Parses an Origin header value. A trailing '/' (some clients send one) is allowed;
 * anything else after the authority is not. */
static bool parse_origin(const char *value, origin *o) {
    const char *p = value;
    if (!is_alpha(*p)) return false;
    while (is_alpha(*p) || is_digit(*p) || *p == '+' || *p == '-' || *p == '.') p++;
    if (strncmp(p, "://", 3) != 0) return false;
    o->scheme = value;
    o->scheme_len = (size_t)(p - value);
    const char *auth = p + 3;
    const char *end = auth + strlen(auth);
    if (end > auth && end[-1] == '/') end--;
    if (!parse_authority(auth, end, &o->host, &o->host_len, &o->port)) return false;
    if (o->port == PORT_ANY) o->port = default_port(o->scheme, o->scheme_len);
    return true;
}

static bool host_matches(const origin_rule *r, const origin *o) {
    if (o->host_len == r->host_len && strncasecmp(o->host, r->host, r->host_len) == 0)
        return true;
    if (!r->subdomains || o->host_len <= r->host_len) return false;
    /* "a.example.com" ends with ".example.com" */
    const char *tail = o->host + (o->host_len - r->host_len);
    return tail[-1] == '.' && strncasecmp(tail, r->host, r->host_len) == 0;
}

static bool rule_matches(const origin_rule *r, const origin *o) {
    if (r->scheme && (strlen(r->scheme) != o->scheme_len ||
                      strncasecmp(r->scheme, o->scheme, o->scheme_len) != 0))
        return false;
    if (r->port != PORT_ANY && r->port != o->port) return false;
    return host_matches(r, o);
}

static int origin_process(cch_scope *s, void *ud) {
    const origin_check *oc = ud;
    if (oc->any) return 0;
    const char *value = cch_scope_header(s, "Origin");
    if (!value) return 403;
    while (*value == ' ' || *value == '\t') value++;
    origin o;
    if (!parse_origin(value, &o)) return 403; /* "null" lands here too */
    for (size_t i = 0; i < oc->n; i++)
        if (rule_matches(&oc->rules[i], &o)) return 0;
    return 403;
}

static void origin_destroy(void *ud) {
    origin_check *oc = ud;
    if (!oc) return;
    for (size_t i = 0; i < oc->n; i++) cch__free(oc->rules[i].text);
    cch__free(oc);
}

static const cch_middleware origin_middleware = {
    .name = "origin_check",
    .process = origin_process,
    .destroy = origin_destroy,
};

/* Parses one rule into r (r->text already holds its copy). Returns false when the
 * rule can never be valid. */
static bool parse_rule(origin_rule *r) {
    char *p = r->text;
    char *sep = strstr(p, "://");
    r->scheme = NULL;
    if (sep) {
        if (sep == p) return false;
        for (char *q = p; q < sep; q++)
            if (!is_alpha(*q) && !is_digit(*q) && *q != '+' && *q != '-' && *q != '.')
                return false;
        *sep = '\0';
        r->scheme = p;
        p = sep + 3;
    }
    char *end = p + strlen(p);
    if (end > p && end[-1] == '/') *--end = '\0';
    r->subdomains = (*p == '.');
    if (r->subdomains) p++;
    if (r->subdomains && *p == '[') return false;
    if (!parse_authority(p, end, &r->host, &r->host_len, &r->port)) return false;
    return true;
}

int cch_app_use_origin_check(cch_app *app, const char *const *allowed_hosts, size_t n) {
    if (!app || (n > 0 && !allowed_hosts)) return CCH_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!allowed_hosts[i] || !allowed_hosts[i][0]) return CCH_EINVAL;
    if (n > (SIZE_MAX - sizeof(origin_check)) / sizeof(origin_rule)) return CCH_ENOMEM;
    origin_check *oc = cch__calloc(1, sizeof *oc + n * sizeof(origin_rule));
    if (!oc) return CCH_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(allowed_hosts[i], "*") == 0) {
            oc->any = true;
            continue;
        }
        origin_rule *r = &oc->rules[oc->n];
        r->text = cch__strdup(allowed_hosts[i]);
        if (!r->text) {
            rc = CCH_ENOMEM;
            break;
        }
        oc->n++;
        if (!parse_rule(r)) {
            rc = CCH_EINVAL;
            break;
        }
    }
    if (rc == 0) rc = cch_app_use(app, &origin_middleware, oc);
    if (rc != 0) origin_destroy(oc);
    return rc;
}
