/* cchannels/error.h - error codes and log levels shared by every part of cchannels.
 *
 * Every function that can fail returns 0 (or a count) on success and a negative
 * CCH_E* code on failure, in the style of libuv. cch_strerror() and cch_err_name()
 * turn a code into text. The library never prints: it reports through a log
 * callback that the host sets (see cch_log_fn). */
#ifndef CCHANNELS_ERROR_H
#define CCHANNELS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* Error codes. All are negative; 0 means success. */
#define CCH_ERRNO_MAP(X)                                                        \
    X(EINVAL,       -1,  "invalid argument")                                    \
    X(ENOMEM,       -2,  "out of memory")                                       \
    X(ENAME,        -3,  "invalid channel, group or type name")                 \
    X(ECHANFULL,    -4,  "channel is full")                                     \
    X(EAGAIN,       -5,  "nothing to receive yet")                              \
    X(ENOTFOUND,    -6,  "not found")                                           \
    X(ECLOSED,      -7,  "connection is closed or closing")                     \
    X(ESTATE,       -8,  "operation not allowed in the current state")          \
    X(EPATTERN,     -9,  "malformed route pattern")                             \
    X(EBODY,        -10, "message body is not a JSON object")                   \
    X(ETOOBIG,      -11, "value does not fit the buffer or limit")              \
    X(EUNKNOWNTYPE, -12, "no handler for the message type")                     \
    X(EREJECTED,    -13, "connection was rejected")                             \
    X(ETRANSPORT,   -14, "transport failed")                                    \
    X(ENOTSUP,      -15, "operation not supported")                             \
    X(EEXIST,       -16, "already exists")                                      \
    X(ELIMIT,       -17, "a configured limit was reached")                      \
    X(EIO,          -18, "input/output error")

enum cch_error {
#define CCH_ERR_ENUM_(name, value, text) CCH_##name = (value),
    CCH_ERRNO_MAP(CCH_ERR_ENUM_)
#undef CCH_ERR_ENUM_
};

/* A description of `err` ("channel is full"). Never NULL: unknown codes give
 * "unknown error". The string is static; do not free it. */
const char *cch_strerror(int err);

/* The symbolic name of `err` ("CCH_ECHANFULL"), or "CCH_UNKNOWN". Static string. */
const char *cch_err_name(int err);

/* Log levels, most severe first. */
enum cch_log_level {
    CCH_LOG_ERROR = 0,
    CCH_LOG_WARN = 1,
    CCH_LOG_INFO = 2,
    CCH_LOG_DEBUG = 3
};

/* A log sink. `msg` is a NUL-terminated line without a trailing newline, valid only
 * during the call. May be called from the thread that triggered the event (for a
 * layer shared between threads, any of them): a sink must be thread-safe if the
 * layer is shared. */
typedef void (*cch_log_fn)(void *ud, int level, const char *msg);

/* "error", "warn", "info", "debug"; "?" for other values. Static string. */
const char *cch_log_level_name(int level);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
