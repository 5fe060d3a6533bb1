/* lib/core/route.c - compiling and matching URL route patterns (see route.h).
 *
 * A pattern becomes a list of literal and parameter parts. Matching is a walk over
 * the parts; only "path" parameters, which may contain '/', need to try several
 * lengths (longest first), and that backtracking has a step budget. */
#include "route.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cchannels/error.h"

int cch__hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t cch__pct_decode(char *dst, const char *src, size_t len, bool plus_is_space) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '%' && i + 2 < len) {
            int hi = cch__hexval((unsigned char)src[i + 1]);
            int lo = cch__hexval((unsigned char)src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                dst[o++] = (char)(hi * 16 + lo);
                i += 2;
                continue;
            }
        } else if (ch == '+' && plus_is_space) {
            ch = ' ';
        }
        dst[o++] = ch;
    }
    return o;
}

/* ---- compiling --------------------------------------------------------------- */

static int fail(char *why, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail(char *why, size_t cap, const char *fmt, ...) {
    if (why && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return CCH_EPATTERN;
}

static bool is_name_start(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

static int converter_kind(const char *s, size_t len) {
    static const struct {
        const char *name;
        int kind;
    } convs[] = {{"str", CCH__PART_STR},
                 {"int", CCH__PART_INT},
                 {"slug", CCH__PART_SLUG},
                 {"path", CCH__PART_PATH}};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        if (strlen(convs[i].name) == len && memcmp(convs[i].name, s, len) == 0)
            return convs[i].kind;
    return -1;
}

/* A part as found while scanning, before the final allocation. */
struct raw_part {
    int kind;
    size_t off;       /* literal: offset in the pattern; parameter: name offset */
    size_t len;       /* literal length or name length */
};

int cch__route_compile(const char *pattern, cch__route **out, char *why, size_t why_cap) {
    if (why && why_cap > 0) why[0] = '\0';
    if (!out) return CCH_EINVAL;
    *out = NULL;
    if (!pattern) return CCH_EINVAL;

    size_t plen = strnlen(pattern, CCH__ROUTE_MAX_PATTERN + 1);
    if (plen > CCH__ROUTE_MAX_PATTERN)
        return fail(why, why_cap, "pattern is longer than %d bytes", CCH__ROUTE_MAX_PATTERN);
    if (plen == 0 || pattern[0] != '/')
        return fail(why, why_cap, "pattern must start with '/'");

    struct raw_part parts[2 * CCH__ROUTE_MAX_PARAMS + 1];
    size_t nparts = 0, nparams = 0, names_bytes = 0;
    size_t i = 0;
    while (i < plen) {
        char c = pattern[i];
        if (c == '{') {
            size_t start = i;
            size_t close = i + 1;
            while (close < plen && pattern[close] != '}' && pattern[close] != '{') close++;
            if (close >= plen || pattern[close] == '{')
                return fail(why, why_cap, "unbalanced '{' at offset %zu", start);
            if (close == start + 1)
                return fail(why, why_cap, "empty parameter '{}' at offset %zu", start);
            if (nparts > 0 && parts[nparts - 1].kind != CCH__PART_LITERAL)
                return fail(why, why_cap, "two adjacent parameters at offset %zu", start);
            if (nparams == CCH__ROUTE_MAX_PARAMS)
                return fail(why, why_cap, "more than %d parameters", CCH__ROUTE_MAX_PARAMS);
            /* name[:converter] */
            const char *body = pattern + start + 1;
            size_t blen = close - start - 1;
            const char *colon = memchr(body, ':', blen);
            size_t nlen = colon ? (size_t)(colon - body) : blen;
            int kind = CCH__PART_STR;
            if (colon) {
                size_t clen = blen - nlen - 1;
                kind = converter_kind(colon + 1, clen);
                if (kind < 0)
                    return fail(why, why_cap, "unknown converter '%.*s' at offset %zu",
                                (int)clen, colon + 1, start);
            }
            if (nlen == 0 || nlen > CCH__ROUTE_MAX_NAME || !is_name_start(body[0]))
                return fail(why, why_cap, "invalid parameter name '%.*s' at offset %zu",
                            (int)nlen, body, start);
            for (size_t k = 1; k < nlen; k++)
                if (!is_name_char(body[k]))
                    return fail(why, why_cap, "invalid parameter name '%.*s' at offset %zu",
                                (int)nlen, body, start);
            for (size_t p = 0; p < nparts; p++) {
                if (parts[p].kind == CCH__PART_LITERAL) continue;
                if (parts[p].len == nlen && memcmp(pattern + parts[p].off, body, nlen) == 0)
                    return fail(why, why_cap, "repeated parameter name '%.*s'", (int)nlen,
                                body);
            }
            /* A parameter spans the end of a segment: '/' or the end must follow. */
            if (close + 1 < plen && pattern[close + 1] != '/') {
                if (pattern[close + 1] == '}')
                    return fail(why, why_cap, "unbalanced '}' at offset %zu", close + 1);
                if (pattern[close + 1] == '{')
                    return fail(why, why_cap, "two adjacent parameters at offset %zu",
                                close + 1);
                return fail(why, why_cap,
                            "parameter '%.*s' must end its path segment (offset %zu)",
                            (int)nlen, body, start);
            }
            parts[nparts++] = (struct raw_part){kind, (size_t)(body - pattern), nlen};
            nparams++;
            names_bytes += nlen + 1;
            i = close + 1;
        } else if (c == '}') {
            return fail(why, why_cap, "unbalanced '}' at offset %zu", i);
        } else {
            size_t start = i;
            while (i < plen && pattern[i] != '{' && pattern[i] != '}') {
                unsigned char u = (unsigned char)pattern[i];
                if (u <= 0x20 || u == 0x7f || u == '?' || u == '#')
                    return fail(why, why_cap, "invalid character 0x%02x at offset %zu", u, i);
                i++;
            }
            if (i - start > UINT16_MAX) return fail(why, why_cap, "literal too long");
            parts[nparts++] = (struct raw_part){CCH__PART_LITERAL, start, i - start};
        }
    }

    size_t head = sizeof(cch__route) + nparts * sizeof(cch__route_part);
    cch__route *r = cch__malloc(head + plen + 1 + names_bytes);
    if (!r) return CCH_ENOMEM;
    char *text = (char *)r + head;
    memcpy(text, pattern, plen + 1);
    char *names = text + plen + 1;
    r->pattern = text;
    r->nparts = nparts;
    r->nparams = 0;
    for (size_t p = 0; p < nparts; p++) {
        cch__route_part *rp = &r->parts[p];
        rp->kind = (uint8_t)parts[p].kind;
        if (parts[p].kind == CCH__PART_LITERAL) {
            rp->param = 0;
            rp->len = (uint16_t)parts[p].len;
            rp->text = text + parts[p].off;
        } else {
            memcpy(names, pattern + parts[p].off, parts[p].len);
            names[parts[p].len] = '\0';
            rp->param = (uint8_t)r->nparams;
            rp->len = 0;
            rp->text = names;
            r->names[r->nparams++] = names;
            names += parts[p].len + 1;
        }
    }
    for (size_t k = r->nparams; k < CCH__ROUTE_MAX_PARAMS; k++) r->names[k] = NULL;
    *out = r;
    return 0;
}

void cch__route_free(cch__route *r) { cch__free(r); }

/* ---- matching ---------------------------------------------------------------- */

static bool value_ok(int kind, const char *v, size_t len) {
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        switch (kind) {
        case CCH__PART_INT:
            if (c < '0' || c > '9') return false;
            break;
        case CCH__PART_SLUG:
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '_' || c == '-'))
                return false;
            break;
        default: /* str, path: anything but an encoded NUL */
            if (c == '%' && i + 2 < len && v[i + 1] == '0' && v[i + 2] == '0') return false;
            break;
        }
    }
    return true;
}

