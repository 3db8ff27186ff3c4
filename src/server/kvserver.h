/* kvserver.h: the key-value service of a squalld member: object pools over the member's
 * subgroups, the client protocol on the member's client port, relaying to the shard that holds
 * a key, and watches. */
#ifndef SQ_KVSERVER_H
#define SQ_KVSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "squall.h"

struct sq_kv_server;
struct sq_kv_frame;

/* Creates the service for member `m` (opened from `config_path`, not started yet) and registers
 * its delivery, view, state and persistence callbacks on `m`. The config must give this member
 * a client_port and have a [subgroup.meta] (persistent, one shard, every member) for the pool
 * table. SQ_ECONFIG with the reason in `err`. */
int sq__kv_server_create(struct sq_kv_server **out, sq_member *m, const char *config_path,
                         char *err, size_t err_size);

/* Whether the member configured in `config_path` serves clients (its [member.ID] has a
 * client_port); false when the file cannot be read (sq_member_open reports that). */
int sq__kv_config_serves(const char *config_path);

/* Listens on the client port and starts the service thread; call once the member has started or
 * joined. */
int sq__kv_server_start(struct sq_kv_server *s, char *err, size_t err_size);

/* Whether this member holds the pool table and the state of every shard it serves (a member
 * that just joined receives them after sq_member_join returns). */
bool sq__kv_server_ready(struct sq_kv_server *s);

/* The member failed (the group removed it, or it stopped on the minority side) and squalld
 * will join again: the service stops using the member, closes the connections open now (their
 * clients resend elsewhere, at most once), drops the stores, pools and watches, and answers every
 * request with SQ_ENOQUORUM and `why` until an attached member's first view. Returns once the
 * service thread no longer touches the member, which may then be closed. */
void sq__kv_server_detach(struct sq_kv_server *s, const char *why);

/* The member's next incarnation, opened but not started: registers the service's callbacks on
 * `m` (as create does); the service answers again from m's first view on. */
void sq__kv_server_attach(struct sq_kv_server *s, sq_member *m);

/* Whether the config asks for a member the group removed to join again ([group] rejoin). */
bool sq__kv_server_rejoins(const struct sq_kv_server *s);

/* The config's connect_timeout_ms: the longest a start or join may take. */
int sq__kv_server_connect_timeout_ms(const struct sq_kv_server *s);

/* In-process clients: the HTTP front end of this member hands the client library's encoded
 * requests to the service on its own thread (no socket, no hop to the service thread), through
 * a connection of its own whose answers go to `answer(arg, frame)`: called under the service's
 * lock, on the requesting thread for what is answered at once (a get from this member's store)
 * or on another (a put once durable, a relayed request); the frame is valid during the call.
 * open: 0 and the connection's id. request: 0 once the frame was handled, SQ_ECLOSED when the
 * service is not running (send it over the client port then). close: after it returns, no
 * answer reaches `answer` any more; requests in flight are forgotten. */
int sq__kv_server_inproc_open(struct sq_kv_server *s,
                              void (*answer)(void *arg, const struct sq_kv_frame *f), void *arg,
                              uint64_t *id);
int sq__kv_server_inproc_request(struct sq_kv_server *s, uint64_t id, const uint8_t *frame,
                                 size_t len);
void sq__kv_server_inproc_close(struct sq_kv_server *s, uint64_t id);

/* Stops the service thread and closes every client connection. Call before sq_member_close; the
 * object is freed by sq__kv_server_destroy after the member is closed (callbacks may run until
 * then). */
void sq__kv_server_stop(struct sq_kv_server *s);
void sq__kv_server_destroy(struct sq_kv_server *s);

#endif
