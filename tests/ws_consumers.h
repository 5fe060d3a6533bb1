/* tests/ws_consumers.h - small consumers that the adapter's test server
 * (tests/ws_echo_server.c) and the WebSocket fuzz targets (fuzz/ws_harness.c) both
 * mount:
 *   reject_consumer  rejects every connection with 403;
 *   proto_consumer   accepts the first offered of "chat", "superchat" (else none),
 *                    and answers every message with the chosen subprotocol as text
 *                    ("" when none). */
#ifndef CCH_TEST_WS_CONSUMERS_H
#define CCH_TEST_WS_CONSUMERS_H

#include <cchannels/consumer.h>

extern const cch_consumer_class reject_consumer;
extern const cch_consumer_class proto_consumer;

#endif
