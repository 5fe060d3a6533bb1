/* lib/core/msg_internal.h - internal: batched reference counting for messages.
 *
 * The channel layers use these to take every reference of a fanout with one atomic
 * operation, and to drop references while holding their lock without running a
 * message's destructor (attachment callbacks) under it. */
#ifndef CCH_INTERNAL_MSG_H
#define CCH_INTERNAL_MSG_H

#include <stddef.h>

#include "cchannels/msg.h"

/* Adds n references to m with one atomic operation (n may be 0). */
void cch__msg_ref_n(const cch_msg *m, size_t n);

/* Drops n references with one atomic operation (n may be 0); frees the message when
 * they were the last. */
void cch__msg_unref_n(const cch_msg *m, size_t n);

/* Drops one reference. When it was the last, the message is not freed but pushed on
 * *free_list (a list linked through the message itself); free the list later with
 * cch__msg_free_list, e.g. after unlocking. */
void cch__msg_unref_deferred(const cch_msg *m, cch_msg **free_list);

/* Frees every message on a list built by cch__msg_unref_deferred. NULL is fine. */
void cch__msg_free_list(cch_msg *list);

/* Creates a message whose body is `len` arbitrary bytes (not checked as JSON): a
 * payload derived from another message that a transport frames like a body, such as
 * websocket.send's decoded "text". Returns 0, CCH_ENAME, CCH_ENOMEM. */
int cch__msg_create_raw(cch_msg **out, const char *type, const char *body, size_t len);

/* The current reference count (for tests and assertions; racy by nature). */
size_t cch__msg_refs(const cch_msg *m);

#endif
