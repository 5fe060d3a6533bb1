/* lib/core/alloc.h - internal allocation wrappers (see cchannels/alloc.h).
 * Library code never calls malloc/free directly: it calls these. */
#ifndef CCH_INTERNAL_ALLOC_H
#define CCH_INTERNAL_ALLOC_H

#include <stddef.h>

void *cch__malloc(size_t size);
void *cch__calloc(size_t count, size_t size);
void *cch__realloc(void *ptr, size_t size);
void cch__free(void *ptr);
/* strdup / strndup through the allocator; NULL on failure. */
char *cch__strdup(const char *s);
char *cch__strndup(const char *s, size_t n);

/* uthash allocates through these too. */
#define uthash_malloc(sz) cch__malloc(sz)
#define uthash_free(ptr, sz) cch__free(ptr)

#endif
