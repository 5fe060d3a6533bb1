/* lib/redis/redis_codec.c - the Redis layer's encoding: our {type, JSON body} to
 * channels_redis's msgpack map and back, the consistent hash, random prefixes and
 * the scores (timestamps) written to Redis.
 *
 * Encoding parses a body once with jansson and keeps the msgpack form of its fields
 * attached to the message, so a group_send to many queue keys (and to several
 * groups) encodes it once. Decoding checks the msgpack structure first (sizes
 * against the bytes present, nesting), so that msgpack-c never allocates more than
 * the input can describe, then unpacks it with msgpack-c and writes the JSON text. */
#include "redis_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ---- rl_buf --------------------------------------------------------------------------- */

void rl_buf_free(rl_buf *b) {
    cch__free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool buf_reserve(rl_buf *b, size_t n) {
    if (b->oom) return false;
    if (b->len + n <= b->cap) return true;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n) {
        if (ncap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        ncap *= 2;
    }
    char *np = cch__realloc(b->p, ncap);
    if (!np) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = ncap;
    return true;
}

bool rl_buf_put(rl_buf *b, const void *data, size_t n) {
    if (!buf_reserve(b, n)) return false;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    return true;
}

bool rl_buf_putc(rl_buf *b, char c) { return rl_buf_put(b, &c, 1); }

bool rl_buf_printf(rl_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->oom = true; /* only short numbers are printed this way */
        return false;
    }
    return rl_buf_put(b, tmp, (size_t)n);
}

static int buf_write(void *data, const char *buf, size_t len) {
    return rl_buf_put(data, buf, len) ? 0 : -1;
}

/* ---- encoding ------------------------------------------------------------------------- */

static const char body_key; /* the attachment key */

static void body_free(void *p) { cch__free(p); }

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
    if (msgpack_pack_str(pk, n) != 0) return -1;
    return msgpack_pack_str_body(pk, s, n);
}

/* Packs a jansson value; -1 on out-of-memory. */
static int pack_json(msgpack_packer *pk, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        size_t klen;
        json_t *val;
        if (msgpack_pack_map(pk, json_object_size(v)) != 0) return -1;
        json_object_keylen_foreach((json_t *)v, k, klen, val) {
            if (pack_str(pk, k, klen) != 0 || pack_json(pk, val) != 0) return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *val;
        if (msgpack_pack_array(pk, json_array_size(v)) != 0) return -1;
        json_array_foreach(v, i, val) {
            if (pack_json(pk, val) != 0) return -1;
        }
        return 0;
    }
    case JSON_STRING: return pack_str(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_NULL: return msgpack_pack_nil(pk);
    }
    return -1;
}

int rl_body_get(const cch_msg *m, const rl_body **out) {
    *out = NULL;
    const rl_body *have = cch_msg_attachment(m, &body_key);
    if (have) {
        *out = have;
        return 0;
    }
    json_error_t err;
    json_t *tree = json_loadb(cch_msg_body(m), cch_msg_body_len(m), JSON_ALLOW_NUL, &err);
    if (!tree) return json_error_code(&err) == json_error_out_of_memory ? CCH_ENOMEM : CCH_EBODY;
    if (!json_is_object(tree)) {
        json_decref(tree);
        return CCH_EBODY;
    }
    rl_buf b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    int rc = 0;
    const char *k;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach(tree, k, klen, val) {
        if ((klen == 4 && !memcmp(k, "type", 4)) ||
            (klen == sizeof RL_ASGI_CHANNEL - 1 && !memcmp(k, RL_ASGI_CHANNEL, klen))) {
            rc = CCH_EBODY; /* reserved: the message's type, the layer's routing */
            break;
        }
        if (pack_str(&pk, k, klen) != 0 || pack_json(&pk, val) != 0) {
            rc = CCH_ENOMEM;
            break;
        }
    }
    uint32_t n = (uint32_t)json_object_size(tree);
    json_decref(tree);
    rl_body *body = NULL;
    if (rc == 0 && !(body = cch__malloc(sizeof *body + b.len))) rc = CCH_ENOMEM;
    if (rc < 0) {
        rl_buf_free(&b);
        return rc;
    }
    body->n = n;
    body->len = b.len;
    if (b.len) memcpy(body->data, b.p, b.len);
    rl_buf_free(&b);
    const rl_body *att = cch_msg_attach(m, &body_key, body, body_free);
    if (att != body) cch__free(body); /* another thread won, or out of memory */
    if (!att) return CCH_ENOMEM;
    *out = att;
    return 0;
}

