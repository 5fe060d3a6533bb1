/* examples/echo_consumer.h - a consumer that sends every message back as it came.
 *
 * Mount it on a route (cch_app_route(app, "/ws/echo/", &echo_consumer, NULL)): it
 * accepts every connection (choosing no subprotocol) and returns each text message
 * as text and each binary message as binary, byte for byte. It is the endpoint that
 * WebSocket conformance suites (Autobahn's fuzzingclient) test against. */
#ifndef CCH_EXAMPLE_ECHO_CONSUMER_H
#define CCH_EXAMPLE_ECHO_CONSUMER_H

#include <cchannels/consumer.h>

extern const cch_consumer_class echo_consumer;

#endif
