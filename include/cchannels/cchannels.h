/* cchannels/cchannels.h - everything in the core, in one include.
 *
 * The Django Channels model in C: consumers, routing, middleware and a channel layer
 * with groups and typed messages. The optional parts have their own headers:
 * cchannels/json.h (jansson helpers), cchannels/ws.h (WebSocket server),
 * cchannels/redis_layer.h (Redis layer). */
#ifndef CCHANNELS_H
#define CCHANNELS_H

#define CCH_VERSION_MAJOR 0
#define CCH_VERSION_MINOR 1
#define CCH_VERSION_PATCH 0
#define CCH_VERSION_STRING "0.1.0"

#include "alloc.h"
#include "app.h"
#include "consumer.h"
#include "error.h"
#include "layer.h"
#include "memory_layer.h"
#include "middleware.h"
#include "msg.h"
#include "scope.h"
#include "testing.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The library's version string, e.g. "0.1.0". */
const char *cch_version(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
