/* restart.c: the view file and the rule for restarting a group from a majority. See restart.h. */
#include "restart.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "le.h"
#include "persist/disk.h"

#define VF_MAGIC 0x46565153u /* "SQVF" */
#define VF_FORMAT 2u
#define VF_BYTES 56u
#define VF1_BYTES 32u

/* Layout, little-endian: 0 u32 magic, 4 u16 format, 6 u16 bytes, 8 u32 view_next, 12 u32
 * members, 16 u16 held, 18 u16 mine, 20 u32 acc_view, 24 u32 acc_members; format 2 then: 28 u32
 * prev.view_next, 32 u32 prev.members, 36 u16 prev.held, 38 u16 prev.mine, 40 u32
 * prev.acc_view, 44 u32 prev.acc_members, 48 u32 zero; last, the CRC-32C of the bytes before it
 * (at 28 in format 1, which has no prev, 32 bytes in all; at 52 in format 2). */

void sq__viewfile_path(const struct sq_config *cfg, uint32_t member_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/member-%u/view", cfg->data_dir, member_id);
}

int sq__viewfile_read(const char *path, struct sq__viewfile *out, char *err, size_t err_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(err, err_size, "%s: cannot open the view file: %s", path, strerror(errno));
        return SQ_EIO;
    }
    uint8_t b[VF_BYTES + 1];
    ssize_t n = read(fd, b, sizeof(b));
    close(fd);
    uint16_t format = n >= 8 ? sq__ld16(b + 4) : 0;
    size_t want = format == 1 ? VF1_BYTES : VF_BYTES;
    if (n != (ssize_t)want || sq__ld32(b) != VF_MAGIC || (format != 1 && format != VF_FORMAT) ||
        sq__ld16(b + 6) != want || sq__ld32(b + want - 4) != sq__crc32c(0, b, want - 4)) {
        snprintf(err, err_size,
                 "%s: the view file is damaged (%zd bytes, or a bad checksum): "
                 "this member cannot tell which views it was in; move it away only if the "
                 "member's logs go too",
                 path, n);
        return SQ_ECORRUPT;
    }
    out->view_next = sq__ld32(b + 8);
    out->members = sq__ld32(b + 12);
    out->held = sq__ld16(b + 16);
    out->mine = sq__ld16(b + 18);
    out->acc_view = sq__ld32(b + 20);
    out->acc_members = sq__ld32(b + 24);
    memset(&out->prev, 0, sizeof(out->prev));
    if (format == VF_FORMAT) {
        out->prev.view_next = sq__ld32(b + 28);
        out->prev.members = sq__ld32(b + 32);
        out->prev.held = sq__ld16(b + 36);
        out->prev.mine = sq__ld16(b + 38);
        out->prev.acc_view = sq__ld32(b + 40);
        out->prev.acc_members = sq__ld32(b + 44);
    }
    return 1;
}

int sq__viewfile_write(const char *path, const struct sq__viewfile *vf, char *err, size_t err_size)
{
    uint8_t b[VF_BYTES];
    memset(b, 0, sizeof(b));
    sq__st32(b, VF_MAGIC);
    sq__st16(b + 4, VF_FORMAT);
    sq__st16(b + 6, VF_BYTES);
    sq__st32(b + 8, vf->view_next);
    sq__st32(b + 12, vf->members);
    sq__st16(b + 16, vf->held);
    sq__st16(b + 18, vf->mine);
    sq__st32(b + 20, vf->acc_view);
    sq__st32(b + 24, vf->acc_members);
    sq__st32(b + 28, vf->prev.view_next);
    sq__st32(b + 32, vf->prev.members);
    sq__st16(b + 36, vf->prev.held);
    sq__st16(b + 38, vf->prev.mine);
    sq__st32(b + 40, vf->prev.acc_view);
    sq__st32(b + 44, vf->prev.acc_members);
    sq__st32(b + 52, sq__crc32c(0, b, 52));
    char tmp[700], dir[700];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    /* The member's directory exists once it opened a log; a member in no persistent shard has
     * none yet. */
    int rc = slash != NULL ? sq__disk_posix()->vt->mkdirs(sq__disk_posix(), dir) : 0;
    int e = errno;
    int fd = rc == 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (rc == 0) {
        ssize_t w = fd < 0 ? -1 : write(fd, b, sizeof(b));
        if (fd < 0 || w != (ssize_t)sizeof(b) || fdatasync(fd) != 0) {
            e = (fd >= 0 && w >= 0 && w != (ssize_t)sizeof(b)) ? ENOSPC : errno;
            rc = e == ENOSPC ? SQ_ENOSPC : SQ_EIO;
        }
    } else {
        rc = SQ_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = SQ_EIO;
        e = errno;
    }
    if (rc == 0) {
        int dfd = open(slash != NULL ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) {
            rc = SQ_EIO;
            e = errno;
        }
        if (dfd >= 0) {
            close(dfd);
        }
    }
    if (rc != 0) {
        snprintf(err, err_size, "%s: cannot write the view file: %s", path, strerror(e));
    }
    return rc;
}

