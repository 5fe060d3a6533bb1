/* lib/core/json_scan.c - validating, allocation-free JSON scanning (json_scan.h).
 *
 * One iterative scanner (an explicit 64-bit stack of "object or array" per level, no
 * recursion) validates values; the string code validates UTF-8 with a byte-class
 * table and decodes escapes. Every read is bounds-checked against `end`. */
#include "json_scan.h"

#include <stdbool.h>
#include <string.h>

#include "cchannels/error.h"
#include "cchannels/msg.h"

typedef const unsigned char *ptr;

/* Byte classes inside a JSON string. */
enum {
    C_PLAIN = 0,  /* copied as is: 0x20..0x7f except '"' and '\\' */
    C_QUOTE = 1,  /* '"' ends the string */
    C_BSLASH = 2, /* '\\' starts an escape */
    C_BAD = 3,    /* control character, stray continuation byte, C0/C1, F5..FF */
    C_U2 = 4,     /* C2..DF: 2-byte sequence */
    C_E0 = 5,     /* E0: 3-byte, second byte A0..BF (no overlongs) */
    C_U3 = 6,     /* E1..EC, EE..EF: 3-byte */
    C_ED = 7,     /* ED: 3-byte, second byte 80..9F (no surrogates) */
    C_F0 = 8,     /* F0: 4-byte, second byte 90..BF (no overlongs) */
    C_U4 = 9,     /* F1..F3: 4-byte */
    C_F4 = 10     /* F4: 4-byte, second byte 80..8F (nothing above U+10FFFF) */
};

static const unsigned char str_class[256] = {
    /* 0x00 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0x10 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0x20 */ 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x30 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x40 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x50 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    /* 0x60 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x70 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x80 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0x90 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xa0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xb0 */ 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* 0xc0 */ 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* 0xd0 */ 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* 0xe0 */ 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 6, 6,
    /* 0xf0 */ 8, 9, 9, 9, 10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
};

static inline ptr skip_ws(ptr p, ptr end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Validates the UTF-8 sequence whose lead byte (of class cls) is at p; returns the
 * pointer after it, or NULL. */
static ptr utf8_seq(ptr p, ptr end, int cls) {
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    switch (cls) {
    case C_U2: n = 2; break;
    case C_E0: n = 3; lo = 0xa0; break;
    case C_U3: n = 3; break;
    case C_ED: n = 3; hi = 0x9f; break;
    case C_F0: n = 4; lo = 0x90; break;
    case C_U4: n = 4; break;
    case C_F4: n = 4; hi = 0x8f; break;
    default: return NULL;
    }
    if ((size_t)(end - p) < n) return NULL;
    if (p[1] < lo || p[1] > hi) return NULL;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) return NULL;
    return p + n;
}

int cch__utf8_valid(const void *data, size_t len) {
    ptr p = data, end = p + len;
    while (p < end) {
        if (*p < 0x80) { /* ASCII, control characters included (not a JSON string) */
            p++;
            continue;
        }
        p = utf8_seq(p, end, str_class[*p]);
        if (!p) return 0;
    }
    return 1;
}