bool rl_encode(rl_buf *b, size_t random_prefix, const char *type, const rl_body *body,
               const char *const *chan, const size_t *chan_len, size_t nchan, bool as_list) {
    if (random_prefix) {
        char rnd[RL_RANDOM_PREFIX];
        rl_random_bytes(rnd, sizeof rnd);
        if (!rl_buf_put(b, rnd, random_prefix < sizeof rnd ? random_prefix : sizeof rnd))
            return false;
    }
    bool with_chan = as_list || nchan > 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    if (msgpack_pack_map(&pk, 1 + (size_t)body->n + (with_chan ? 1 : 0)) != 0) return false;
    if (pack_str(&pk, "type", 4) != 0 || pack_str(&pk, type, strlen(type)) != 0) return false;
    if (!rl_buf_put(b, body->data, body->len)) return false;
    if (!with_chan) return !b->oom;
    if (pack_str(&pk, RL_ASGI_CHANNEL, sizeof RL_ASGI_CHANNEL - 1) != 0) return false;
    if (!as_list) return pack_str(&pk, chan[0], chan_len[0]) == 0;
    if (msgpack_pack_array(&pk, nchan) != 0) return false;
    for (size_t i = 0; i < nchan; i++)
        if (pack_str(&pk, chan[i], chan_len[i]) != 0) return false;
    return !b->oom;
}

/* ---- decoding ------------------------------------------------------------------------- */

#define MP_MAX_DEPTH 32 /* msgpack-c's unpacker stack */

static inline uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks one msgpack object at p[0..len): every length fits in the bytes present,
 * nesting is at most MP_MAX_DEPTH. Returns its size, or 0 when it is malformed. */
static size_t mp_scan(const unsigned char *p, size_t len, int depth) {
    if (len == 0 || depth > MP_MAX_DEPTH) return 0;
    unsigned c = p[0];
    size_t hdr = 1, body = 0, count = 0, per = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    if (c >= 0xa0 && c <= 0xbf) body = c & 0x1f;
    else if (c >= 0x90 && c <= 0x9f) count = c & 0x0f, per = 1;
    else if (c >= 0x80 && c <= 0x8f) count = c & 0x0f, per = 2;
    else {
        switch (c) {
        case 0xcc: case 0xd0: body = 1; break;
        case 0xcd: case 0xd1: body = 2; break;
        case 0xca: case 0xce: case 0xd2: body = 4; break;
        case 0xcb: case 0xcf: case 0xd3: body = 8; break;
        case 0xd4: body = 2; break;
        case 0xd5: body = 3; break;
        case 0xd6: body = 5; break;
        case 0xd7: body = 9; break;
        case 0xd8: body = 17; break;
        case 0xc4: case 0xd9: if (len < 2) return 0; hdr = 2; body = p[1]; break;
        case 0xc5: case 0xda: if (len < 3) return 0; hdr = 3; body = be16(p + 1); break;
        case 0xc6: case 0xdb: if (len < 5) return 0; hdr = 5; body = be32(p + 1); break;
        case 0xc7: if (len < 2) return 0; hdr = 2; body = (size_t)p[1] + 1; break;
        case 0xc8: if (len < 3) return 0; hdr = 3; body = (size_t)be16(p + 1) + 1; break;
        case 0xc9: if (len < 5) return 0; hdr = 5; body = (size_t)be32(p + 1) + 1; break;
        case 0xdc: if (len < 3) return 0; hdr = 3; count = be16(p + 1); per = 1; break;
        case 0xdd: if (len < 5) return 0; hdr = 5; count = be32(p + 1); per = 1; break;
        case 0xde: if (len < 3) return 0; hdr = 3; count = be16(p + 1); per = 2; break;
        case 0xdf: if (len < 5) return 0; hdr = 5; count = be32(p + 1); per = 2; break;
        default: return 0; /* 0xc1: never used */
        }
    }
    if (hdr > len) return 0;
    if (!per) return body <= len - hdr ? hdr + body : 0;
    size_t pos = hdr;
    if (count > (len - hdr) / per) return 0; /* each element takes at least one byte */
    for (size_t i = 0; i < count * per; i++) {
        size_t n = mp_scan(p + pos, len - pos, depth + 1);
        if (!n) return 0;
        pos += n;
    }
    return pos;
}

static bool json_escape(rl_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (!rl_buf_putc(b, '"')) return false;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (!rl_buf_put(b, s + run, i - run)) return false;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            if (!rl_buf_put(b, esc, 2)) return false;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            if (!rl_buf_put(b, esc, 2)) return false;
        } else if (!rl_buf_put(b, esc, 6)) {
            return false;
        }
        run = i + 1;
    }
    /* An empty msgpack string has a NULL pointer: no arithmetic on it. */
    return (run == n || rl_buf_put(b, s + run, n - run)) && rl_buf_putc(b, '"');
}