/* Appends ", id" (or "id") to a list. */
static void add_id(char *buf, size_t cap, size_t *len, uint32_t id)
{
    if (*len < cap) {
        *len += (size_t)snprintf(buf + *len, cap - *len, "%s%u", *len ? ", " : "", id);
    }
}

void sq__restart_effective_tails(const struct sq_config *cfg, uint32_t present,
                                 const struct sq_log_tail *tails, struct sq_log_tail *out)
{
    const uint32_t n = cfg->nmembers;
    memcpy(out, tails, n * sizeof(*out));
    for (uint32_t round = 0; round < n; round++) {
        uint32_t last = 0, members = 0;
        for (uint32_t r = 0; r < n; r++) {
            if ((present >> r) & 1u && out[r].vf_view > last) {
                last = out[r].vf_view;
                members = out[r].vf_members;
            }
        }
        if (last == 0) {
            return;
        }
        /* every file that says `last` is of a restart's first view (it kept the one before) */
        bool restart_view = true, void_view = false;
        for (uint32_t r = 0; r < n; r++) {
            if ((present >> r) & 1u && out[r].vf_view == last) {
                restart_view &= out[r].vf_prev_view != 0 && out[r].vf_prev_view < last;
            }
            /* a member of it, back with a view file older than it: it never wrote its row */
            void_view |= (present >> r) & 1u && (members >> r) & 1u && out[r].vf_view > 0 &&
                         out[r].vf_view < last;
        }
        if (!restart_view || !void_view) {
            return;
        }
        for (uint32_t r = 0; r < n; r++) {
            struct sq_log_tail *t = &out[r];
            if ((present >> r) & 1u && t->vf_view == last) {
                t->vf_view = t->vf_prev_view;
                t->vf_members = t->vf_prev_members;
                t->vf_held = t->vf_prev_held;
                t->vf_mine = t->vf_prev_mine;
                t->vf_acc_view = t->vf_prev_acc_view;
                t->vf_acc_members = t->vf_prev_acc_members;
                t->vf_prev_view = t->vf_prev_members = t->vf_prev_acc_view = 0;
                t->vf_prev_acc_members = 0;
                t->vf_prev_held = t->vf_prev_mine = 0;
            }
        }
    }
}