/* Four hex digits at p (bounds already checked) -> value, or -1. */
static long hex4(ptr p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

static int utf8_encode(unsigned long cp, unsigned char out[4]) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the escape after a backslash at p (p points after the '\\') into out,
 * setting *n to its byte count. Returns the pointer after the escape, or NULL. */
static ptr unescape(ptr p, ptr end, unsigned char out[4], int *n) {
    if (p >= end) return NULL;
    unsigned char c = *p++;
    switch (c) {
    case '"': case '\\': case '/': out[0] = c; *n = 1; return p;
    case 'b': out[0] = '\b'; *n = 1; return p;
    case 'f': out[0] = '\f'; *n = 1; return p;
    case 'n': out[0] = '\n'; *n = 1; return p;
    case 'r': out[0] = '\r'; *n = 1; return p;
    case 't': out[0] = '\t'; *n = 1; return p;
    case 'u': break;
    default: return NULL;
    }
    if (end - p < 4) return NULL;
    long cp = hex4(p);
    if (cp < 0) return NULL;
    p += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff) return NULL; /* lone low surrogate */
    if (cp >= 0xd800 && cp <= 0xdbff) {
        /* a high surrogate must be followed by \u and a low surrogate */
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return NULL;
        long lo = hex4(p + 2);
        if (lo < 0xdc00 || lo > 0xdfff) return NULL;
        p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    *n = utf8_encode((unsigned long)cp, out);
    return p;
}

/* Validates a string whose opening quote is just before p. Returns the pointer
 * after the closing quote, or NULL. *has_esc (may be NULL) tells whether it held a
 * backslash escape. An object key (`key`) may not hold \u0000. */
static ptr scan_string(ptr p, ptr end, bool *has_esc, bool key) {
    bool esc = false;
    for (;;) {
        while (p < end && str_class[*p] == C_PLAIN) p++;
        if (p >= end) return NULL;
        int cls = str_class[*p];
        if (cls == C_QUOTE) {
            if (has_esc) *has_esc = esc;
            return p + 1;
        }
        if (cls == C_BSLASH) {
            unsigned char tmp[4];
            int n;
            p = unescape(p + 1, end, tmp, &n);
            esc = true;
            if (key && p && n == 1 && tmp[0] == '\0') return NULL;
        } else {
            p = utf8_seq(p, end, cls);
        }
        if (!p) return NULL;
    }
}

/* 2^1024 - 2^970, the least value that rounds to infinity as a double (the midpoint
 * between DBL_MAX and 2^1024; a tie rounds to the even 2^1024), in decimal. */
static const char dbl_overflow_digits[] =
    "179769313486231580793728971405303415079934132710037826936173778980444968"
    "292764750946649017977587207096330286416692887910946555547851940402630657"
    "488671505820681908902000708383676273854845817711531764475730270069855571"
    "366959622842914819860834936475292719074168444365510704342711559699508093"
    "042880177904174497792";

/* Whether the syntactically valid number s[0..e) can be held: an integer (no
 * fraction, no exponent) within int64, any other number below the double overflow
 * threshold. */
static bool number_fits(ptr s, ptr e) {
    ptr p = s;
    if (*p == '-') p++;
    ptr ib = p;
    while (p < e && is_digit(*p)) p++;
    size_t ilen = (size_t)(p - ib);
    ptr fb = p;
    size_t flen = 0;
    if (p < e && *p == '.') {
        fb = ++p;
        while (p < e && is_digit(*p)) p++;
        flen = (size_t)(p - fb);
    }
    if (p == e && flen == 0) { /* an integer */
        int64_t v;
        return cch__json_parse_int((const char *)s, (size_t)(e - s), &v) == 0;
    }
    int64_t x = 0; /* the exponent, saturated */
    if (p < e) {
        p++; /* 'e' or 'E' */
        bool xneg = *p == '-';
        if (*p == '-' || *p == '+') p++;
        for (; p < e; p++)
            if (x < ((int64_t)1 << 50)) x = x * 10 + (*p - '0');
        if (xneg) x = -x;
    }
    /* The value is 0.D * 10^(ilen - k + x), D the digits from the first non-zero. */
    size_t n = ilen + flen, k = 0;
#define DIGIT(j) ((j) < ilen ? ib[(j)] : fb[(j) - ilen])
    while (k < n && DIGIT(k) == '0') k++;
    if (k == n) return true; /* zero */
    int64_t exp10 = (int64_t)ilen - (int64_t)k + x;
    const int64_t limit = (int64_t)sizeof dbl_overflow_digits - 1; /* 309 */
    if (exp10 != limit) return exp10 < limit;
    for (size_t j = 0; k + j < n; j++) {
        if (j == (size_t)limit) return false; /* at least the threshold */
        char d = (char)DIGIT(k + j), h = dbl_overflow_digits[j];
        if (d != h) return d < h;
    }
#undef DIGIT
    return true; /* a prefix of the threshold, whose last digit is not 0: below it */
}

static ptr scan_number(ptr p, ptr end) {
    ptr start = p;
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    return number_fits(start, p) ? p : NULL;
}

static ptr scan_literal(ptr p, ptr end, const char *lit, size_t n) {
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

/* Validates one value starting at p (after optional whitespace), nesting at most
 * max_depth (<= 64) arrays/objects. Returns the pointer after it, or NULL. */
static ptr scan_value(ptr p, ptr end, unsigned max_depth) {
    uint64_t is_obj = 0; /* bit d: level d+1 is an object */
    unsigned depth = 0;
    if (max_depth > 64) max_depth = 64;

value:
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    switch (*p) {
    case '{':
        if (depth >= max_depth) return NULL;
        is_obj |= (uint64_t)1 << depth;
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == '}') {
            p++;
            depth--;
            goto close;
        }
        goto key;
    case '[':
        if (depth >= max_depth) return NULL;
        is_obj &= ~((uint64_t)1 << depth);
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') {
            p++;
            depth--;
            goto close;
        }
        goto value;
    case '"': p = scan_string(p + 1, end, NULL, false); break;
    case 't': p = scan_literal(p, end, "true", 4); break;
    case 'f': p = scan_literal(p, end, "false", 5); break;
    case 'n': p = scan_literal(p, end, "null", 4); break;
    default: p = scan_number(p, end); break;
    }
    if (!p) return NULL;
    goto close;

key:
    if (p >= end || *p != '"') return NULL;
    p = scan_string(p + 1, end, NULL, true);
    if (!p) return NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != ':') return NULL;
    p++;
    goto value;

close:
    if (depth == 0) return p;
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    {
        bool obj = (is_obj >> (depth - 1)) & 1;
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            if (obj) goto key;
            goto value;
        }
        if (*p == (obj ? '}' : ']')) {
            p++;
            depth--;
            goto close;
        }
    }
    return NULL;
}

int cch__json_check_object(const char *s, size_t len) {
    if (!s) return CCH_EBODY;
    ptr end = (ptr)s + len;
    ptr p = skip_ws((ptr)s, end);
    if (p >= end || *p != '{') return CCH_EBODY;
    p = scan_value(p, end, CCH_MSG_BODY_MAX_DEPTH);
    if (!p) return CCH_EBODY;
    return skip_ws(p, end) == end ? 0 : CCH_EBODY;
}

