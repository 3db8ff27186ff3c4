/* hello_client.c: put, conditional put and get with libsquall-client.
 *   cc hello_client.c $(pkg-config --cflags --libs squall-client) -o hello_client
 *   ./hello_client 127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102 /orders/42 */
#include <squall/client.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    sq_client *c;
    char err[256];
    if (argc != 3 || sq_client_open(&c, argv[1], 5000, err, sizeof(err)) != 0) {
        fprintf(stderr, "usage: hello_client MEMBERS KEY (%s)\n", argc == 3 ? err : "");
        return 2;
    }
    sq_kv_result r = {0};
    sq_client_put(c, argv[2], "one", 3, NULL, &r);
    sq_put_opts only_if = {.if_version = 1, .version = r.version}; /* only if nobody wrote since */
    if (r.status == 0 && sq_client_put(c, argv[2], "two", 3, &only_if, &r) == 0 &&
        sq_client_get(c, argv[2], NULL, &r) == 0) {
        printf("%s = %.*s at version %llu\n", argv[2], (int)r.size, (const char *)r.value,
               (unsigned long long)r.version);
    } else {
        fprintf(stderr, "%s: %s\n", sq_strerror(r.status), r.message);
    }
    int rc = r.status;
    sq_kv_result_free(&r);
    sq_client_close(c);
    return rc == 0 ? 0 : 1;
}
