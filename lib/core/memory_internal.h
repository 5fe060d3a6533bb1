/* lib/core/memory_internal.h - what the tests may see of the in-memory layer. */
#ifndef CCH_MEMORY_INTERNAL_H
#define CCH_MEMORY_INTERNAL_H

#include <stddef.h>

#include "cchannels/layer_impl.h"

/* How many ring slabs in-memory layer `l` has mapped (in use or kept empty). */
size_t cch__memory_layer_ring_slabs(cch_layer *l);

#endif