/* The shortest of %.15g, %.16g, %.17g that reads back as d, always with a '.' or an
 * exponent so that it stays a float. */
static bool json_double(rl_buf *b, double d) {
    char s[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        for (char *p = s; *p; p++)
            if (*p == ',') *p = '.'; /* a host locale's decimal comma */
        if (strtod(s, NULL) == d) break;
    }
    if (!strpbrk(s, ".eE")) strcat(s, ".0");
    return rl_buf_put(b, s, strlen(s));
}

static const char *mp_kind(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_BIN: return "a msgpack bin value";
    case MSGPACK_OBJECT_EXT: return "a msgpack ext value";
    default: return "a value";
    }
}

/* Writes o as JSON. Returns 0, CCH_EBODY (err says why) or CCH_ENOMEM. */
static int mp_json(rl_buf *b, const msgpack_object *o, const char *field, char *err, size_t ecap) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return rl_buf_put(b, "null", 4) ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_BOOLEAN:
        return (o->via.boolean ? rl_buf_put(b, "true", 4) : rl_buf_put(b, "false", 5)) ? 0
                                                                                      : CCH_ENOMEM;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) { /* cchannels' bodies hold int64 */
            snprintf(err, ecap, "field \"%.40s\": an integer above int64", field);
            return CCH_EBODY;
        }
        return rl_buf_printf(b, "%" PRIu64, o->via.u64) ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return rl_buf_printf(b, "%" PRId64, o->via.i64) ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            snprintf(err, ecap, "field \"%.40s\": %s cannot be JSON", field,
                     isnan(o->via.f64) ? "NaN" : "an infinite float");
            return CCH_EBODY;
        }
        return json_double(b, o->via.f64) ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_STR:
        return json_escape(b, o->via.str.ptr, o->via.str.size) ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_ARRAY:
        if (!rl_buf_putc(b, '[')) return CCH_ENOMEM;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i && !rl_buf_putc(b, ',')) return CCH_ENOMEM;
            int rc = mp_json(b, &o->via.array.ptr[i], field, err, ecap);
            if (rc < 0) return rc;
        }
        return rl_buf_putc(b, ']') ? 0 : CCH_ENOMEM;
    case MSGPACK_OBJECT_MAP:
        if (!rl_buf_putc(b, '{')) return CCH_ENOMEM;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                snprintf(err, ecap, "field \"%.40s\": a map key that is not a string", field);
                return CCH_EBODY;
            }
            if ((i && !rl_buf_putc(b, ',')) ||
                !json_escape(b, kv->key.via.str.ptr, kv->key.via.str.size) || !rl_buf_putc(b, ':'))
                return CCH_ENOMEM;
            int rc = mp_json(b, &kv->val, field, err, ecap);
            if (rc < 0) return rc;
        }
        return rl_buf_putc(b, '}') ? 0 : CCH_ENOMEM;
    default:
        snprintf(err, ecap, "field \"%.40s\": %s cannot be JSON", field, mp_kind(o));
        return CCH_EBODY;
    }
}

static bool str_is(const msgpack_object *o, const char *s, size_t n) {
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && !memcmp(o->via.str.ptr, s, n);
}

void rl_incoming_done(rl_incoming *in) {
    cch_msg_unref(in->msg);
    in->msg = NULL;
    msgpack_unpacked_destroy(&in->up);
}

