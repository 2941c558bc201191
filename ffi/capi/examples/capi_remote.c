/* A C program using a running Flint appliance through flint.h: connect as
 * an organization (challenge-response on its key), write and read
 * synchronously and asynchronously, a directory by path, check refusals.
 * Usage: capi_remote ADDR ORG KEY_FILE FS */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flint.h"

#define CHECK(call)                                                          \
    do {                                                                     \
        long long rc_ = (long long)(call);                                   \
        if (rc_ < 0) {                                                       \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,   \
                    #call, strerror((int)-rc_));                             \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ADDR ORG KEY_FILE FS\n", argv[0]);
        return 2;
    }
    struct flint_connect_opts opts = {
        .size = sizeof opts, .addr = argv[1], .org = argv[2], .key_file = argv[3]};
    flint_engine *eng = NULL;
    CHECK(flint_connect(&opts, &eng));

    /* A wrong key is refused; the key never crossed the wire either way. */
    struct flint_connect_opts wrong = opts;
    wrong.key_file = NULL;
    wrong.key_hex = "0000000000000000000000000000000000000000000000000000000000000000";
    flint_engine *bad = NULL;
    int rc = flint_connect(&wrong, &bad);
    if (rc != -EACCES) {
        fprintf(stderr, "wrong key: expected -EACCES, got %d\n", rc);
        return 1;
    }

    uint32_t fs;
    CHECK(flint_fs_lookup(eng, argv[4], &fs));
    if (flint_fs_create(eng, "x", 2, 1, 1, 1 << 20, &fs) != -EOPNOTSUPP) {
        fprintf(stderr, "fs_create on a remote handle must be -EOPNOTSUPP\n");
        return 1;
    }
    uint64_t ino;
    CHECK(flint_file_open(eng, fs, "capi-remote", 1, &ino));

    /* 1 MiB synchronously (it travels in many packets). */
    size_t big = 1 << 20;
    unsigned char *w = malloc(big), *r = malloc(big);
    for (size_t i = 0; i < big; i++)
        w[i] = (unsigned char)(i * 131 + 7);
    CHECK(flint_write(eng, ino, 0, w, big));
    CHECK(flint_fsync(eng));
    CHECK(flint_read(eng, ino, 0, r, big));
    if (memcmp(w, r, big) != 0) {
        fprintf(stderr, "synchronous read-back differs\n");
        return 1;
    }

    /* 64 asynchronous 4 KiB writes in flight, then reads, collected with
     * flint_wait. */
    enum { N = 64, BS = 4096 };
    static unsigned char bufs[N][BS];
    struct flint_completion done[N];
    for (int pass = 0; pass < 2; pass++) {
        int submitted = 0, completed = 0;
        while (completed < N) {
            while (submitted < N) {
                if (pass == 0)
                    memset(bufs[submitted], 'a' + submitted % 26, BS);
                struct flint_io io = {
                    .size = sizeof io,
                    .op = pass == 0 ? FLINT_OP_WRITE : FLINT_OP_READ,
                    .ino = ino,
                    .offset = big + (uint64_t)submitted * BS,
                    .buf = bufs[submitted],
                    .len = BS,
                    .cb_arg = bufs[submitted],
                };
                if (pass == 1)
                    memset(bufs[submitted], 0, BS);
                rc = flint_submit(eng, &io);
                if (rc == -EAGAIN)
                    break;
                CHECK(rc);
                submitted++;
            }
            int n = flint_wait(eng, done, N, 1000000);
            CHECK(n);
            for (int i = 0; i < n; i++) {
                if (done[i].result != BS) {
                    fprintf(stderr, "async op failed: %lld\n", (long long)done[i].result);
                    return 1;
                }
            }
            completed += n;
        }
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < BS; j++)
            if (bufs[i][j] != 'a' + i % 26) {
                fprintf(stderr, "async read-back of block %d differs\n", i);
                return 1;
            }
    CHECK(flint_fsync(eng));
    CHECK(flint_file_close(eng, ino));
    /* A directory over the protocol: made, filled, listed, emptied. */
    uint64_t f;
    CHECK(flint_mkdir(eng, fs, "capi-remote-dir", 0755));
    CHECK(flint_file_open(eng, fs, "capi-remote-dir/a", 1, &f));
    CHECK(flint_write(eng, f, 0, "abc", 3));
    struct flint_stat st = {.size = sizeof st};
    CHECK(flint_stat_path(eng, fs, "capi-remote-dir/a", &st));
    struct flint_dirent ent[4];
    rc = flint_readdir(eng, fs, "capi-remote-dir", 0, ent, 4);
    if (st.st_size != 3 || rc != 1 || strcmp(ent[0].name, "a") != 0) {
        fprintf(stderr, "remote directory: size %llu, %d entries\n",
                (unsigned long long)st.st_size, rc);
        return 1;
    }
    if (flint_rmdir(eng, fs, "capi-remote-dir") != -ENOTEMPTY) {
        fprintf(stderr, "rmdir of a full directory must be -ENOTEMPTY\n");
        return 1;
    }
    CHECK(flint_unlink(eng, fs, "capi-remote-dir/a"));
    CHECK(flint_rmdir(eng, fs, "capi-remote-dir"));
    CHECK(flint_engine_close(eng));
    free(w);
    free(r);
    printf("capi_remote: 1 MiB sync and 64 async 4 KiB writes and reads verified; a directory by path; wrong key refused\n");
    return 0;
}
