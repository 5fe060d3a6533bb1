/* lib/core/route.h - internal: compiled URL route patterns and percent-decoding.
 *
 * A pattern such as "/ws/chat/{room}/" or "/u/id-{id:int}" (syntax: see
 * cch_app_route in cchannels/app.h) is compiled once into a list of parts, each a
 * literal or a parameter with a converter. Matching walks the parts against a raw
 * (not percent-decoded) request path and reports, for every parameter, the span of
 * the path it covers; the scope decodes those spans into the values it keeps.
 * No regular expressions: literals are compared with memcmp, parameters scan a
 * segment. */
#ifndef CCH_INTERNAL_ROUTE_H
#define CCH_INTERNAL_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of a pattern. */
#define CCH__ROUTE_MAX_PARAMS 16
#define CCH__ROUTE_MAX_PATTERN 1024
/* Longest parameter name, in bytes. */
#define CCH__ROUTE_MAX_NAME 64
/* Matching a pattern with several "path" parameters backtracks; after this many
 * steps a path counts as not matching (only absurd paths get there). */
#define CCH__ROUTE_MATCH_BUDGET 10000

enum cch__route_kind {
    CCH__PART_LITERAL = 0,
    CCH__PART_STR,    /* [^/]+ */
    CCH__PART_INT,    /* [0-9]+ */
    CCH__PART_SLUG,   /* [A-Za-z0-9_-]+ */
    CCH__PART_PATH    /* .+ ('/' included) */
};

typedef struct cch__route_part {
    uint8_t kind;        /* enum cch__route_kind */
    uint8_t param;       /* parameter index (parameters only) */
    uint16_t len;        /* literal length (literals only) */
    const char *text;    /* literal text (not NUL-terminated) or parameter name */
} cch__route_part;

/* A compiled pattern: one allocation, freed with cch__route_free. */
typedef struct cch__route {
    const char *pattern;                       /* the source text, NUL-terminated */
    size_t nparts;
    size_t nparams;
    const char *names[CCH__ROUTE_MAX_PARAMS];  /* parameter names, in pattern order */
    cch__route_part parts[];
} cch__route;

/* Where one parameter's raw value lies in the matched path. */
typedef struct cch__route_span {
    size_t off;
    size_t len;
} cch__route_span;

/* Compiles `pattern`. Returns 0 and sets *out, CCH_EINVAL (NULL argument),
 * CCH_EPATTERN (malformed: a reason, NUL-terminated, is written into `why` when
 * why_cap > 0) or CCH_ENOMEM. */
int cch__route_compile(const char *pattern, cch__route **out, char *why, size_t why_cap);

void cch__route_free(cch__route *r);

/* Matches the raw path (path_len bytes, no query string) against the whole pattern.
 * On a match fills spans[0 .. nparams-1] and returns true. A parameter never
 * matches an empty value, and a str or path value that would decode to contain a
 * NUL byte (%00) does not match. */
bool cch__route_match(const cch__route *r, const char *path, size_t path_len,
                      cch__route_span *spans);

/* Percent-decodes `len` bytes of `src` into `dst` (at least `len` bytes; may be
 * `src` itself): %XX becomes the byte, '+' a space when plus_is_space, an invalid
 * escape is kept as it is. Returns the decoded length (<= len). No NUL is added. */
size_t cch__pct_decode(char *dst, const char *src, size_t len, bool plus_is_space);

/* The value of a hex digit, or -1. */
int cch__hexval(int c);

#endif
