/* lib/json/json.c - JSON helpers on jansson (cchannels/json.h).
 *
 * A message body is parsed at most once: the tree is attached to the message
 * (cch_msg_attach), so every recipient of a group_send reads the same tree, from any
 * thread (jansson's reference counts are atomic and the tree is never modified).
 * Serialisation goes through cchannels' allocator; jansson's own allocations (the
 * parsed trees) use whatever allocator the host gave jansson. */
#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <jansson.h>

#include "cchannels/consumer.h"
#include "cchannels/error.h"
#include "cchannels/json.h"
#include "cchannels/msg.h"

/* The attachment key: the address of something this module owns. */
static const char json_tree_key;

/* Serialisations up to this size are built on the stack. */
#define JSON_STACK_BUF 512

static void free_tree(void *tree) { json_decref((json_t *)tree); }

const json_t *cch_msg_json(const cch_msg *m) {
    if (!m) return NULL;
    json_t *tree = cch_msg_attachment(m, &json_tree_key);
    if (tree) return tree;
    json_error_t err;
    tree = json_loadb(cch_msg_body(m), cch_msg_body_len(m), JSON_ALLOW_NUL, &err);
    if (!tree) return NULL;
    if (!json_is_object(tree)) { /* cannot happen for a valid message */
        json_decref(tree);
        return NULL;
    }
    json_t *attached = cch_msg_attach(m, &json_tree_key, tree, free_tree);
    /* Another thread attached its tree first (use that one), or ENOMEM. */
    if (attached != tree) json_decref(tree);
    return attached;
}

/* Serialises `value` compactly into *out: `stack` (JSON_STACK_BUF bytes) when it
 * fits, a buffer from cch__malloc otherwise (the caller frees it if != stack).
 * Returns the length, or a negative code. */
static long serialise(const json_t *value, size_t flags, char *stack, char **out) {
    size_t n = json_dumpb(value, stack, JSON_STACK_BUF, flags);
    if (n == 0) return CCH_EINVAL; /* not serialisable (or jansson out of memory) */
    if (n <= JSON_STACK_BUF) {
        *out = stack;
        return (long)n;
    }
    char *buf = cch__malloc(n);
    if (!buf) return CCH_ENOMEM;
    if (json_dumpb(value, buf, n, flags) != n) {
        cch__free(buf);
        return CCH_EINVAL;
    }
    *out = buf;
    return (long)n;
}

int cch_msg_from_json(cch_msg **out, const char *type, const json_t *obj) {
    if (!out) return CCH_EINVAL;
    *out = NULL;
    if (!type || !obj) return CCH_EINVAL;
    if (!json_is_object(obj)) return CCH_EBODY;
    char stack[JSON_STACK_BUF];
    char *text = NULL;
    long n = serialise(obj, JSON_COMPACT, stack, &text);
    if (n < 0) return n == CCH_ENOMEM ? CCH_ENOMEM : CCH_EBODY;
    int rc = cch_msg_create(out, type, text, (size_t)n);
    if (text != stack) cch__free(text);
    return rc;
}

int cch_send_json(cch_conn *c, const json_t *value) {
    if (!c || !value) return CCH_EINVAL;
    char stack[JSON_STACK_BUF];
    char *text = NULL;
    long n = serialise(value, JSON_COMPACT | JSON_ENCODE_ANY, stack, &text);
    if (n < 0) return (int)n;
    int rc = cch_send_text(c, text, (size_t)n);
    if (text != stack) cch__free(text);
    return rc;
}

/* Whether the arrays and objects in `text` nest at most CCH_MSG_BODY_MAX_DEPTH deep.
 * Brackets inside strings do not count; the text need not be valid JSON (jansson
 * checks that next). */
static bool depth_ok(const char *text, size_t len) {
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\') i++;
            else if (ch == '"') in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > CCH_MSG_BODY_MAX_DEPTH) return false;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return true;
}

json_t *cch_json_parse(const char *text, size_t len) {
    if (!text || !depth_ok(text, len)) return NULL;
    /* A raw NUL byte is never valid JSON (inside strings it must be escaped), and
     * jansson skips one that follows a number or a literal ("[1\0]" would parse). */
    if (memchr(text, '\0', len)) return NULL;
    json_error_t err;
    return json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
}