/* Whether the (valid) key between k and kend (the closing quote), containing
 * escapes, decodes to name[0..nlen). */
static bool key_equals_escaped(ptr k, ptr kend, const unsigned char *name, size_t nlen) {
    size_t i = 0;
    while (k < kend) {
        if (*k != '\\') {
            if (i >= nlen || name[i] != *k) return false;
            i++;
            k++;
            continue;
        }
        unsigned char tmp[4];
        int n;
        k = unescape(k + 1, kend, tmp, &n);
        if (!k || nlen - i < (size_t)n || memcmp(name + i, tmp, (size_t)n) != 0) return false;
        i += (size_t)n;
    }
    return i == nlen;
}

int cch__json_find_field(const char *s, size_t len, const char *name, size_t name_len,
                         const char **val, size_t *val_len) {
    if (!s || !name) return CCH_EBODY;
    ptr end = (ptr)s + len;
    ptr p = skip_ws((ptr)s, end);
    ptr found = NULL, found_end = NULL;
    if (p >= end || *p != '{') return CCH_EBODY;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"') return CCH_EBODY;
            ptr k = p + 1;
            bool esc;
            p = scan_string(k, end, &esc, true);
            if (!p) return CCH_EBODY;
            ptr kend = p - 1;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') return CCH_EBODY;
            p = skip_ws(p + 1, end);
            ptr v = p;
            p = scan_value(p, end, CCH_MSG_BODY_MAX_DEPTH - 1);
            if (!p) return CCH_EBODY;
            bool match = esc ? key_equals_escaped(k, kend, (const unsigned char *)name, name_len)
                             : ((size_t)(kend - k) == name_len && memcmp(k, name, name_len) == 0);
            if (match) {
                found = v;
                found_end = p;
            }
            p = skip_ws(p, end);
            if (p >= end) return CCH_EBODY;
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (*p != '}') return CCH_EBODY;
            p++;
            break;
        }
    }
    if (skip_ws(p, end) != end) return CCH_EBODY;
    if (!found) return CCH_ENOTFOUND;
    if (val) *val = (const char *)found;
    if (val_len) *val_len = (size_t)(found_end - found);
    return 0;
}

int cch__json_decode_string(const char *v, size_t vlen, char *buf, size_t cap,
                            size_t *out_len) {
    if (!v || vlen < 2 || v[0] != '"') return CCH_EBODY;
    if (!buf) cap = 0;
    ptr p = (ptr)v + 1, end = (ptr)v + vlen;
    size_t limit = cap ? cap - 1 : 0; /* bytes of text that fit with the NUL */
    size_t w = 0, total = 0;
    bool truncated = (cap == 0);
    for (;;) {
        ptr run = p;
        while (p < end && str_class[*p] == C_PLAIN) p++;
        size_t k = (size_t)(p - run);
        if (k && !truncated) {
            if (limit - w >= k) {
                memcpy(buf + w, run, k);
                w += k;
            } else { /* ASCII: any cut is a character boundary */
                memcpy(buf + w, run, limit - w);
                w = limit;
                truncated = true;
            }
        }
        total += k;
        if (p >= end) return CCH_EBODY;
        int cls = str_class[*p];
        if (cls == C_QUOTE) {
            p++;
            break;
        }
        unsigned char tmp[4];
        const unsigned char *src;
        int n;
        if (cls == C_BSLASH) {
            p = unescape(p + 1, end, tmp, &n);
            src = tmp;
        } else {
            src = p;
            p = utf8_seq(p, end, cls);
            n = p ? (int)(p - src) : 0;
        }
        if (!p) return CCH_EBODY;
        if (!truncated) {
            if (limit - w >= (size_t)n) {
                memcpy(buf + w, src, (size_t)n);
                w += (size_t)n;
            } else {
                truncated = true; /* never split a character */
            }
        }
        total += (size_t)n;
    }
    if (p != end) return CCH_EBODY;
    if (cap) buf[w] = '\0';
    if (out_len) *out_len = total;
    return truncated ? CCH_ETOOBIG : 0;
}

int cch__json_parse_int(const char *v, size_t vlen, int64_t *out) {
    if (!v || !out || vlen == 0) return CCH_EBODY;
    ptr p = (ptr)v, end = (ptr)v + vlen;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    if (p >= end || !is_digit(*p)) return CCH_EBODY;
    if (*p == '0' && end - p > 1) return CCH_EBODY; /* no leading zeros */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t acc = 0;
    for (; p < end; p++) {
        if (!is_digit(*p)) return CCH_EBODY;
        unsigned d = (unsigned)(*p - '0');
        if (acc > (limit - d) / 10) return CCH_EBODY;
        acc = acc * 10 + d;
    }
    if (neg) *out = acc == 0 ? 0 : -(int64_t)(acc - 1) - 1;
    else *out = (int64_t)acc;
    return 0;
}
