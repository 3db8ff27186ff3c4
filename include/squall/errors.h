/* squall/errors.h: squall's error codes, shared by the member API (squall.h) and the client
 * library (squall/client.h), and SQ_API, which marks what the shared client library exports. */
#ifndef SQUALL_ERRORS_H
#define SQUALL_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

/* The symbols of libsquall-client.so are hidden unless marked so (it is built with
 * -fvisibility=hidden): only the API in these headers is its ABI. */
#if defined(__GNUC__)
#define SQ_API __attribute__((visibility("default")))
#else
#define SQ_API
#endif

/* Every error is a negative constant from this one list; sq_strerror() and sq_err_name() are
 * generated from it too. 0 means success. */
#define SQ_ERRNO_MAP(X)                                                                            \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(EAGAIN, -3, "resource temporarily unavailable (window full)")                                \
    X(EMSGSIZE, -4, "message larger than the subgroup's max_payload")                              \
    X(ECONFIG, -5, "bad configuration")                                                            \
    X(EIO, -6, "input/output error")                                                               \
    X(ETRANSPORT, -7, "transport (libfabric) error")                                               \
    X(ECLOSED, -8, "member is closed or has failed")                                               \
    X(EBUSY, -9, "operation already in progress")                                                  \
    X(ENOTSUP, -10, "operation not supported")                                                     \
    X(ETIMEDOUT, -11, "timed out")                                                                 \
    X(EPEER, -12, "a peer failed")                                                                 \
    X(ESTATE, -13, "call not allowed in this state")                                               \
    X(EPARTITIONED, -14, "this member is on the minority side of a partition")                     \
    X(EREMOVED, -15, "this member was removed from the group")                                     \
    X(EVIEWCHANGE, -16, "the view changed: reserve again")                                         \
    X(ELEFT, -17, "this member left the group")                                                    \
    X(ENOSPC, -18, "no space left on the device")                                                  \
    X(ENOTFOUND, -19, "no such entry")                                                             \
    X(ECORRUPT, -20, "damaged data on disk")                                                       \
    X(ECONFLICT, -21, "the key is not at the expected version")                                    \
    X(EPROTO, -22, "malformed or unknown protocol frame")                                          \
    X(ENOPOOL, -23, "no object pool holds this key")                                               \
    X(EEXIST, -24, "already exists")                                                               \
    X(ENOQUORUM, -25,                                                                              \
      "this member is not in a working group now (removed, or on the minority "                    \
      "side): another member may answer")                                                          \
    X(EPERM, -26, "permission denied")

enum {
#define SQ__ERR_ENUM(name, value, text) SQ_##name = (value),
    SQ_ERRNO_MAP(SQ__ERR_ENUM)
#undef SQ__ERR_ENUM
};

/* A short English description of an error code ("unknown error" for anything else). */
SQ_API const char *sq_strerror(int err);
/* The symbolic name of an error code, e.g. "SQ_EAGAIN". */
SQ_API const char *sq_err_name(int err);

/* Whether an error says "not now" rather than "no": the group or this member cannot serve at
 * the moment (no quorum, a member failed, a view is changing, timed out, busy), so the same
 * request may succeed later or at another member (HTTP answers these 503). */
SQ_API int sq_err_transient(int err);

#ifdef __cplusplus
}
#endif

#endif
