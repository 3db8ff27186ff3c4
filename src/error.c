/* error.c: sq_strerror and sq_err_name, generated from the one error list in squall.h. */
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
