/* error.c: sq_strerror and sq_err_name, generated from the one error list in squall.h, and
 * sq_err_transient. */
#include "squall.h"

const char *sq_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define SQ__ERR_TEXT(name, value, text)                                                            \
    case value:                                                                                    \
        return text;
        SQ_ERRNO_MAP(SQ__ERR_TEXT)
#undef SQ__ERR_TEXT
    }
    return "unknown error";
}

const char *sq_err_name(int err)
{
    switch (err) {
    case 0:
        return "SQ_OK";
#define SQ__ERR_NAME(name, value, text)                                                            \
    case value:                                                                                    \
        return "SQ_" #name;
        SQ_ERRNO_MAP(SQ__ERR_NAME)
#undef SQ__ERR_NAME
    }
    return "SQ_UNKNOWN";
}

int sq_err_transient(int err)
{
    switch (err) {
    case SQ_ESTATE:
    case SQ_ENOQUORUM:
    case SQ_EPEER:
    case SQ_ETIMEDOUT:
    case SQ_EAGAIN:
    case SQ_ECLOSED:
    case SQ_EPARTITIONED:
    case SQ_EREMOVED:
    case SQ_EVIEWCHANGE:
    case SQ_ELEFT:
        return 1;
    default:
        return 0;
    }
}
