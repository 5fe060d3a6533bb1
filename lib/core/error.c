/* lib/core/error.c - names and descriptions of error codes and log levels. */
#include "cchannels/cchannels.h"
#include "cchannels/error.h"

const char *cch_strerror(int err) {
    switch (err) {
#define CCH_ERR_TEXT_(name, value, text) \
    case CCH_##name:                     \
        return text;
        CCH_ERRNO_MAP(CCH_ERR_TEXT_)
#undef CCH_ERR_TEXT_
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

const char *cch_err_name(int err) {
    switch (err) {
#define CCH_ERR_NAME_(name, value, text) \
    case CCH_##name:                     \
        return "CCH_" #name;
        CCH_ERRNO_MAP(CCH_ERR_NAME_)
#undef CCH_ERR_NAME_
    case 0:
        return "CCH_OK";
    default:
        return "CCH_UNKNOWN";
    }
}

const char *cch_log_level_name(int level) {
    switch (level) {
    case CCH_LOG_ERROR: return "error";
    case CCH_LOG_WARN: return "warn";
    case CCH_LOG_INFO: return "info";
    case CCH_LOG_DEBUG: return "debug";
    default: return "?";
    }
}

const char *cch_version(void) { return CCH_VERSION_STRING; }
