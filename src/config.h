/* config.h: the member configuration (an INI file, parsed with libinih) and its validation. */
#ifndef SQ_CONFIG_H
#define SQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfile.h"

/* Bounds on what one configuration may describe. */
#define SQ_MAX_MEMBERS 32
#define SQ_MAX_HOST 256
#define SQ_MAX_WINDOW 65536u
#define SQ_MAX_PAYLOAD (256u << 20)
#define SQ_MAX_TABLE_BYTES (1ull << 30)
/* The large-message rings of every subgroup together (twice: one set per view parity). Mapped
 * lazily: a member's resident memory is what its rings have carried, not this. */
#define SQ_MAX_LARGE_BYTES (16ull << 30)
/* Defaults of the large-message path (see [subgroup.NAME] in README). */
#define SQ_DEFAULT_MAX_SMC_PAYLOAD 10240u
#define SQ_DEFAULT_LARGE_BUFFER_BYTES (16u << 20)
#define SQ_DEFAULT_BLOCK_SIZE (1u << 20)
#define SQ_MAX_SUBGROUPS 8
#define SQ_MAX_SHARDS 16 /* over all subgroups */
#define SQ_MAX_NAME 64

/* [kv] bounds: a frame is 60 header bytes, a key, a string and a value (src/kv/wire.h). */
#define SQ_CONFIG_MIN_FRAME_BYTES 4096u
#define SQ_CONFIG_MAX_FRAME_BYTES (60u + 1024u + 512u + (64u << 20))
#define SQ_CONFIG_DEFAULT_KV_CONNECTIONS 4096u
#define SQ_CONFIG_DEFAULT_OUTPUT_BYTES (256ull << 20)

enum { SQ_FLUSH_GROUP_COMMIT, SQ_FLUSH_PERIODIC, SQ_FLUSH_NONE };
/* large_schedule: how a large message's blocks travel (src/smc.c). */
enum { SQ_SCHEDULE_AUTO, SQ_SCHEDULE_CHAIN, SQ_SCHEDULE_STAR }; /* AUTO: resolved when parsed */

/* Key-value store types (store = ... in [subgroup.NAME]; see src/kv/store.h). The default follows
 * the delivery: persistent for delivery = persistent, volatile otherwise. */
enum { SQ_STORE_VOLATILE = 0, SQ_STORE_PERSISTENT = 1, SQ_STORE_TRIGGER = 2 };

/* One [subgroup.NAME] section: its shards, their sizes and the multicast window of each. */
struct sq_subgroup_cfg {
    char name[SQ_MAX_NAME];
    uint32_t window_size;
    uint32_t max_payload;        /* the largest message */
    uint32_t max_smc_payload;    /* messages up to it go in slots; larger ones by the large path */
    uint64_t large_buffer_bytes; /* each sender's ring for large messages */
    uint32_t block_size;         /* large messages move in blocks of this size */
    int large_schedule;          /* SQ_SCHEDULE_* */
    uint32_t shards;
    uint32_t min_members; /* per shard: fewer makes a view inadequate */
    uint32_t max_members; /* per shard: members beyond shards x max_members stand by */
    bool persistent;      /* delivery = persistent: every update logged at every member */
    int store;            /* key-value store type of the subgroup's pools: SQ_STORE_* */
    int line;             /* of the section header */
};

struct sq_member_addr {
    uint32_t id;
    char host[SQ_MAX_HOST];
    uint32_t port;        /* 0 until set */
    uint32_t client_port; /* key-value clients connect here (0: this member serves none) */
    uint32_t http_port;   /* HTTP (REST, server-sent events, /metrics, console); 0: none */
    int line;             /* line of the section header, for error messages */
};

