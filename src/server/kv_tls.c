/* kv_tls.c: TLS on the client port (OpenSSL's libssl): the member's two contexts from [tls] (one
 * that accepts clients, one that relays to other members), and the nonblocking handshakes,
 * reads and writes of a connection that has TLS. Every call is made under svc_mu. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "client/client_tls.h"
#include "common.h"
#include "log.h"
#include "server/kv_internal.h"

/* The first error OpenSSL queued on this thread, as text (the queue is emptied). */
static void ssl_error(char *buf, size_t size, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, size, "%s", fallback);
    } else {
        ERR_error_string_n(e, buf, size);
    }
    ERR_clear_error();
}

static int load_identity(SSL_CTX *ctx, const struct sq_config *c, char *err, size_t err_size)
{
    char why[256];
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert_file) != 1) {
        ssl_error(why, sizeof(why), "unreadable");
        snprintf(err, err_size, "[tls] cert_file %s: %s", c->tls_cert_file, why);
        return SQ_ECONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_error(why, sizeof(why), "unreadable");
        snprintf(err, err_size, "[tls] key_file %s: %s (it must be the PEM key of cert_file %s)",
                 c->tls_key_file, why, c->tls_cert_file);
        return SQ_ECONFIG;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error(why, sizeof(why), "they do not match");
        snprintf(err, err_size, "[tls] key_file %s is not the key of cert_file %s: %s",
                 c->tls_key_file, c->tls_cert_file, why);
        return SQ_ECONFIG;
    }
    if (SSL_CTX_load_verify_locations(ctx, c->tls_ca_file, NULL) != 1) {
        ssl_error(why, sizeof(why), "unreadable");
        snprintf(err, err_size, "[tls] ca_file %s: %s", c->tls_ca_file, why);
        return SQ_ECONFIG;
    }
    return 0;
}

int sq__kvs_tls_init(struct sq_kv_server *s, char *err, size_t err_size)
{
    const struct sq_config *c = &s->cfg;
    if (c->tls_cert_file[0] == '\0') {
        return 0;
    }
    s->tls_accept = sq__tls_ctx_new(TLS_server_method());
    s->tls_relay = sq__tls_ctx_new(TLS_client_method());
    if (s->tls_accept == NULL || s->tls_relay == NULL) {
        snprintf(err, err_size, "cannot create a TLS context");
        return SQ_ENOMEM;
    }
    int rc = load_identity(s->tls_accept, c, err, err_size);
    if (rc == 0) {
        rc = load_identity(s->tls_relay, c, err, err_size);
    }
    if (rc != 0) {
        return rc;
    }
    if (c->tls_require_client_cert) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->tls_ca_file);
        if (names != NULL) {
            SSL_CTX_set_client_CA_list(s->tls_accept, names);
        }
        SSL_CTX_set_verify(s->tls_accept, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    /* Relaying, a member checks the other member's certificate: the CA and its address. */
    SSL_CTX_set_verify(s->tls_relay, SSL_VERIFY_PEER, NULL);
    ERR_clear_error();
    return 0;
}

void sq__kvs_tls_free(struct sq_kv_server *s)
{
    SSL_CTX_free(s->tls_accept);
    SSL_CTX_free(s->tls_relay);
    s->tls_accept = s->tls_relay = NULL;
}

int sq__kvs_tls_start(struct sq_kv_server *s, struct conn *c)
{
    if (s->tls_accept == NULL) {
        return 0;
    }
    SSL *ssl = SSL_new(c->relay ? s->tls_relay : s->tls_accept);
    if (ssl == NULL || SSL_set_fd(ssl, c->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return SQ_ENOMEM;
    }
    if (c->relay) {
        /* The other member's certificate must name the host it is configured at. */
        int r = sq__config_rank_of(&s->cfg, c->member);
        if (sq__tls_expect_peer(ssl, r >= 0 ? s->cfg.members[r].host : "") != 1) {
            SSL_free(ssl);
            ERR_clear_error();
            return SQ_ENOMEM;
        }
        SSL_set_connect_state(ssl);
    } else {
        SSL_set_accept_state(ssl);
    }
    c->ssl = ssl;
    return 0;
}

void sq__kvs_tls_drop(struct conn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}

/* What an SSL call that did not move bytes means for the connection; logs why it ends. */
static int tls_status(struct sq_kv_server *s, struct conn *c, int ret)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ) {
        return SQ_TLS_WANT_READ;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        return SQ_TLS_WANT_WRITE;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return SQ_TLS_CLOSED;
    }
    char why[256];
    ssl_error(why, sizeof(why), e == SSL_ERROR_SYSCALL ? "the connection closed" : "TLS error");
    if (!SSL_is_init_finished(c->ssl)) {
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            snprintf(why, sizeof(why), "certificate: %s", X509_verify_cert_error_string(v));
        }
        s->stats.tls_failed++;
        uint64_t now = sq__mono_ms();
        if (now - s->tls_logged_ms < 1000) {
            return SQ_TLS_CLOSED; /* at most one line a second (the metric counts them all) */
        }
        s->tls_logged_ms = now;
        if (c->relay) {
            sq__log(SQ_LOG_WARN, "kv: TLS with member %u failed: %s", c->member, why);
        } else {
            sq__log(SQ_LOG_WARN, "kv: a client's TLS handshake failed: %s", why);
        }
    }
    return SQ_TLS_CLOSED;
}

long sq__kvs_tls_recv(struct sq_kv_server *s, struct conn *c, void *buf, size_t n)
{
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, (int)SQ_MIN(n, (size_t)INT32_MAX));
    return r > 0 ? r : tls_status(s, c, r);
}

long sq__kvs_tls_send(struct sq_kv_server *s, struct conn *c, const void *buf, size_t n)
{
    ERR_clear_error();
    if (n == 0) {
        /* Nothing to send: still drive a handshake that waits to write. */
        int r = SSL_is_init_finished(c->ssl) ? 1 : SSL_do_handshake(c->ssl);
        return r == 1 ? 0 : tls_status(s, c, r);
    }
    int r = SSL_write(c->ssl, buf, (int)SQ_MIN(n, (size_t)INT32_MAX));
    return r > 0 ? r : tls_status(s, c, r);
}
