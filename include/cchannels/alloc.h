/* cchannels/alloc.h - replacing the allocator cchannels uses.
 *
 * Like libuv's uv_replace_allocator: every allocation the library makes goes through
 * these four functions. Tests use it to make allocations fail on purpose; hosts use
 * it to plug in their own allocator. */
#ifndef CCHANNELS_ALLOC_H
#define CCHANNELS_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef void *(*cch_malloc_fn)(size_t size);
typedef void *(*cch_realloc_fn)(void *ptr, size_t size);
typedef void *(*cch_calloc_fn)(size_t count, size_t size);
typedef void (*cch_free_fn)(void *ptr);

/* Replaces the allocator. Call it before any other cchannels function, or when no
 * cchannels object allocated with the previous allocator is alive. All four must be
 * non-NULL; returns 0 or CCH_EINVAL. Not thread-safe. */
int cch_replace_allocator(cch_malloc_fn malloc_fn, cch_realloc_fn realloc_fn,
                          cch_calloc_fn calloc_fn, cch_free_fn free_fn);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