int rl_decode(rl_incoming *in, const char *data, size_t len, char *err, size_t ecap) {
    memset(in, 0, sizeof *in);
    msgpack_unpacked_init(&in->up);
    if (ecap) err[0] = '\0';
    size_t n = mp_scan((const unsigned char *)data, len, 1);
    if (n == 0 || n != len) {
        snprintf(err, ecap, n ? "trailing bytes after the msgpack map" : "malformed msgpack");
        return CCH_EBODY;
    }
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&in->up, data, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) return CCH_ENOMEM;
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, ecap, "malformed msgpack");
        return CCH_EBODY;
    }
    const msgpack_object *root = &in->up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, ecap, "the message is not a msgpack map");
        return CCH_EBODY;
    }
    const msgpack_object *type = NULL;
    rl_buf b = {0};
    int rc = rl_buf_putc(&b, '{') ? 0 : CCH_ENOMEM;
    bool first = true;
    for (uint32_t i = 0; rc == 0 && i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            snprintf(err, ecap, "a top-level key that is not a string");
            rc = CCH_EBODY;
        } else if (str_is(&kv->key, "type", 4)) {
            if (kv->val.type != MSGPACK_OBJECT_STR) {
                snprintf(err, ecap, "\"type\" is %s",
                         kv->val.type == MSGPACK_OBJECT_BIN ? "msgpack bin, not a string"
                                                            : "not a string");
                rc = CCH_EBODY;
            }
            if (!type) type = &kv->val;
        } else if (str_is(&kv->key, RL_ASGI_CHANNEL, sizeof RL_ASGI_CHANNEL - 1)) {
            const msgpack_object *v = &kv->val;
            bool ok = v->type == MSGPACK_OBJECT_STR || v->type == MSGPACK_OBJECT_ARRAY;
            for (uint32_t j = 0; ok && v->type == MSGPACK_OBJECT_ARRAY && j < v->via.array.size; j++)
                ok = v->via.array.ptr[j].type == MSGPACK_OBJECT_STR;
            if (!ok) {
                snprintf(err, ecap, "\"" RL_ASGI_CHANNEL "\" is not a string or a list of strings");
                rc = CCH_EBODY;
            }
            in->chan = v;
        } else {
            char field[48];
            size_t fl = kv->key.via.str.size < sizeof field - 1 ? kv->key.via.str.size
                                                                 : sizeof field - 1;
            if (fl) memcpy(field, kv->key.via.str.ptr, fl); /* ptr is NULL when empty */
            field[fl] = '\0';
            if ((!first && !rl_buf_putc(&b, ',')) ||
                !json_escape(&b, kv->key.via.str.ptr, kv->key.via.str.size) || !rl_buf_putc(&b, ':'))
                rc = CCH_ENOMEM;
            else
                rc = mp_json(&b, &kv->val, field, err, ecap);
            first = false;
        }
    }
    if (rc == 0 && !type) {
        snprintf(err, ecap, "no \"type\"");
        rc = CCH_EBODY;
    }
    if (rc == 0 && !rl_buf_putc(&b, '}')) rc = CCH_ENOMEM;
    if (rc == 0) {
        char tbuf[CCH_MSG_TYPE_MAX + 1];
        size_t tl = type->via.str.size;
        if (tl > CCH_MSG_TYPE_MAX || memchr(type->via.str.ptr, '\0', tl)) {
            snprintf(err, ecap, "the type is not a valid message type");
            rc = CCH_ENAME;
        } else {
            memcpy(tbuf, type->via.str.ptr, tl);
            tbuf[tl] = '\0';
            rc = cch_msg_create(&in->msg, tbuf, b.p, b.len);
            if (rc == CCH_ENAME) snprintf(err, ecap, "the type is not a valid message type");
            else if (rc == CCH_EBODY) snprintf(err, ecap, "the body is not valid JSON (UTF-8?)");
        }
    }
    if (rc == CCH_ENOMEM) snprintf(err, ecap, "out of memory");
    rl_buf_free(&b);
    return rc;
}

/* ---- hash, random, time ---------------------------------------------------------------- */

uint32_t rl_crc32(const void *data, size_t len) {
    static const uint32_t tab[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
    };
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ tab[crc & 15];
        crc = (crc >> 4) ^ tab[crc & 15];
    }
    return crc ^ 0xFFFFFFFFu;
}

uint32_t rl_hash(const char *name, size_t len, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t v = rl_crc32(name, len) & 0xFFFu;
    /* int(v / (4096 / float(n))), as Python computes it */
    uint32_t i = (uint32_t)((double)v / (4096.0 / (double)n));
    return i < n ? i : n - 1;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rl_random_bytes(void *buf, size_t n) {
    static _Thread_local uint64_t state;
    static _Thread_local bool seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof state, GRND_NONBLOCK) != (ssize_t)sizeof state) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid() ^
                    (uint64_t)(uintptr_t)&state;
        }
        seeded = true;
    }
    unsigned char *p = buf;
    while (n) {
        uint64_t r = splitmix(&state);
        size_t k = n < 8 ? n : 8;
        memcpy(p, &r, k);
        p += k;
        n -= k;
    }
}

uint64_t rl_now_us(atomic_uint_fast64_t *last) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint_fast64_t prev = atomic_load_explicit(last, memory_order_relaxed);
    for (;;) {
        uint64_t v = now > prev ? now : prev + 1;
        if (atomic_compare_exchange_weak_explicit(last, &prev, v, memory_order_relaxed,
                                                  memory_order_relaxed))
            return v;
    }
}

int rl_fmt_score(char *buf, size_t cap, uint64_t us) {
    return snprintf(buf, cap, "%" PRIu64 ".%06u", us / 1000000u, (unsigned)(us % 1000000u));
}

int rl_fmt_cutoff(char *buf, size_t cap, uint64_t us, unsigned minus) {
    uint64_t s = us / 1000000u;
    return snprintf(buf, cap, "%" PRId64, (int64_t)s - (int64_t)minus);
}
