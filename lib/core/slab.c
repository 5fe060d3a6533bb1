/* lib/core/slab.c - pools of fixed-size objects in slabs mapped apart from the heap
 * (see slab.h). A slab's free objects are a list through their first bytes; slots
 * never handed out since the slab was (re)filled are taken in order from `bump`, so
 * that a slab's untouched pages stay non-resident. */
#include "slab.h"

#include <string.h>
#include <sys/mman.h>

#define SLAB_MIN_BYTES (64u * 1024u)
#define SLAB_MIN_OBJS 16u

struct cch__slab {
    cch__slab *next, *prev;     /* its pool's partial or empty list */
    void *free;                 /* objects given back */
    uint32_t used;              /* objects handed out */
    uint32_t bump;              /* slots from here on were never handed out */
};

static inline void *obj_next(const void *obj)
{
    void *next;
    memcpy(&next, obj, sizeof next);
    return next;
}

static inline void obj_set_next(void *obj, void *next)
{
    memcpy(obj, &next, sizeof next);
}

static void slab_push(cch__slab **list, cch__slab *s)
{
    s->prev = NULL;
    s->next = *list;
    if (s->next)
        s->next->prev = s;
    *list = s;
}

static void slab_unlink(cch__slab **list, cch__slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

void cch__slab_pool_init(cch__slab_pool *p, size_t obj_size)
{
    memset(p, 0, sizeof *p);
    p->obj_size = (obj_size + 15u) & ~(size_t)15u;
    if (p->obj_size < sizeof(void *))
        p->obj_size = 16;
    size_t bytes = SLAB_MIN_BYTES;
    while (bytes < p->obj_size * SLAB_MIN_OBJS)
        bytes *= 2;
    p->slab_bytes = bytes;
    p->first = (uint32_t)((sizeof(cch__slab) + p->obj_size - 1) / p->obj_size);
    p->cap = (uint32_t)(bytes / p->obj_size);
}

/* A new slab: mapped twice its size and cut down to the aligned half. */
static cch__slab *slab_new(cch__slab_pool *p)
{
    size_t bytes = p->slab_bytes;
    char *m = mmap(NULL, 2 * bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)m + bytes - 1) & ~(uintptr_t)(bytes - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    if (a + bytes < m + 2 * bytes)
        munmap(a + bytes, (size_t)(m + 2 * bytes - (a + bytes)));
    cch__slab *s = (cch__slab *)a;
    *s = (cch__slab){.bump = p->first};
    return s;
}

void *cch__slab_take(cch__slab_pool *p)
{
    cch__slab *s = p->partial;
    if (!s) {
        if ((s = p->empty) != NULL) {
            slab_unlink(&p->empty, s);
            p->n_empty--;
        } else if (!(s = slab_new(p))) {
            return NULL;
        }
        if (++p->used > p->peak)
            p->peak = p->used;
        slab_push(&p->partial, s);
    }
    void *obj;
    if (s->free) {
        obj = s->free;
        s->free = obj_next(obj);
    } else {
        obj = (char *)s + (size_t)s->bump++ * p->obj_size;
    }
    if (++s->used == p->cap - p->first)
        slab_unlink(&p->partial, s);
    return obj;
}

void cch__slab_give(cch__slab_pool *p, void *obj)
{
    cch__slab *s = (cch__slab *)((uintptr_t)obj & ~(uintptr_t)(p->slab_bytes - 1));
    bool was_full = s->used == p->cap - p->first;
    obj_set_next(obj, s->free);
    s->free = obj;
    if (--s->used == 0) {
        if (!was_full)
            slab_unlink(&p->partial, s);
        s->free = NULL;
        s->bump = p->first;
        slab_push(&p->empty, s);
        p->n_empty++;
        p->used--;
    } else if (was_full) {
        slab_push(&p->partial, s);
    }
}

void cch__slab_trim(cch__slab_pool *p, bool all)
{
    uint32_t keep = all ? 0 : p->peak - p->used;
    while (p->n_empty > keep) {
        cch__slab *s = p->empty;
        slab_unlink(&p->empty, s);
        p->n_empty--;
        munmap(s, p->slab_bytes);
    }
    p->peak = p->used;
}

void cch__slab_pool_free(cch__slab_pool *p)
{
    cch__slab_trim(p, true);
}

size_t cch__slab_count(const cch__slab_pool *p)
{
    return (size_t)p->used + p->n_empty;
}
