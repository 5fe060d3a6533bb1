/* fuzz/fuzz_redis_msgpack.c - libFuzzer target: decoding messages from Redis.
 *
 * The whole input is what a queue member or a PUBLISH payload holds after its random
 * prefix: channels_redis's msgpack map {"type": ..., fields..., "__asgi_channel__":
 * ...}. rl_decode (lib/redis/redis_codec.c) turns it into our {type, JSON body}.
 * Checked: a refusal is CCH_EBODY or CCH_ENAME with a reason and no message; an
 * accepted message has a valid type and a body that jansson parses (cch_msg_json);
 * "__asgi_channel__" is a string or an array of strings; and encoding the message
 * back (rl_body_get + rl_encode, with its channel) and decoding that again gives the
 * same type, an equal body and the same channel. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <cchannels/cchannels.h>
#include <cchannels/json.h>

#include "redis_internal.h"

#define CHECK(cond, what)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_redis_msgpack: %s\n", what);                        \
            __builtin_trap();                                                         \
        }                                                                             \
    } while (0)

static bool same_str(const msgpack_object *a, const msgpack_object *b)
{
    return a->type == MSGPACK_OBJECT_STR && b->type == MSGPACK_OBJECT_STR &&
           a->via.str.size == b->via.str.size &&
           memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
}

static bool same_chan(const msgpack_object *a, const msgpack_object *b)
{
    if (!a || !b)
        return a == b;
    if (a->type == MSGPACK_OBJECT_STR)
        return same_str(a, b);
    if (b->type != MSGPACK_OBJECT_ARRAY || a->via.array.size != b->via.array.size)
        return false;
    for (uint32_t i = 0; i < a->via.array.size; i++)
        if (!same_str(&a->via.array.ptr[i], &b->via.array.ptr[i]))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_incoming in;
    char err[160];
    memset(err, 'x', sizeof err);
    int rc = rl_decode(&in, (const char *)data, size, err, sizeof err);
    if (rc < 0) {
        CHECK(rc == CCH_EBODY || rc == CCH_ENAME, "rl_decode failed with an odd code");
        CHECK(!in.msg, "a refused message was made");
        CHECK(memchr(err, '\0', sizeof err) && err[0], "a refusal without a reason");
        rl_incoming_done(&in);
        return 0;
    }
    CHECK(in.msg, "rl_decode accepted without a message");
    const char *type = cch_msg_type(in.msg);
    CHECK(type && type[0] && strlen(type) <= CCH_MSG_TYPE_MAX, "bad type");
    const json_t *tree = cch_msg_json(in.msg);
    CHECK(tree && json_is_object(tree), "the decoded body does not parse");
    CHECK(!json_object_get(tree, "type") && !json_object_get(tree, RL_ASGI_CHANNEL),
          "a reserved key in the body");
    const msgpack_object *chan = in.chan;
    if (chan) {
        bool ok = chan->type == MSGPACK_OBJECT_STR || chan->type == MSGPACK_OBJECT_ARRAY;
        for (uint32_t i = 0; ok && chan->type == MSGPACK_OBJECT_ARRAY && i < chan->via.array.size;
             i++)
            ok = chan->via.array.ptr[i].type == MSGPACK_OBJECT_STR;
        CHECK(ok, "__asgi_channel__ is not a string or a list of strings");
    }

    /* Encode it back, as a send or a group_send would, and decode that. */
    const rl_body *body;
    CHECK(rl_body_get(in.msg, &body) == 0, "rl_body_get refuses a decoded message");
    const char *names[64];
    size_t lens[64], n = 0;
    bool as_list = chan && chan->type == MSGPACK_OBJECT_ARRAY;
    if (chan && !as_list) {
        names[0] = chan->via.str.ptr;
        lens[0] = chan->via.str.size;
        n = 1;
    } else if (as_list) {
        if (chan->via.array.size > 64) {
            rl_incoming_done(&in);
            return 0;
        }
        for (; n < chan->via.array.size; n++) {
            names[n] = chan->via.array.ptr[n].via.str.ptr;
            lens[n] = chan->via.array.ptr[n].via.str.size;
        }
    }
    rl_buf b = {0};
    CHECK(rl_encode(&b, 0, type, body, names, lens, n, as_list), "rl_encode");
    rl_incoming again;
    rc = rl_decode(&again, b.p, b.len, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "re-decoding failed: %s\n", err);
    CHECK(rc == 0, "our own encoding does not decode");
    CHECK(strcmp(cch_msg_type(again.msg), type) == 0, "the type changed");
    const json_t *tree2 = cch_msg_json(again.msg);
    CHECK(tree2 && json_equal((json_t *)tree, (json_t *)tree2), "the body changed");
    CHECK(same_chan(chan, again.chan), "the channel changed");
    rl_incoming_done(&again);
    rl_buf_free(&b);
    rl_incoming_done(&in);
    return 0;
}