struct sq_config {
    char path[512];
    /* [self] */
    uint32_t self_id;
    bool has_self;
    /* [group] */
    char provider[64];
    char domain[64];
    int log_level;
    int connect_timeout_ms;
    int restart_wait_ms; /* restart from the disks: how long a majority waits for the rest */
    int heartbeat_timeout_ms;
    bool rejoin; /* squalld: a member the group removed (or a minority stopped) joins again */
    uint64_t max_state_bytes;
    int spin_us;
    /* The group key members authenticate each other with (keyfile.h); none: no authentication */
    char key_file[400];
    bool has_key;
    uint8_t group_key[SQ_GROUP_KEY_BYTES];
    /* persistence */
    char data_dir[400];     /* where persistent subgroups keep their logs ("" if none) */
    int flush_policy;       /* SQ_FLUSH_* */
    int flush_interval_ms;  /* periodic: how often */
    uint64_t segment_bytes; /* log segment size */
    /* [http]: the bounds of every member's HTTP front end (src/server/http.c) */
    uint32_t http_max_connections;
    uint32_t http_idle_timeout_s;
    uint64_t http_max_body_bytes;
    uint32_t http_max_header_bytes;
    uint64_t http_sse_buffer_bytes;
    /* [kv]: the bounds of the client port (src/server/kv_conn.c) */
    uint32_t kv_max_connections;          /* open client connections at most */
    uint32_t kv_max_connections_per_host; /* ... from one address (0: no bound) */
    uint64_t kv_max_frame_bytes;          /* a longer request is refused, its connection closed */
    uint64_t kv_max_output_bytes; /* answers a connection leaves unread before it is dropped */
    /* [tls]: TLS on the client and HTTP ports (src/server/kv_tls.c); no cert_file: none */
    char tls_cert_file[400];
    char tls_key_file[400];
    char tls_ca_file[400];
    bool tls_require_client_cert;
    /* [member.N], sorted by id once loaded */
    uint32_t nmembers;
    struct sq_member_addr members[SQ_MAX_MEMBERS];
    /* [subgroup.NAME], in file order; without any, one subgroup "default" of one shard */
    uint32_t nsubgroups;
    struct sq_subgroup_cfg subgroups[SQ_MAX_SUBGROUPS];
    uint32_t nshards; /* over all subgroups */
};

/* What a member's logs and view file hold when it starts, exchanged while the first view forms
 * so that a group restarted from its logs goes on from them (see group.c and restart.h). */
struct sq_log_tail {
    uint32_t view_next;              /* 1 + the highest view id in this member's logs (0: none) */
    uint8_t shard[SQ_MAX_SUBGROUPS]; /* per subgroup: the shard its log is of (0xFF: none) */
    uint32_t pad;
    uint64_t last[SQ_MAX_SUBGROUPS]; /* per subgroup: 1 + its log's last version (0: empty) */
    /* From the view file: the last view this member was in when it stopped. */
    uint32_t vf_view;        /* 1 + that view's id (0: no view file, a member that never ran) */
    uint32_t vf_members;     /* its members, by configured rank */
    uint16_t vf_held;        /* persistent shards (flat numbers) some member held in it */
    uint16_t vf_mine;        /* persistent shards whose whole history this member held in it */
    uint32_t vf_acc_view;    /* 1 + the id of a later view it accepted but did not install... */
    uint32_t vf_acc_members; /* ...and that view's members (0, 0: none) */
    /* When that view is the first view of a restart: the view file before it (the same fields),
     * which holds if the restart never completed (restart.h); all 0 otherwise. */
    uint32_t vf_prev_view;
    uint32_t vf_prev_members;
    uint16_t vf_prev_held;
    uint16_t vf_prev_mine;
    uint32_t vf_prev_acc_view;
    uint32_t vf_prev_acc_members;
};

/* Loads and validates a configuration file. On error returns SQ_ECONFIG (or SQ_EIO when the file
 * cannot be read) and writes "file:line: ..." naming the key to `err`. */
int sq__config_load(struct sq_config *c, const char *path, char *err, size_t err_size);

/* Same, from a string; `name` stands for the file name in messages. */
int sq__config_parse_string(struct sq_config *c, const char *name, const char *text, char *err,
                            size_t err_size);

/* Rank of member `id` in the first view (members sorted by id), or -1. */
int sq__config_rank_of(const struct sq_config *c, uint32_t id);

/* Index of the subgroup called `name`, or -1. */
int sq__config_subgroup(const struct sq_config *c, const char *name);

/* Members per shard of subgroup `g` can hold at most (rows of its tables): max_members, or every
 * configured member. */
uint32_t sq__config_shard_rows(const struct sq_config *c, uint32_t g);

/* A 64-bit digest of everything members must agree on (member list, subgroup layout), so that
 * two members started from mismatched files refuse to connect. */
uint64_t sq__config_group_digest(const struct sq_config *c);

#endif
