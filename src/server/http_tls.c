/* http_tls.c: HTTPS for the HTTP front end ([tls] in the config): the PEM files libmicrohttpd
 * serves with, and the check of a client's certificate when [tls] require_client_cert is set
 * (libmicrohttpd asks for one, GnuTLS verifies it against ca_file). */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "server/http.h"
#include "squall/errors.h"

#define MAX_PEM_BYTES (1u << 20)

/* The whole file at `path` as a NUL-terminated string (the caller frees it), or NULL with the
 * reason in `err`. */
static char *read_pem(const char *what, const char *path, char *err, size_t err_size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_size, "[tls] %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf != NULL ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    bool bad = buf == NULL || ferror(f) || n > MAX_PEM_BYTES || n == 0;
    fclose(f);
    if (bad) {
        snprintf(err, err_size, "[tls] %s %s: %s", what, path,
                 buf == NULL ? "out of memory"
                 : n == 0    ? "empty"
                             : "unreadable or above 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

int sq__http_tls_load(const struct sq_config *cfg, char **key, char **cert, char **trust, char *err,
                      size_t err_size)
{
    *key = *cert = *trust = NULL;
    if (cfg->tls_cert_file[0] == '\0') {
        return 0;
    }
    *key = read_pem("key_file", cfg->tls_key_file, err, err_size);
    *cert = *key != NULL ? read_pem("cert_file", cfg->tls_cert_file, err, err_size) : NULL;
    if (*cert != NULL && cfg->tls_require_client_cert) {
        *trust = read_pem("ca_file", cfg->tls_ca_file, err, err_size);
    }
    if (*key == NULL || *cert == NULL || (cfg->tls_require_client_cert && *trust == NULL)) {
        free(*key);
        free(*cert);
        free(*trust);
        *key = *cert = *trust = NULL;
        return SQ_ECONFIG;
    }
    return 0;
}

bool sq__http_tls_client_ok(struct MHD_Connection *conn, char *why, size_t why_size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL || ci->tls_session == NULL) {
        snprintf(why, why_size, "this member requires a client certificate over HTTPS");
        return false;
    }
    unsigned status = 0;
    int rc = gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status);
    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND) {
        snprintf(why, why_size,
                 "this member requires a client certificate ([tls] require_client_cert): "
                 "present one signed by its CA (curl --cert FILE --key FILE)");
        return false;
    }
    if (rc != 0 || status != 0) {
        gnutls_datum_t text = {NULL, 0};
        if (rc == 0 &&
            gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
            snprintf(why, why_size, "the client certificate is not accepted: %s", text.data);
            gnutls_free(text.data);
        } else {
            snprintf(why, why_size, "the client certificate is not accepted: %s",
                     gnutls_strerror(rc));
        }
        return false;
    }
    return true;
}
