/* lib/core/json_scan.h - internal: a small JSON scanner that never allocates.
 *
 * Used by messages (lib/core/msg.c) to validate bodies and to read one top-level
 * field without a JSON library. Every function takes a pointer and a length, reads
 * only inside [s, s + len) (no NUL terminator is needed or looked at), and is safe on
 * arbitrary bytes.
 *
 * The accepted language is RFC 8259 JSON with these rules:
 *  - raw bytes inside strings must be valid UTF-8 (no overlong forms, no encoded
 *    surrogates, nothing above U+10FFFF); bytes >= 0x80 outside strings are errors;
 *  - control characters (< 0x20) must be escaped inside strings;
 *  - a \u escape of a surrogate must be a high surrogate directly followed by a \u
 *    low surrogate (a lone surrogate would decode to invalid UTF-8, and jansson
 *    refuses it too); \u0000 is accepted in values and decodes to a NUL byte;
 *  - numbers must be representable, as jansson requires: an integer (no fraction,
 *    no exponent) within int64; any other number below the double overflow
 *    threshold (1e-400 is fine: it is 0);
 *  - an object key may not contain \u0000 (jansson cannot hold it);
 *  - arrays and objects nest at most CCH_MSG_BODY_MAX_DEPTH deep, the outermost
 *    object counting as depth 1 ("{}" has depth 1, {"a":[]} depth 2);
 *  - duplicate keys are allowed; lookups return the LAST occurrence, as Python's
 *    json module and jansson do. */
#ifndef CCH_INTERNAL_JSON_SCAN_H
#define CCH_INTERNAL_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* 0 when s[0..len) is exactly one JSON object, optionally surrounded by whitespace
 * (space, tab, CR, LF), following the rules above; otherwise CCH_EBODY. */
int cch__json_check_object(const char *s, size_t len);

/* Whether `len` bytes are valid UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF; any ASCII byte, NUL and control characters included): 1 or 0. Also
 * used by the WebSocket adapter for close reasons. */
int cch__utf8_valid(const void *data, size_t len);

/* Looks up top-level field `name` (name_len bytes, compared with the key after its
 * escapes are decoded, so "te\u0078t" matches "text") in the object s[0..len).
 * Sets *val / *val_len to the raw text of the value (no surrounding whitespace),
 * pointing into s. Returns 0, CCH_ENOTFOUND, or CCH_EBODY when s is not a valid
 * object (then nothing is set). The whole object is checked on every call. */
int cch__json_find_field(const char *s, size_t len, const char *name, size_t name_len,
                         const char **val, size_t *val_len);

/* Decodes the JSON string literal v[0..vlen) (quotes included, nothing else) into
 * buf (cap bytes), resolving escapes to UTF-8 and adding a NUL. *out_len (may be
 * NULL) receives the full decoded length in bytes (which may exceed cap).
 * Returns 0; CCH_EBODY when v is not exactly one valid string literal (nothing
 * useful in buf); CCH_ETOOBIG when the value needs more than cap - 1 bytes: buf then
 * holds the longest prefix of whole characters that fits, NUL-terminated (when
 * cap > 0). buf may be NULL when cap is 0. */
int cch__json_decode_string(const char *v, size_t vlen, char *buf, size_t cap,
                            size_t *out_len);

/* Parses v[0..vlen), which must be exactly a JSON integer (-?(0|[1-9][0-9]*); no
 * fraction, exponent or whitespace), into *out. Returns 0, or CCH_EBODY (not an
 * integer, or outside int64 range; *out untouched). */
int cch__json_parse_int(const char *v, size_t vlen, int64_t *out);

#endif
