/* cchannels/msg.h - the message: an immutable, reference-counted {type, body}.
 *
 * `type` is a short name such as "chat.message" or "chat_message" (for handler
 * lookup a '.' and a '_' are the same character, as in Django Channels). `body` is
 * the text of a JSON object, "{}" when empty. A message is created once and shared,
 * by reference count, by every recipient of a group_send: there is no copy per
 * recipient. Reference counting is atomic, so a message may be shared across
 * threads.
 *
 * Attachments let code that reads a message cache what it derived from it (a
 * WebSocket frame built once for every member, a parsed JSON tree) on the message
 * itself: they are freed with the message. */
#ifndef CCHANNELS_MSG_H
#define CCHANNELS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct cch_msg cch_msg;

/* Longest message type, in bytes (excluding the NUL). */
#define CCH_MSG_TYPE_MAX 99
/* Deepest nesting of arrays and objects accepted in a body. */
#define CCH_MSG_BODY_MAX_DEPTH 64

/* Creates a message with one reference, owned by the caller.
 *
 * `type`: NUL-terminated, 1..CCH_MSG_TYPE_MAX bytes of printable ASCII without
 * spaces. `body`: `len` bytes holding one JSON object (whitespace around it is
 * allowed); NULL with len 0 means "{}". Both are copied.
 *
 * Returns 0 and sets *out, or CCH_EINVAL (out NULL), CCH_ENAME (bad type),
 * CCH_EBODY (body is not one valid JSON object, is nested deeper than
 * CCH_MSG_BODY_MAX_DEPTH, is not valid UTF-8, or holds what a JSON library such as
 * jansson cannot represent: an integer outside int64, a number beyond the range of
 * a double, a key containing \u0000), CCH_ENOMEM. *out is left NULL on
 * failure. */
int cch_msg_create(cch_msg **out, const char *type, const char *body, size_t len);

/* The same as cch_msg_create, returning the message or NULL on any failure. */
cch_msg *cch_msg_new(const char *type, const char *body, size_t len);

/* Adds a reference and returns `m`. Thread-safe. NULL is returned unchanged. */
cch_msg *cch_msg_ref(const cch_msg *m);

/* Drops a reference; the last one frees the message and its attachments.
 * Thread-safe. NULL is ignored. */
void cch_msg_unref(const cch_msg *m);

/* The type, NUL-terminated, owned by the message. */
const char *cch_msg_type(const cch_msg *m);

/* The body text (NUL-terminated, so it can be printed; `len` bytes excluding the
 * NUL), owned by the message. */
const char *cch_msg_body(const cch_msg *m);
size_t cch_msg_body_len(const cch_msg *m);

/* Whether the type names `type`, treating '.' and '_' as equal
 * ("chat.message" matches "chat_message"). */
bool cch_msg_type_is(const cch_msg *m, const char *type);

/* Reading one top-level field of the body without a JSON library. These scan the
 * body each time they are called; for repeated access parse it once (cchannels/json.h).
 *
 * cch_msg_field_raw: sets *val and *len to the raw JSON text of the field's value
 *   (e.g. `"hi"`, `12`, `[1,2]`), pointing into the body. Returns 0 or CCH_ENOTFOUND.
 * cch_msg_field_string: copies the decoded string value (escapes resolved, NUL
 *   added) into buf. Returns its length, CCH_ENOTFOUND, CCH_EBODY (not a string) or
 *   CCH_ETOOBIG (cap too small; buf then holds a truncated, NUL-terminated prefix
 *   when cap > 0).
 * cch_msg_field_int: parses an integer value. Returns 0, CCH_ENOTFOUND, or
 *   CCH_EBODY (not an integer, or out of int64 range). */
int cch_msg_field_raw(const cch_msg *m, const char *name, const char **val, size_t *len);
int cch_msg_field_string(const cch_msg *m, const char *name, char *buf, size_t cap);
int cch_msg_field_int(const cch_msg *m, const char *name, int64_t *out);

/* The same lookup on any JSON text, e.g. what a browser sent (consumer.h's receive),
 * so that a consumer can read a field of it without a JSON library: checks that
 * json[0..len) is exactly one JSON object (the rules of a message body, whitespace
 * around it allowed) and sets *val / *val_len to the raw text of field `name`'s value,
 * pointing into `json`. Duplicate keys: the last one counts, as in jansson and Python.
 * Returns 0, CCH_ENOTFOUND, CCH_EBODY (not a valid object: nothing set) or CCH_EINVAL
 * (a NULL argument). Scans the whole text on every call. */
int cch_json_field_raw(const char *json, size_t len, const char *name, const char **val,
                       size_t *val_len);

/* Attachments: cached data derived from a message, keyed by the address of
 * something the attaching module owns (a static variable, say).
 *
 * cch_msg_attachment: the data attached under `key`, or NULL.
 * cch_msg_attach: attaches `data` under `key` unless some data is already
 *   attached under it (another thread may have won the race); returns the data
 *   that is attached now. If that is not `data`, the caller still owns `data` and
 *   must free it itself. Once attached, `data` belongs to the message, which calls
 *   free_data(data) when it is freed (free_data may be NULL). Returns NULL only on
 *   CCH_ENOMEM, in which case `data` is still the caller's.
 * Thread-safe; both are lock-free. */
void *cch_msg_attachment(const cch_msg *m, const void *key);
void *cch_msg_attach(const cch_msg *m, const void *key, void *data, void (*free_data)(void *));

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