int sq__restart_check(const struct sq_config *cfg, uint32_t present,
                      const struct sq_log_tail *raw_tails, bool *restart, char *why,
                      size_t why_size)
{
    const uint32_t n = cfg->nmembers;
    struct sq_log_tail tails[SQ_MAX_MEMBERS];
    sq__restart_effective_tails(cfg, present, raw_tails, tails);
    const uint32_t all = n >= 32 ? UINT32_MAX : (1u << n) - 1;
    present &= all;
    uint32_t last = 0; /* 1 + the latest view known to a member present */
    uint32_t members = 0;
    for (uint32_t r = 0; r < n; r++) {
        if ((present >> r) & 1u && tails[r].vf_view > last) {
            last = tails[r].vf_view;
            members = tails[r].vf_members & all;
        }
    }
    why[0] = '\0';
    *restart = last > 0;
    if (last == 0) {
        if (present == all) {
            return 1;
        }
        char missing[256] = "";
        size_t len = 0;
        for (uint32_t r = 0; r < n; r++) {
            if (!((present >> r) & 1u)) {
                add_id(missing, sizeof(missing), &len, cfg->members[r].id);
            }
        }
        snprintf(why, why_size,
                 "a new group starts with every configured member; waiting for "
                 "member(s) %s",
                 missing);
        return 0;
    }
    /* Members that know nothing of the group's views (a wiped disk) do not count. */
    uint32_t knowing = 0;
    for (uint32_t r = 0; r < n; r++) {
        knowing |= (uint32_t)(tails[r].vf_view > 0) << r;
    }
    uint32_t need = (uint32_t)__builtin_popcount(members) / 2 + 1;
    uint32_t have = (uint32_t)__builtin_popcount(members & present & knowing);
    if (have < need) {
        char missing[256] = "";
        size_t len = 0;
        for (uint32_t r = 0; r < n; r++) {
            if ((members >> r) & 1u && !((present & knowing) >> r & 1u)) {
                add_id(missing, sizeof(missing), &len, cfg->members[r].id);
            }
        }
        snprintf(why, why_size,
                 "restarting needs %u of the %u members of view %u, the last one "
                 "the group had, with their disks; %u are here (missing: %s)",
                 need, (unsigned)__builtin_popcount(members), last - 1, have, missing);
        return 0;
    }
    /* A later view accepted (and perhaps installed by members missing now): a majority of it
     * too. */
    for (uint32_t r = 0; r < n; r++) {
        if (!((present >> r) & 1u) || tails[r].vf_acc_view <= last) {
            continue;
        }
        uint32_t acc = tails[r].vf_acc_members & all;
        uint32_t need2 = (uint32_t)__builtin_popcount(acc) / 2 + 1;
        if ((uint32_t)__builtin_popcount(acc & present & knowing) < need2) {
            char missing[256] = "";
            size_t len = 0;
            for (uint32_t q = 0; q < n; q++) {
                if ((acc >> q) & 1u && !((present & knowing) >> q & 1u)) {
                    add_id(missing, sizeof(missing), &len, cfg->members[q].id);
                }
            }
            snprintf(why, why_size,
                     "member %u accepted view %u, which members missing now may "
                     "have installed: restarting needs %u of its %u members (missing: %s)",
                     cfg->members[r].id, tails[r].vf_acc_view - 1, need2,
                     (unsigned)__builtin_popcount(acc), missing);
            return 0;
        }
    }
    /* A later view accepted by a member present: a holder counts only if it is in that view
     * too (it then keeps its shard in it, and since it did not install it, nothing was
     * persisted in that shard there; a holder the view removed knows nothing of it). */
    uint32_t in_later = all;
    for (uint32_t r = 0; r < n; r++) {
        if ((present >> r) & 1u && tails[r].vf_acc_view > last) {
            in_later &= tails[r].vf_acc_members;
        }
    }
    uint32_t held = 0, whole = 0;
    for (uint32_t r = 0; r < n; r++) {
        if ((present >> r) & 1u && tails[r].vf_view == last) {
            held |= tails[r].vf_held;
            whole |= (in_later >> r) & 1u ? tails[r].vf_mine : 0u;
        }
    }
    uint32_t flat = 0;
    for (uint32_t s = 0; s < cfg->nsubgroups; s++) {
        for (uint32_t k = 0; k < cfg->subgroups[s].shards; k++, flat++) {
            if (flat < 16 && (held >> flat) & 1u && !((whole >> flat) & 1u)) {
                snprintf(why, why_size,
                         "no member here held the whole history of shard %u of "
                         "subgroup %s in view %u: waiting for one of that shard's members",
                         k, cfg->subgroups[s].name, last - 1);
                return 0;
            }
        }
    }
    return 1;
}
