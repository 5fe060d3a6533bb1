/* cchannels/memory_layer.h - the in-memory channel layer, the embedded default.
 *
 * One process, any number of threads and apps: every channel and group lives in this
 * process's memory behind one lock. A group_send queues one shared reference to the
 * message per member (no allocation per member once the layer's pool of queues holds
 * the working set; a channel bound to a receiver holds a queue only while messages
 * wait for it) and wakes each receiver once. */
#ifndef CCHANNELS_MEMORY_LAYER_H
#define CCHANNELS_MEMORY_LAYER_H

#include <stdint.h>

#include "layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define CCH_MEMORY_DEFAULT_CAPACITY 100          /* messages per channel */
#define CCH_MEMORY_DEFAULT_EXPIRY_MS 60000u      /* a queued message lives 60 s */
#define CCH_MEMORY_DEFAULT_GROUP_EXPIRY_MS 86400000u /* a membership lives 1 day */

/* Milliseconds on a monotonic clock. */
typedef uint64_t (*cch_clock_fn)(void *ud);

/* Options; zero-initialise and set what you need. A zero field takes its default. */
typedef struct cch_memory_layer_options {
    size_t capacity;            /* per-channel queue limit; default 100 */
    uint64_t expiry_ms;         /* message expiry; default 60 000 */
    uint64_t group_expiry_ms;   /* membership expiry; default 86 400 000 */
    cch_clock_fn clock;         /* default: CLOCK_MONOTONIC; tests inject their own */
    void *clock_ud;
} cch_memory_layer_options;

/* Creates an in-memory layer with one reference (the caller's). `opts` may be NULL
 * (all defaults); it is copied. Returns NULL on CCH_ENOMEM. */
cch_layer *cch_memory_layer_new(const cch_memory_layer_options *opts);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
