/* lib/core/msg.c - the immutable, reference-counted message (cchannels/msg.h).
 *
 * One allocation per message: the struct, the type and the body (both
 * NUL-terminated) live in one block. The reference count is atomic. Attachments are
 * a lock-free singly linked list: nodes are only ever pushed (CAS on the head) and
 * are freed with the message, so readers can walk it without locks. */
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "cchannels/error.h"
#include "cchannels/msg.h"
#include "json_scan.h"
#include "msg_internal.h"

typedef struct attach_node {
    const void *key;
    void *data;
    void (*free_data)(void *);
    struct attach_node *next;
} attach_node;

struct cch_msg {
    atomic_size_t refs;
    _Atomic(attach_node *) attach;
    cch_msg *free_next;      /* cch__msg_unref_deferred's list; used only at refs 0 */
    size_t body_len;
    size_t type_len;
    char data[];             /* type, NUL, body, NUL */
};

static bool valid_type(const char *type, size_t *len) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)type; *p; p++, n++) {
        if (n >= CCH_MSG_TYPE_MAX || *p < 0x21 || *p > 0x7e) return false;
    }
    *len = n;
    return n > 0;
}

/* Allocates a message holding `type` and `len` bytes of body, unchecked. */
static int msg_alloc(cch_msg **out, const char *type, size_t type_len, const char *body,
                     size_t len) {
    size_t fixed = sizeof(cch_msg) + type_len + 2;
    if (len > SIZE_MAX - fixed) return CCH_ENOMEM;
    cch_msg *m = cch__malloc(fixed + len);
    if (!m) return CCH_ENOMEM;
    atomic_init(&m->refs, 1);
    atomic_init(&m->attach, NULL);
    m->free_next = NULL;
    m->type_len = type_len;
    m->body_len = len;
    memcpy(m->data, type, type_len + 1);
    if (len) memcpy(m->data + type_len + 1, body, len);
    m->data[type_len + 1 + len] = '\0';
    *out = m;
    return 0;
}

int cch_msg_create(cch_msg **out, const char *type, const char *body, size_t len) {
    if (!out) return CCH_EINVAL;
    *out = NULL;
    if (!type) return CCH_ENAME;
    size_t type_len;
    if (!valid_type(type, &type_len)) return CCH_ENAME;
    if (!body) {
        if (len) return CCH_EINVAL;
        body = "{}";
        len = 2;
    } else if (cch__json_check_object(body, len) != 0) {
        return CCH_EBODY;
    }
    return msg_alloc(out, type, type_len, body, len);
}

int cch__msg_create_raw(cch_msg **out, const char *type, const char *body, size_t len) {
    *out = NULL;
    size_t type_len;
    if (!valid_type(type, &type_len)) return CCH_ENAME;
    return msg_alloc(out, type, type_len, body, len);
}

cch_msg *cch_msg_new(const char *type, const char *body, size_t len) {
    cch_msg *m;
    return cch_msg_create(&m, type, body, len) == 0 ? m : NULL;
}

cch_msg *cch_msg_ref(const cch_msg *m) {
    cch_msg *mm = (cch_msg *)m;
    if (mm) atomic_fetch_add_explicit(&mm->refs, 1, memory_order_relaxed);
    return mm;
}

void cch__msg_ref_n(const cch_msg *m, size_t n) {
    if (m && n) atomic_fetch_add_explicit(&((cch_msg *)m)->refs, n, memory_order_relaxed);
}

size_t cch__msg_refs(const cch_msg *m) {
    return m ? atomic_load_explicit(&((cch_msg *)m)->refs, memory_order_relaxed) : 0;
}

static void msg_free(cch_msg *m) {
    attach_node *a = atomic_load_explicit(&m->attach, memory_order_acquire);
    while (a) {
        attach_node *next = a->next;
        if (a->free_data) a->free_data(a->data);
        cch__free(a);
        a = next;
    }
    cch__free(m);
}

/* Drops one reference; true when it was the last (the caller then frees). */
static bool drop_ref(cch_msg *m) {
    /* acq_rel rather than release + an acquire fence: the same code on x86 (a locked
     * xadd), and ThreadSanitizer understands it. */
    return atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1;
}

