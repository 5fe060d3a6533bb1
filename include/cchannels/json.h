/* cchannels/json.h - optional JSON helpers on jansson (meson option `json`).
 *
 * The core never parses message bodies. These helpers parse a body once and cache the
 * tree on the message (as an attachment), so every recipient of a group_send reads
 * the same parsed tree; and they build messages from jansson values.
 * Link with cchannels and jansson. */
#ifndef CCHANNELS_JSON_H
#define CCHANNELS_JSON_H

#include <jansson.h>

#include "consumer.h"
#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The body of `m` parsed as a JSON object, parsed on first use and cached on the
 * message (thread-safe). Borrowed: valid while the message lives; do not modify or
 * decref it. Returns NULL when the body cannot be parsed (it was validated when the
 * message was created, so only on out-of-memory). */
const json_t *cch_msg_json(const cch_msg *m);

/* Creates a message of `type` whose body is `obj` serialised compactly. `obj` must be
 * a JSON object; it is borrowed (not decref'd). Returns 0 and *out, CCH_EINVAL,
 * CCH_ENAME, CCH_EBODY, CCH_ENOMEM. */
int cch_msg_from_json(cch_msg **out, const char *type, const json_t *obj);

/* Sends `value` serialised compactly as a text message (cch_send_text). Borrowed.
 * Returns cch_send_text's codes, or CCH_EINVAL / CCH_ENOMEM. */
int cch_send_json(cch_conn *c, const json_t *value);

/* Parses text received from a client. Returns a new reference (the caller decrefs)
 * or NULL when `text` is not valid JSON or nests deeper than CCH_MSG_BODY_MAX_DEPTH. */
json_t *cch_json_parse(const char *text, size_t len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
