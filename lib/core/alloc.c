/* lib/core/alloc.c - the replaceable allocator (cchannels/alloc.h). */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "cchannels/alloc.h"
#include "cchannels/error.h"

static cch_malloc_fn user_malloc = malloc;
static cch_realloc_fn user_realloc = realloc;
static cch_calloc_fn user_calloc = calloc;
static cch_free_fn user_free = free;

int cch_replace_allocator(cch_malloc_fn malloc_fn, cch_realloc_fn realloc_fn,
                          cch_calloc_fn calloc_fn, cch_free_fn free_fn) {
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn) return CCH_EINVAL;
    user_malloc = malloc_fn;
    user_realloc = realloc_fn;
    user_calloc = calloc_fn;
    user_free = free_fn;
    return 0;
}

void *cch__malloc(size_t size) { return user_malloc(size); }
void *cch__calloc(size_t count, size_t size) { return user_calloc(count, size); }
void *cch__realloc(void *ptr, size_t size) { return user_realloc(ptr, size); }
void cch__free(void *ptr) {
    if (ptr) user_free(ptr);
}

char *cch__strndup(const char *s, size_t n) {
    char *copy = cch__malloc(n + 1);
    if (!copy) return NULL;
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

char *cch__strdup(const char *s) { return cch__strndup(s, strlen(s)); }