struct matcher {
    const cch__route *r;
    const char *path;
    size_t len;
    cch__route_span *spans;
    unsigned budget;
};

static bool match_from(struct matcher *m, size_t part, size_t pos) {
    if (m->budget == 0) return false;
    m->budget--;
    const cch__route *r = m->r;
    for (; part < r->nparts; part++) {
        const cch__route_part *p = &r->parts[part];
        if (p->kind == CCH__PART_LITERAL) {
            if (m->len - pos < p->len || memcmp(m->path + pos, p->text, p->len) != 0)
                return false;
            pos += p->len;
            continue;
        }
        if (p->kind != CCH__PART_PATH) {
            const char *slash = memchr(m->path + pos, '/', m->len - pos);
            size_t end = slash ? (size_t)(slash - m->path) : m->len;
            if (!value_ok(p->kind, m->path + pos, end - pos)) return false;
            m->spans[p->param] = (cch__route_span){pos, end - pos};
            pos = end;
            continue;
        }
        /* A path parameter: the rest of the path, or (when a literal follows, which
         * starts with '/') up to one of the later slashes, the longest first. */
        if (part + 1 == r->nparts) {
            if (!value_ok(p->kind, m->path + pos, m->len - pos)) return false;
            m->spans[p->param] = (cch__route_span){pos, m->len - pos};
            return true;
        }
        for (size_t end = m->len; end > pos + 1;) {
            end--;
            if (m->path[end] != '/') continue;
            if (!value_ok(p->kind, m->path + pos, end - pos)) continue;
            m->spans[p->param] = (cch__route_span){pos, end - pos};
            if (match_from(m, part + 1, end)) return true;
            if (m->budget == 0) return false;
        }
        return false;
    }
    return pos == m->len;
}

bool cch__route_match(const cch__route *r, const char *path, size_t path_len,
                      cch__route_span *spans) {
    if (!r || !path || !spans) return false;
    struct matcher m = {r, path, path_len, spans, CCH__ROUTE_MATCH_BUDGET};
    return match_from(&m, 0, 0);
}
