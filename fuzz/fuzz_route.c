/* fuzz/fuzz_route.c - libFuzzer target: route patterns, compiled and matched.
 *
 * Input: "PATTERN\nPATH" (no newline: the path is empty). The pattern is compiled
 * (lib/core/route.c); a refusal must be CCH_EPATTERN with a reason, and the app's
 * cch_app_route must say the same. A compiled pattern is matched against the path,
 * and a match must explain the path exactly: literals and parameter spans, in
 * pattern order, cover it end to end, every span is non-empty and fits its
 * converter, and no str/path value decodes to a NUL. Then a connection through the
 * testing communicator must reach the consumer exactly when the pattern matched,
 * with each cch_param() equal to its percent-decoded span. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cchannels/cchannels.h>

#include "route.h"

#define CHECK(cond, what)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_route: %s\n", what);                                \
            __builtin_trap();                                                         \
        }                                                                             \
    } while (0)

static bool all_of(const char *p, size_t n, const char *set_name)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bool ok;
        if (strcmp(set_name, "int") == 0)
            ok = ch >= '0' && ch <= '9';
        else if (strcmp(set_name, "slug") == 0)
            ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                 (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == '-';
        else /* str */
            ok = ch != '/';
        if (!ok)
            return false;
    }
    return true;
}

/* What the consumer saw, for the communicator check. */
static const cch__route *cur_route;
static char seen[CCH__ROUTE_MAX_PARAMS][2049];
static size_t seen_len[CCH__ROUTE_MAX_PARAMS];
static bool connected;

static int probe_connect(cch_conn *c)
{
    connected = true;
    for (size_t i = 0; i < cur_route->nparams; i++) {
        const char *v = cch_param(c, cur_route->names[i]);
        CHECK(v, "cch_param is NULL for a parameter of the route");
        size_t n = strlen(v);
        CHECK(n < sizeof seen[i], "parameter longer than the path");
        memcpy(seen[i], v, n);
        seen_len[i] = n;
    }
    CHECK(cch_param(c, "no such parameter name") == NULL, "cch_param of an unknown name");
    return cch_accept(c, NULL);
}

static const cch_consumer_class probe = {.connect = probe_connect};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2048)
        return 0;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - data) : size;
    char pattern[2049], path[2049];
    memcpy(pattern, data, plen);
    pattern[plen] = '\0';
    size_t rest = nl ? size - plen - 1 : 0;
    memcpy(path, nl ? (const char *)nl + 1 : "", rest);
    path[rest] = '\0';
    /* The request path is a C string without its query. */
    size_t path_len = strcspn(path, "?");
    path[path_len] = '\0';

    cch__route *r = NULL;
    char why[128];
    memset(why, 'x', sizeof why);
    int rc = cch__route_compile(pattern, &r, why, sizeof why);
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    CHECK(app, "cch_app_new");
    int app_rc = cch_app_route(app, pattern, &probe, NULL);
    CHECK(app_rc == rc, "cch_app_route and cch__route_compile disagree");
    if (rc < 0) {
        CHECK(rc == CCH_EPATTERN && !r, "compile failed without CCH_EPATTERN");
        CHECK(memchr(why, '\0', sizeof why) && why[0], "no reason for a refused pattern");
        cch_app_free(app);
        return 0;
    }
    CHECK(r && r->nparams <= CCH__ROUTE_MAX_PARAMS && pattern[0] == '/', "compiled route");
    CHECK(strcmp(r->pattern, pattern) == 0, "the route lost its source text");

    cch__route_span spans[CCH__ROUTE_MAX_PARAMS];
    bool match = cch__route_match(r, path, path_len, spans);
    /* Matching twice gives the same answer. */
    cch__route_span again[CCH__ROUTE_MAX_PARAMS];
    CHECK(cch__route_match(r, path, path_len, again) == match, "match is not repeatable");
    char decoded[CCH__ROUTE_MAX_PARAMS][2049];
    size_t dec_len[CCH__ROUTE_MAX_PARAMS];
    if (match) {
        size_t pos = 0;
        for (size_t i = 0; i < r->nparts; i++) {
            const cch__route_part *pt = &r->parts[i];
            if (pt->kind == CCH__PART_LITERAL) {
                CHECK(pos + pt->len <= path_len && memcmp(path + pos, pt->text, pt->len) == 0,
                      "a literal does not line up with the path");
                pos += pt->len;
                continue;
            }
            CHECK(pt->param < r->nparams, "parameter index");
            const cch__route_span *sp = &spans[pt->param];
            CHECK(sp->off == pos && sp->len > 0 && sp->off + sp->len <= path_len,
                  "a parameter span does not line up with the path");
            const char *v = path + sp->off;
            if (pt->kind == CCH__PART_INT)
                CHECK(all_of(v, sp->len, "int"), "int parameter with a non-digit");
            else if (pt->kind == CCH__PART_SLUG)
                CHECK(all_of(v, sp->len, "slug"), "slug parameter with a non-slug byte");
            else if (pt->kind == CCH__PART_STR)
                CHECK(all_of(v, sp->len, "str"), "str parameter with a '/'");
            else
                CHECK(pt->kind == CCH__PART_PATH, "unknown part kind");
            size_t n = cch__pct_decode(decoded[pt->param], v, sp->len, false);
            CHECK(n <= sp->len, "decoding grew the value");
            if (pt->kind == CCH__PART_STR || pt->kind == CCH__PART_PATH)
                CHECK(!memchr(decoded[pt->param], '\0', n), "a value that decodes to a NUL");
            dec_len[pt->param] = n;
            pos += sp->len;
        }
        CHECK(pos == path_len, "the match does not cover the whole path");
    }

    /* Through an app: the consumer runs exactly on a match, and sees decoded values. */
    cur_route = r;
    connected = false;
    cch_communicator *t = cch_communicator_new(app, path, NULL, 0);
    CHECK(t, "cch_communicator_new");
    int crc = cch_communicator_connect(t);
    if (match) {
        CHECK(crc == 0 && connected, "a matching path did not reach the consumer");
        for (size_t i = 0; i < r->nparams; i++)
            CHECK(seen_len[i] == dec_len[i] && memcmp(seen[i], decoded[i], dec_len[i]) == 0,
                  "cch_param differs from the decoded span");
    } else {
        CHECK(crc == CCH_EREJECTED && !connected && cch_communicator_status(t) == 404,
              "a path that does not match was not refused with 404");
    }
    cch_communicator_free(t);
    CHECK(cch_app_free(app) == 0, "cch_app_free");
    cch__route_free(r);
    return 0;
}
