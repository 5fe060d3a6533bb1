/* tutorial.c - the chat consumer of docs/tutorial.md, the C counterpart of the
 * Django Channels tutorial's ChatConsumer. The tutorial shows it growing step by
 * step; this is the finished file (tests/test_tutorial.c tests it, tutorial_main.c
 * serves it). */
#include "tutorial.h"

#include <stdio.h>

struct room {
    char group[CCH_NAME_BUF]; /* "chat_<room>" */
};

static int chat_connect(cch_conn *c) {
    struct room *r = cch_state(c);
    int n = snprintf(r->group, sizeof r->group, "chat_%s", cch_param(c, "room"));
    if (n < 0 || (size_t)n >= sizeof r->group) return cch_reject(c, 400);
    if (cch_group_add(c, r->group) < 0) return cch_reject(c, 400); /* not a group name */
    return cch_accept(c, NULL);
}

static void chat_receive(cch_conn *c, const char *text, size_t len, bool binary) {
    struct room *r = cch_state(c);
    static const char not_json[] = "{\"error\":\"send a JSON object\"}";
    cch_msg *m = binary ? NULL : cch_msg_new("chat_message", text, len);
    if (!m) {
        cch_send_text(c, not_json, sizeof not_json - 1);
        return;
    }
    cch_group_send(c, r->group, m); /* every member, the sender included */
    cch_msg_unref(m);
}

static void chat_message(cch_conn *c, const cch_msg *m) {
    cch_send_body(c, m); /* the body is framed once and shared by all members */
}

const cch_consumer_class tutorial_chat = {
    .state_size = sizeof(struct room),
    .connect = chat_connect,
    .receive = chat_receive,
    .handlers = (const cch_handler[]){{"chat_message", chat_message}, {NULL, NULL}},
};
