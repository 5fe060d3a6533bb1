/* lib/redis/redis_conf.c - the Redis layer's configuration: URLs
 * (redis://[[user]:password@]host[:port][/db], redis+pubsub://...), per-channel
 * capacities (fnmatch globs, first match wins, as channels_redis's channel_capacity)
 * and channel-name helpers. */
#include "redis_internal.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

void rl_url_free(rl_url *u) {
    if (!u) return;
    cch__free(u->host);
    cch__free(u->user);
    cch__free(u->password);
    memset(u, 0, sizeof *u);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A %-decoded copy of s[0..n), or NULL (*rc set) on a bad escape, a NUL or no memory. */
static char *decode(const char *s, size_t n, int *rc) {
    char *out = cch__malloc(n + 1);
    if (!out) {
        *rc = CCH_ENOMEM;
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                cch__free(out);
                *rc = CCH_EINVAL;
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        out[j++] = c;
    }
    out[j] = '\0';
    return out;
}

/* Parses a non-negative decimal s[0..n) no larger than max; -1 when it is not one. */
static long parse_num(const char *s, size_t n, long max) {
    if (n == 0 || n > 10) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

int rl_url_parse(const char *s, rl_url *out) {
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!s) return CCH_EINVAL;
    const char *p;
    if (!strncmp(s, "redis://", 8)) {
        p = s + 8;
    } else if (!strncmp(s, "redis+pubsub://", 15)) {
        p = s + 15;
        out->pubsub = true;
    } else if (!strncmp(s, "rediss://", 9) || !strncmp(s, "unix://", 7) ||
               !strncmp(s, "rediss+pubsub://", 16)) {
        return CCH_ENOTSUP;
    } else {
        return CCH_EINVAL;
    }
    int rc = 0;
    size_t auth_end = strcspn(p, "@/?");
    if (p[auth_end] == '@') { /* [user][:password]@ */
        const char *colon = memchr(p, ':', auth_end);
        size_t ulen = colon ? (size_t)(colon - p) : auth_end;
        if (colon) {
            out->password = decode(colon + 1, auth_end - ulen - 1, &rc);
            if (!out->password) goto fail;
            if (ulen && !(out->user = decode(p, ulen, &rc))) goto fail;
        } /* "user@" alone: a user without a password is not sent */
        p += auth_end + 1;
    }
    size_t hlen;
    const char *host = p;
    if (*p == '[') { /* [IPv6] */
        const char *close = strchr(p, ']');
        if (!close || close == p + 1) goto bad;
        host = p + 1;
        hlen = (size_t)(close - host);
        p = close + 1;
    } else {
        hlen = strcspn(p, ":/?");
        p += hlen;
    }
    if (hlen == 0) goto bad;
    if (!(out->host = cch__strndup(host, hlen))) {
        rc = CCH_ENOMEM;
        goto fail;
    }
    if (*p == ':') {
        p++;
        size_t n = strcspn(p, "/?");
        long port = parse_num(p, n, 65535);
        if (port <= 0) goto bad;
        out->port = (int)port;
        p += n;
    }
    if (*p == '/') {
        p++;
        size_t n = strcspn(p, "?");
        if (n) {
            long db = parse_num(p, n, 1000000);
            if (db < 0) goto bad;
            out->db = (int)db;
        }
        p += n;
    }
    if (*p == '?') { /* only db=N is understood; other parameters are ignored */
        p++;
        while (*p) {
            size_t n = strcspn(p, "&");
            if (n > 3 && !strncmp(p, "db=", 3)) {
                long db = parse_num(p + 3, n - 3, 1000000);
                if (db < 0) goto bad;
                out->db = (int)db;
            }
            p += n;
            if (*p == '&') p++;
        }
    }
    if (*p) goto bad;
    return 0;
bad:
    rc = CCH_EINVAL;
fail:
    rl_url_free(out);
    return rc;
}

size_t rl_capacity_for(const rl_layer *l, const char *channel) {
    for (size_t i = 0; i < l->n_caps; i++)
        if (fnmatch(l->caps[i].pattern, channel, 0) == 0) return l->caps[i].capacity;
    return l->capacity;
}

size_t rl_nonlocal_len(const char *name, size_t len) {
    const char *bang = memchr(name, '!', len);
    return bang ? (size_t)(bang - name) + 1 : len;
}
