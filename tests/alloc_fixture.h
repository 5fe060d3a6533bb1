/* tests/alloc_fixture.h - a failing allocator for the library (cch_replace_allocator),
 * shared by the unit tests (and by conn_fixture.h's counting allocator):
 *   fail_after(n)      n more allocations succeed, then every one fails (-1: none
 *                      fails, the allocations are only counted in alloc_calls);
 *   fail_from_size(n)  every allocation of n bytes or more fails;
 *   fail_size_of(n)    every allocation of exactly n bytes fails;
 *   alloc_restore()    back to libc (call only when every block is freed, or was
 *                      allocated by libc anyway: the failing allocator frees with free).
 * alloc_budget may be set directly while the failing allocator is installed (the
 * budget is atomic: a library thread may allocate while a test counts down).
 * Header-only (static functions); include it after cmocka.h. */
#ifndef CCH_TEST_ALLOC_FIXTURE_H
#define CCH_TEST_ALLOC_FIXTURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "cchannels/alloc.h"

static atomic_long alloc_budget = -1; /* allocations that still succeed; -1: all */
static atomic_long alloc_calls;       /* allocations asked for since fail_after() */
static size_t alloc_fail_min;         /* non-zero: fail every allocation this big or bigger */
static size_t alloc_fail_exact;       /* non-zero: fail every allocation of this size */

/* Whether an allocation of n bytes fails (and counts it against the budget). */
static inline bool alloc_should_fail(size_t n) {
    atomic_fetch_add(&alloc_calls, 1);
    if (alloc_fail_min) return n >= alloc_fail_min;
    if (alloc_fail_exact) return n == alloc_fail_exact;
    long v = atomic_load(&alloc_budget);
    while (v > 0 && !atomic_compare_exchange_weak(&alloc_budget, &v, v - 1)) {}
    return v == 0;
}

static inline void *fa_malloc(size_t n) { return alloc_should_fail(n) ? NULL : malloc(n); }
static inline void *fa_calloc(size_t c, size_t n) {
    return alloc_should_fail(c * n) ? NULL : calloc(c, n);
}
static inline void *fa_realloc(void *p, size_t n) {
    return alloc_should_fail(n) ? NULL : realloc(p, n);
}

/* Every rule off, the count at zero (the allocator stays as it is). */
static inline void alloc_rules_reset(void) {
    atomic_store(&alloc_budget, -1);
    atomic_store(&alloc_calls, 0);
    alloc_fail_min = 0;
    alloc_fail_exact = 0;
}

static inline void fail_after(long n) {
    alloc_rules_reset();
    atomic_store(&alloc_budget, n);
    assert_int_equal(cch_replace_allocator(fa_malloc, fa_realloc, fa_calloc, free), 0);
}

static inline void fail_from_size(size_t n) {
    alloc_rules_reset();
    alloc_fail_min = n;
    assert_int_equal(cch_replace_allocator(fa_malloc, fa_realloc, fa_calloc, free), 0);
}

static inline void fail_size_of(size_t n) {
    alloc_rules_reset();
    alloc_fail_exact = n;
    assert_int_equal(cch_replace_allocator(fa_malloc, fa_realloc, fa_calloc, free), 0);
}

static inline void alloc_restore(void) {
    alloc_rules_reset();
    assert_int_equal(cch_replace_allocator(malloc, realloc, calloc, free), 0);
}

#endif
