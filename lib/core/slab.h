/* lib/core/slab.h - pools of fixed-size objects carved out of slabs mapped apart
 * from the heap (internal).
 *
 * For the transient objects of a fanout storm (the in-memory layer's per-channel
 * rings, the WebSocket adapter's output queues): a storm makes one per member at
 * once, and objects from the heap would be left as holes between the connections'
 * long-lived allocations once it is over, never given back to the system. A slab is
 * mapped with mmap, aligned to its size (so an object finds its slab by masking its
 * address), holds its header in its first slot(s), and is unmapped by a trim once
 * none of its objects is in use. Pages are resident only once an object on them has
 * been handed out. Not thread-safe: the owner locks. */
#ifndef CCH_SLAB_H
#define CCH_SLAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cch__slab cch__slab;

typedef struct cch__slab_pool {
    size_t obj_size;            /* a multiple of 16 */
    size_t slab_bytes;          /* a power of two */
    uint32_t first, cap;        /* object slots first .. cap-1 (before: the header) */
    cch__slab *partial;         /* slabs with objects in use and free slots */
    cch__slab *empty;           /* slabs with no object in use (full ones: no list) */
    uint32_t n_empty;
    uint32_t used, peak;        /* slabs with an object in use: now, most since the last trim */
} cch__slab_pool;

/* A pool of objects of obj_size bytes (rounded up to 16): slabs of 64 KiB, or of 16
 * objects when those are larger. */
void cch__slab_pool_init(cch__slab_pool *p, size_t obj_size);
/* An object (its contents undefined), or NULL when mmap fails. */
void *cch__slab_take(cch__slab_pool *p);
/* Gives back an object from cch__slab_take of the same pool. */
void cch__slab_give(cch__slab_pool *p, void *obj);
/* Unmaps the empty slabs beyond those the pool needed at once since the last trim
 * (all of them when `all`), and starts a new period. */
void cch__slab_trim(cch__slab_pool *p, bool all);
/* Unmaps every empty slab (the owner gave every object back). */
void cch__slab_pool_free(cch__slab_pool *p);
/* Slabs mapped: in use and kept empty. */
size_t cch__slab_count(const cch__slab_pool *p);

#endif