void cch_msg_unref(const cch_msg *m) {
    cch_msg *mm = (cch_msg *)m;
    if (mm && drop_ref(mm)) msg_free(mm);
}

void cch__msg_unref_n(const cch_msg *m, size_t n) {
    cch_msg *mm = (cch_msg *)m;
    if (mm && n && atomic_fetch_sub_explicit(&mm->refs, n, memory_order_acq_rel) == n)
        msg_free(mm);
}

void cch__msg_unref_deferred(const cch_msg *m, cch_msg **free_list) {
    cch_msg *mm = (cch_msg *)m;
    if (mm && drop_ref(mm)) {
        mm->free_next = *free_list;
        *free_list = mm;
    }
}

void cch__msg_free_list(cch_msg *list) {
    while (list) {
        cch_msg *next = list->free_next;
        msg_free(list);
        list = next;
    }
}

const char *cch_msg_type(const cch_msg *m) { return m ? m->data : ""; }

const char *cch_msg_body(const cch_msg *m) { return m ? m->data + m->type_len + 1 : ""; }

size_t cch_msg_body_len(const cch_msg *m) { return m ? m->body_len : 0; }

bool cch_msg_type_is(const cch_msg *m, const char *type) {
    if (!m || !type) return false;
    const char *a = m->data;
    for (;; a++, type++) {
        char x = *a == '.' ? '_' : *a;
        char y = *type == '.' ? '_' : *type;
        if (x != y) return false;
        if (!x) return true;
    }
}

int cch_msg_field_raw(const cch_msg *m, const char *name, const char **val, size_t *len) {
    if (!m || !name) return CCH_EINVAL;
    int rc = cch__json_find_field(cch_msg_body(m), m->body_len, name, strlen(name), val, len);
    return rc == CCH_EBODY ? CCH_ENOTFOUND : rc; /* bodies are valid; keep the contract */
}

int cch_json_field_raw(const char *json, size_t len, const char *name, const char **val,
                       size_t *val_len) {
    if (!json || !name || !val || !val_len) return CCH_EINVAL;
    return cch__json_find_field(json, len, name, strlen(name), val, val_len);
}

int cch_msg_field_string(const cch_msg *m, const char *name, char *buf, size_t cap) {
    if (!m || !name || (!buf && cap)) return CCH_EINVAL;
    const char *v;
    size_t vlen, n;
    int rc = cch_msg_field_raw(m, name, &v, &vlen);
    if (rc) return rc;
    if (v[0] != '"') return CCH_EBODY;
    rc = cch__json_decode_string(v, vlen, buf, cap, &n);
    if (rc) return rc;
    return n > INT_MAX ? CCH_ETOOBIG : (int)n;
}

int cch_msg_field_int(const cch_msg *m, const char *name, int64_t *out) {
    if (!m || !name || !out) return CCH_EINVAL;
    const char *v;
    size_t vlen;
    int rc = cch_msg_field_raw(m, name, &v, &vlen);
    if (rc) return rc;
    return cch__json_parse_int(v, vlen, out);
}

void *cch_msg_attachment(const cch_msg *m, const void *key) {
    if (!m) return NULL;
    for (attach_node *a = atomic_load_explicit(&((cch_msg *)m)->attach, memory_order_acquire);
         a; a = a->next)
        if (a->key == key) return a->data;
    return NULL;
}

void *cch_msg_attach(const cch_msg *m, const void *key, void *data, void (*free_data)(void *)) {
    if (!m) return NULL;
    cch_msg *mm = (cch_msg *)m;
    attach_node *head = atomic_load_explicit(&mm->attach, memory_order_acquire);
    for (attach_node *a = head; a; a = a->next)
        if (a->key == key) return a->data;
    attach_node *node = cch__malloc(sizeof *node);
    if (!node) return NULL;
    node->key = key;
    node->data = data;
    node->free_data = free_data;
    attach_node *seen = head; /* `seen` and the nodes after it were searched */
    for (;;) {
        node->next = head;
        if (atomic_compare_exchange_weak_explicit(&mm->attach, &head, node,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return data;
        /* Lost a race: `head` is the new list; look at the nodes pushed since. */
        for (attach_node *a = head; a && a != seen; a = a->next) {
            if (a->key == key) {
                cch__free(node);
                return a->data;
            }
        }
        seen = head;
    }
}
