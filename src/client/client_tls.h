/* client_tls.h: TLS as squall speaks it, shared by the client library (client_io.c) and the
 * members' relays to each other (src/server/kv_tls.c). */
#ifndef SQ_CLIENT_TLS_H
#define SQ_CLIENT_TLS_H

struct ssl_method_st;
struct ssl_ctx_st;
struct ssl_st;

/* A context for TLS 1.3 only, writes that may take part of a buffer and
 * resume with it moved, no session tickets, a close without close_notify taken as a close
 * (NULL when out of memory); and a session told that its peer's certificate must name `host`
 * (an IP address, or a DNS name that also goes as SNI): 1, or 0 when OpenSSL refused. */
struct ssl_ctx_st *sq__tls_ctx_new(const struct ssl_method_st *method);
int sq__tls_expect_peer(struct ssl_st *ssl, const char *host);

#endif
