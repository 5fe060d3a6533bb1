/* lib/core/memory_internal.h - what the tests may see of the in-memory layer. */
#ifndef CCH_MEMORY_INTERNAL_H
#define CCH_MEMORY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cchannels/layer_impl.h"

/* How many ring slabs in-memory layer `l` has mapped (in use or kept empty). */
size_t cch__memory_layer_ring_slabs(cch_layer *l);

/* Channel handles for cch__memory_send_many, resolved from a list of names once and
 * used while no channel of the layer has been freed. Zeroed: empty. */
typedef struct cch__mem_handles {
    void **ch;
    size_t n, cap;
    uint64_t gen; /* the layer's count of freed channels when they were resolved */
} cch__mem_handles;

/* Sends m to the channels names[0..n) (lens[i] bytes each, not NUL-terminated, valid
 * names) of in-memory layer l as cch_layer_send would, under one lock, waking each
 * receiver once; rcs[i] gets the result for names[i] (0, CCH_ECHANFULL, CCH_ENOMEM).
 * `cache`, if not NULL, must only ever be used with this same list of names: the
 * channels are looked up by name when it is empty or stale, and taken from it
 * otherwise. Returns CCH_ENOMEM if some name got it, else 0. */
int cch__memory_send_many(cch_layer *l, const cch_msg *m, const char *const *names,
                          const size_t *lens, size_t n, cch__mem_handles *cache, int *rcs);

/* Frees what `c` holds and empties it. */
void cch__mem_handles_free(cch__mem_handles *c);

#endif
