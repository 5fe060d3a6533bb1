/* tutorial_main.c - serves the tutorial's chat consumer (docs/tutorial.md, part 2)
 * on ws://127.0.0.1:8001/ws/chat/ROOM/ until Ctrl-C. */
#include <cchannels/ws.h>

#include "tutorial.h"

int main(void) {
    cch_app *app = cch_app_new(cch_memory_layer_new(NULL));
    if (!app) return 1;
    if (cch_app_route(app, "/ws/chat/{room}/", &tutorial_chat, NULL) < 0) return 1;
    int rc = cch_ws_run(app, &(cch_ws_options){.host = "127.0.0.1", .port = 8001});
    cch_app_free(app);
    return rc == 0 ? 0 : 1;
}
