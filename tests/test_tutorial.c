/* test_tutorial.c - tests the chat consumer of docs/tutorial.md
 * (examples/tutorial/tutorial.c) with the communicator, exactly as part 3 of the
 * tutorial shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tutorial.h"

static cch_app *make_app(void) {
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    assert_non_null(app);
    assert_int_equal(cch_app_route(app, "/ws/chat/{room}/", &tutorial_chat, NULL), 0);
    return app;
}

/* Every member of a room gets what one member sends, the sender included. */
static void test_message_reaches_every_member(void **state) {
    (void)state;
    cch_app *app = make_app();
    cch_communicator *alice = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    cch_communicator *bob = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    assert_int_equal(cch_communicator_connect(alice), 0);
    assert_int_equal(cch_communicator_connect(bob), 0);

    const char *hello = "{\"message\":\"hello\"}";
    assert_int_equal(cch_communicator_send_text(alice, hello, strlen(hello)), 0);

    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(bob, &data, &len, &binary), 0);
    assert_string_equal(data, hello);
    assert_false(binary);
    assert_int_equal(cch_communicator_receive(alice, &data, &len, &binary), 0);
    assert_string_equal(data, hello);
    assert_int_equal(cch_communicator_receive(bob, &data, &len, &binary), CCH_EAGAIN);

    cch_communicator_free(alice);
    cch_communicator_free(bob);
    assert_int_equal(cch_app_free(app), 0);
}

/* Rooms are separate groups. */
static void test_rooms_are_separate(void **state) {
    (void)state;
    cch_app *app = make_app();
    cch_communicator *a = cch_communicator_new(app, "/ws/chat/one/", NULL, 0);
    cch_communicator *b = cch_communicator_new(app, "/ws/chat/two/", NULL, 0);
    assert_int_equal(cch_communicator_connect(a), 0);
    assert_int_equal(cch_communicator_connect(b), 0);
    assert_int_equal(cch_communicator_send_text(a, "{\"message\":\"x\"}", 15), 0);
    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(b, &data, &len, &binary), CCH_EAGAIN);
    assert_int_equal(cch_communicator_receive(a, &data, &len, &binary), 0);
    cch_communicator_free(a);
    cch_communicator_free(b);
    assert_int_equal(cch_app_free(app), 0);
}

/* Text that is not a JSON object is answered with an error and not broadcast. */
static void test_invalid_json_is_refused(void **state) {
    (void)state;
    cch_app *app = make_app();
    cch_communicator *a = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    cch_communicator *b = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    assert_int_equal(cch_communicator_connect(a), 0);
    assert_int_equal(cch_communicator_connect(b), 0);
    assert_int_equal(cch_communicator_send_text(a, "not json", 8), 0);
    const char *data;
    size_t len;
    bool binary;
    assert_int_equal(cch_communicator_receive(a, &data, &len, &binary), 0);
    assert_string_equal(data, "{\"error\":\"send a JSON object\"}");
    assert_int_equal(cch_communicator_receive(b, &data, &len, &binary), CCH_EAGAIN);
    cch_communicator_free(a);
    cch_communicator_free(b);
    assert_int_equal(cch_app_free(app), 0);
}

/* A room name that cannot be a group name is rejected with 400; no route, 404. */
static void test_bad_room_and_unknown_path(void **state) {
    (void)state;
    cch_app *app = make_app();
    cch_communicator *bad = cch_communicator_new(app, "/ws/chat/caf%C3%A9/", NULL, 0);
    assert_int_equal(cch_communicator_connect(bad), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(bad), 400);
    cch_communicator *none = cch_communicator_new(app, "/ws/nowhere/", NULL, 0);
    assert_int_equal(cch_communicator_connect(none), CCH_EREJECTED);
    assert_int_equal(cch_communicator_status(none), 404);
    cch_communicator_free(bad);
    cch_communicator_free(none);
    assert_int_equal(cch_app_free(app), 0);
}

/* Leaving the room: a disconnected member no longer receives, and the group
 * forgets it. */
static void test_disconnect_leaves_the_room(void **state) {
    (void)state;
    cch_app *app = make_app();
    cch_communicator *a = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    cch_communicator *b = cch_communicator_new(app, "/ws/chat/lobby/", NULL, 0);
    assert_int_equal(cch_communicator_connect(a), 0);
    assert_int_equal(cch_communicator_connect(b), 0);
    assert_int_equal(cch_communicator_disconnect(b, 1000), 0);
    cch_group_send_result res;
    cch_msg *m = cch_msg_new("chat_message", "{\"message\":\"bye\"}", 17);
    assert_non_null(m);
    assert_int_equal(cch_layer_group_send(cch_app_layer(app), "chat_lobby", m, NULL, &res), 0);
    assert_int_equal(res.delivered, 1);
    cch_msg_unref(m);
    cch_communicator_free(a);
    cch_communicator_free(b);
    assert_int_equal(cch_app_free(app), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_reaches_every_member),
        cmocka_unit_test(test_rooms_are_separate),
        cmocka_unit_test(test_invalid_json_is_refused),
        cmocka_unit_test(test_bad_room_and_unknown_path),
        cmocka_unit_test(test_disconnect_leaves_the_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
