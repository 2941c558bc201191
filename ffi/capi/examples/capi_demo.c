/* A C program embedding Flint through flint.h: format four file-backed
 * devices, write and read synchronously and asynchronously, make a directory
 * tree (mkdir, files by path, rename, links, readdir in pages), reopen,
 * check.
 * Usage: capi_demo DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flint.h"

#define EXPECT(call, want)                                                   \
    do {                                                                     \
        long long rc_ = (long long)(call);                                   \
        if (rc_ != (want)) {                                                 \
            fprintf(stderr, "%s:%d: %s returned %lld, want %lld\n",         \
                    __FILE__, __LINE__, #call, rc_, (long long)(want));      \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define CHECK(call)                                                          \
    do {                                                                     \
        long long rc_ = (long long)(call);                                   \
        if (rc_ < 0) {                                                       \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,   \
                    #call, strerror((int)-rc_));                             \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static flint_engine *open_engine(const char *dir, int format) {
    static char paths[4][4096];
    const char *ptrs[4];
    for (int i = 0; i < 4; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/capi%d.img", dir, i);
        ptrs[i] = paths[i];
    }
    struct flint_engine_opts opts = {
        .size = sizeof opts,
        .device_paths = ptrs,
        .device_count = 4,
        .device_bytes = 64ull << 20,
        .format = format,
        .force = 1,
    };
    flint_engine *eng = NULL;
    CHECK(flint_engine_open(&opts, &eng));
    return eng;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    flint_engine *eng = open_engine(argv[1], 1);
    uint32_t fs;
    CHECK(flint_fs_create(eng, "capi", 2, 2, 1, 1ull << 30, &fs));
    uint64_t ino;
    CHECK(flint_file_open(eng, fs, "hello.txt", 1, &ino));

    /* Blocking calls. */
    const char msg[] = "hello from C through Flint's erasure-coded stripes";
    CHECK(flint_write(eng, ino, 0, msg, sizeof msg));
    CHECK(flint_fsync(eng));
    char back[128] = {0};
    long long n = flint_read(eng, ino, 0, back, sizeof back);
    CHECK(n);
    if (n != (long long)sizeof msg || memcmp(back, msg, sizeof msg) != 0) {
        fprintf(stderr, "read back wrong data\n");
        return 1;
    }

    /* Asynchronous: 64 writes of 4 KiB, an fsync, then 64 reads. */
    static char blocks[64][4096];
    static char readback[64][4096];
    for (int i = 0; i < 64; i++) {
        memset(blocks[i], 'a' + i % 26, sizeof blocks[i]);
        struct flint_io io = {.size = sizeof io, .op = FLINT_OP_WRITE, .ino = ino,
                              .offset = 4096ull * (i + 1), .buf = blocks[i],
                              .len = sizeof blocks[i], .cb_arg = &blocks[i]};
        CHECK(flint_submit(eng, &io));
    }
    struct flint_completion done[16];
    int finished = 0;
    while (finished < 64) {
        int got = flint_poll(eng, done, 16);
        CHECK(got);
        for (int j = 0; j < got; j++) {
            CHECK(done[j].result);
        }
        finished += got;
    }
    struct flint_io sync = {.size = sizeof sync, .op = FLINT_OP_FSYNC, .cb_arg = NULL};
    CHECK(flint_submit(eng, &sync));
    while ((finished = flint_poll(eng, done, 1)) == 0) {
    }
    CHECK(done[0].result);
    for (int i = 0; i < 64; i++) {
        struct flint_io io = {.size = sizeof io, .op = FLINT_OP_READ, .ino = ino,
                              .offset = 4096ull * (i + 1), .buf = readback[i],
                              .len = sizeof readback[i], .cb_arg = readback[i]};
        CHECK(flint_submit(eng, &io));
    }
    finished = 0;
    while (finished < 64) {
        int got = flint_poll(eng, done, 16);
        CHECK(got);
        for (int j = 0; j < got; j++) {
            if (done[j].result != 4096) {
                fprintf(stderr, "async read returned %lld\n", (long long)done[j].result);
                return 1;
            }
        }
        finished += got;
    }
    if (memcmp(readback, blocks, sizeof blocks) != 0) {
        fprintf(stderr, "async reads returned wrong data\n");
        return 1;
    }
    /* Errors are negated errnos: a second engine on the same devices is
     * refused, so two engines never overwrite each other. */
    {
        static char p0[4096];
        snprintf(p0, sizeof p0, "%s/capi0.img", argv[1]);
        const char *same[] = {p0};
        struct flint_engine_opts o3 = {.size = sizeof o3, .device_paths = same,
                                       .device_count = 1, .device_bytes = 64ull << 20};
        flint_engine *e3 = NULL;
        if (flint_engine_open(&o3, &e3) != -EBUSY) {
            fprintf(stderr, "expected -EBUSY for a device in use\n");
            return 1;
        }
    }
    if (flint_file_open(eng, fs, "missing", 0, &ino) != -ENOENT) {
        fprintf(stderr, "expected -ENOENT\n");
        return 1;
    }

    /* A directory tree by path. */
    CHECK(flint_mkdir(eng, fs, "data", 0755));
    CHECK(flint_mkdir(eng, fs, "data/train", 0750));
    char path[64];
    for (int i = 0; i < 40; i++) {
        uint64_t f;
        snprintf(path, sizeof path, "data/train/%03d.bin", i);
        CHECK(flint_file_open(eng, fs, path, 1, &f));
        CHECK(flint_write(eng, f, 0, path, strlen(path)));
    }
    CHECK(flint_rename(eng, fs, "data/train/000.bin", "data/first.bin", 0));
    CHECK(flint_link(eng, fs, "data/first.bin", "hard.bin"));
    CHECK(flint_symlink(eng, fs, "data/first.bin", "soft"));
    char target[64];
    EXPECT(flint_readlink(eng, fs, "soft", target, sizeof target), 14);
    if (memcmp(target, "data/first.bin", 14) != 0) {
        fprintf(stderr, "readlink returned the wrong target\n");
        return 1;
    }
    struct flint_stat st = {.size = sizeof st};
    CHECK(flint_stat_path(eng, fs, "hard.bin", &st));
    if (st.nlink != 2 || st.st_size != 18 || (st.mode & 0170000) != 0100000) {
        fprintf(stderr, "stat of a hard link: nlink %u size %llu mode %o\n", st.nlink,
                (unsigned long long)st.st_size, st.mode);
        return 1;
    }
    EXPECT(flint_rmdir(eng, fs, "data"), -ENOTEMPTY);
    EXPECT(flint_unlink(eng, fs, "data"), -EISDIR);
    EXPECT(flint_mkdir(eng, fs, "data/train", 0755), -EEXIST);
    EXPECT(flint_rename(eng, fs, "data", "data/train/inside", 0), -EINVAL);
    EXPECT(flint_rename(eng, fs, "hard.bin", "data/first.bin", FLINT_RENAME_NOREPLACE),
           -EEXIST);
    EXPECT(flint_file_open(eng, fs, "nodir/x", 1, &ino), -ENOENT);
    /* The listing in pages of 7: 39 entries, each once. */
    struct flint_dirent ents[7];
    uint64_t cookie = 0;
    int listed = 0, got;
    while ((got = flint_readdir(eng, fs, "data/train", cookie, ents, 7)) > 0) {
        listed += got;
        cookie = ents[got - 1].cookie;
    }
    CHECK(got);
    EXPECT(listed, 39);
    /* Extended attributes. */
    CHECK(flint_setxattr(eng, fs, "hard.bin", "user.label", "cat", 3, FLINT_XATTR_CREATE));
    CHECK(flint_setxattr(eng, fs, "hard.bin", "user.split", "train", 5, 0));
    EXPECT(flint_setxattr(eng, fs, "hard.bin", "user.label", "dog", 3, FLINT_XATTR_CREATE),
           -EEXIST);
    char val[16];
    EXPECT(flint_getxattr(eng, fs, "hard.bin", "user.label", val, sizeof val), 3);
    EXPECT(flint_getxattr(eng, fs, "hard.bin", "user.label", val, 2), -ERANGE);
    EXPECT(flint_listxattr(eng, fs, "hard.bin", NULL, 0), 22);
    CHECK(flint_removexattr(eng, fs, "hard.bin", "user.split"));
    EXPECT(flint_getxattr(eng, fs, "hard.bin", "user.split", val, sizeof val), -ENODATA);
    CHECK(flint_unlink(eng, fs, "data/first.bin"));
    CHECK(flint_fsync(eng));
    CHECK(flint_engine_close(eng));

    /* Reopen without formatting: everything is still there. */
    eng = open_engine(argv[1], 0);
    uint64_t again, size;
    CHECK(flint_file_open(eng, fs, "hello.txt", 0, &again));
    CHECK(flint_file_stat(eng, again, &size));
    if (size != 4096ull * 65) {
        fprintf(stderr, "size after reopen %llu\n", (unsigned long long)size);
        return 1;
    }
    n = flint_read(eng, again, 4096ull * 10, back, 64);
    CHECK(n);
    if (back[0] != 'a' + 9 % 26) {
        fprintf(stderr, "data after reopen wrong\n");
        return 1;
    }
    CHECK(flint_file_close(eng, again));
    /* The tree survived: the link keeps the renamed file's data. */
    CHECK(flint_stat_path(eng, fs, "hard.bin", &st));
    EXPECT(st.nlink, 1);
    EXPECT(flint_stat_path(eng, fs, "data/first.bin", &st), -ENOENT);
    CHECK(flint_stat_path(eng, fs, "data/train", &st));
    EXPECT(st.mode & 07777, 0750);
    EXPECT(flint_getxattr(eng, fs, "hard.bin", "user.label", val, sizeof val), 3);
    if (flint_file_close(eng, 999999) != -ENOENT) {
        fprintf(stderr, "closing a file that does not exist must be -ENOENT\n");
        return 1;
    }
    /* Snapshots: taken, listed, read through, restored, deleted. */
    struct flint_snapshot snap;
    CHECK(flint_snapshot_create(eng, fs, "before", &snap));
    EXPECT(flint_snapshot_create(eng, fs, "before", NULL), -EEXIST);
    CHECK(flint_unlink(eng, fs, "hard.bin"));
    EXPECT(flint_stat_path(eng, fs, "hard.bin", &st), -ENOENT);
    struct flint_snapshot snaps[4];
    EXPECT(flint_snapshot_list(eng, fs, snaps, 4), 1);
    EXPECT(strcmp(snaps[0].name, "before"), 0);
    if (snaps[0].reclaimable == 0) {
        fprintf(stderr, "an unlinked file's blocks are reclaimable from its snapshot\n");
        return 1;
    }
    CHECK(flint_snapshot_restore(eng, fs, "before", "after"));
    CHECK(flint_stat_path(eng, fs, "hard.bin", &st));
    EXPECT(flint_snapshot_list(eng, fs, snaps, 4), 2);
    uint32_t cfs;
    CHECK(flint_snapshot_clone(eng, fs, "exp", &cfs));
    CHECK(flint_unlink(eng, cfs, "hard.bin"));
    CHECK(flint_stat_path(eng, fs, "hard.bin", &st));
    EXPECT(flint_stat_path(eng, cfs, "hard.bin", &st), -ENOENT);
    CHECK(flint_stat_path(eng, cfs, "data/train", &st));
    CHECK(flint_snapshot_delete(eng, fs, "after"));
    CHECK(flint_snapshot_delete(eng, fs, "before"));
    EXPECT(flint_snapshot_delete(eng, fs, "before"), -ENOENT);
    /* A directory quota: counted, enforced with -EDQUOT, renames -EXDEV. */
    struct flint_quota q;
    CHECK(flint_quota_set(eng, fs, "data", 8192 + 64, 0, 0));
    CHECK(flint_quota_get(eng, fs, "data", &q));
    EXPECT(q.state, 1);
    uint64_t qf;
    CHECK(flint_file_open(eng, fs, "data/q.bin", 1, &qf));
    static char qbuf[16384];
    uint64_t room = q.hard - q.used;
    if (room >= sizeof qbuf) {
        fprintf(stderr, "quota room %llu\n", (unsigned long long)room);
        return 1;
    }
    EXPECT(flint_write(eng, qf, 0, qbuf, room + 1), -EDQUOT);
    EXPECT(flint_write(eng, qf, 0, qbuf, room), (long long)room);
    EXPECT(flint_rename(eng, fs, "data/q.bin", "q.bin", 0), -EXDEV);
    EXPECT(flint_quota_get(eng, fs, "data/train", &q), -ENODATA);
    CHECK(flint_quota_unset(eng, fs, "data"));
    EXPECT(flint_quota_get(eng, fs, "data", &q), -ENODATA);
    CHECK(flint_file_close(eng, qf));
    CHECK(flint_engine_close(eng));
    printf("capi_demo: ok\n");
    return 0;
}
