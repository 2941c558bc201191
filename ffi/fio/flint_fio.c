/*
 * libflint_fio.so - an fio external ioengine that runs Flint embedded in
 * the fio process, through libflint's C ABI (flint.h).
 *
 *   ioengine=external:/path/to/libflint_fio.so
 *   flint_devices=ram:a:ram:b:ram:c:ram:d   (or file/device paths, ':'-separated)
 *   flint_device_mib=256  flint_format=1  flint_k=2  flint_m=2  flint_fs=fio
 *
 * Asynchronous: queue() submits to the engine's reactor, getevents() polls
 * completions, so iodepth works. Built against the headers of the installed
 * fio (scripts/fio-headers.sh); fio refuses an engine whose
 * FIO_IOOPS_VERSION differs, and this file refuses to compile against one
 * it was not written for.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "fio.h"
#include "optgroup.h"

#include "flint.h"

#if FIO_IOOPS_VERSION != 31
#error "fio's engine interface changed (FIO_IOOPS_VERSION != 31): update flint_fio.c"
#endif

struct flint_fio_options {
    void *pad; /* fio keeps the thread here */
    char *devices;
    unsigned int device_mib;
    unsigned int format;
    unsigned int k;
    unsigned int m;
    char *fs;
    char *mode;
    char *addr;
    char *org;
    char *key_file;
};

static struct fio_option options[] = {
    {.name = "flint_devices", .lname = "Flint devices", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, devices),
     .help = "':'-separated device paths, or ram:NAME for RAM devices",
     .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID},
    {.name = "flint_device_mib", .lname = "Flint device size", .type = FIO_OPT_INT,
     .off1 = offsetof(struct flint_fio_options, device_mib), .def = "256",
     .help = "Size of each device in MiB (files are created or extended)",
     .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID},
    {.name = "flint_format", .lname = "Flint format", .type = FIO_OPT_BOOL,
     .off1 = offsetof(struct flint_fio_options, format), .def = "0",
     .help = "Format the devices first (overwrites a Flint engine on them)",
     .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID},
    {.name = "flint_k", .lname = "Flint data chunks", .type = FIO_OPT_INT,
     .off1 = offsetof(struct flint_fio_options, k), .def = "2",
     .help = "Data chunks per stripe of the file system", .category = FIO_OPT_C_ENGINE,
     .group = FIO_OPT_G_INVALID},
    {.name = "flint_m", .lname = "Flint parity chunks", .type = FIO_OPT_INT,
     .off1 = offsetof(struct flint_fio_options, m), .def = "1",
     .help = "Parity chunks per stripe of the file system", .category = FIO_OPT_C_ENGINE,
     .group = FIO_OPT_G_INVALID},
    {.name = "flint_fs", .lname = "Flint file system", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, fs), .def = "fio",
     .help = "File system holding the job's files (created if missing)",
     .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID},
    {.name = "flint_mode", .lname = "Flint mode", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, mode), .def = "embedded",
     .help = "embedded (the engine in fio) or remote (a client of flint serve)",
     .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID},
    {.name = "flint_addr", .lname = "Flint appliance address", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, addr), .def = "127.0.0.1:7400",
     .help = "remote: the appliance's data address", .category = FIO_OPT_C_ENGINE,
     .group = FIO_OPT_G_INVALID},
    {.name = "flint_org", .lname = "Flint organization", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, org), .def = "default",
     .help = "remote: organization to open the session as", .category = FIO_OPT_C_ENGINE,
     .group = FIO_OPT_G_INVALID},
    {.name = "flint_key_file", .lname = "Flint key file", .type = FIO_OPT_STR_STORE,
     .off1 = offsetof(struct flint_fio_options, key_file),
     .help = "remote: file holding the organization's key", .category = FIO_OPT_C_ENGINE,
     .group = FIO_OPT_G_INVALID},
    {.name = NULL},
};

struct flint_fio {
    flint_engine *eng;
    uint32_t fs;
    struct io_u **events;
    struct flint_completion *comps;
    unsigned int depth;
};

/* Finishes init once the engine (or session) and file system are open:
 * completion arrays as deep as the job's iodepth. */
static int flint_fio_ready(struct thread_data *td, struct flint_fio *d)
{
    d->depth = td->o.iodepth ? td->o.iodepth : 1;
    d->events = calloc(d->depth, sizeof(*d->events));
    d->comps = calloc(d->depth, sizeof(*d->comps));
    td->io_ops_data = d;
    return 0;
}

static int flint_fio_init_remote(struct thread_data *td, struct flint_fio_options *o)
{
    if (!o->key_file || !*o->key_file) {
        log_err("flint: remote mode needs flint_key_file (the organization's key)\n");
        return 1;
    }
    struct flint_connect_opts opts = {
        .size = sizeof opts, .addr = o->addr, .org = o->org, .key_file = o->key_file};
    struct flint_fio *d = calloc(1, sizeof(*d));
    int rc = flint_connect(&opts, &d->eng);
    if (rc < 0) {
        log_err("flint: cannot connect to %s as %s: %s\n", o->addr, o->org, strerror(-rc));
        free(d);
        return 1;
    }
    rc = flint_fs_lookup(d->eng, o->fs, &d->fs);
    if (rc < 0) {
        log_err("flint: file system %s on %s: %s (create it with `flint fs create`)\n", o->fs,
                o->addr, strerror(-rc));
        flint_engine_close(d->eng);
        free(d);
        return 1;
    }
    return flint_fio_ready(td, d);
}

static int flint_fio_init(struct thread_data *td)
{
    struct flint_fio_options *o = td->eo;
    if (o->mode && strcmp(o->mode, "remote") == 0)
        return flint_fio_init_remote(td, o);
    if (o->mode && strcmp(o->mode, "embedded") != 0) {
        log_err("flint: flint_mode is embedded or remote, not %s\n", o->mode);
        return 1;
    }
    if (!o->devices || !*o->devices) {
        log_err("flint: set flint_devices (':'-separated paths, or ram:NAME)\n");
        return 1;
    }
    /* Split "a:b:ram:c" into paths, keeping "ram:NAME" together. */
    char *copy = strdup(o->devices);
    const char *paths[64];
    uint32_t n = 0;
    for (char *p = strtok(copy, ":"); p && n < 64; p = strtok(NULL, ":")) {
        if (strcmp(p, "ram") == 0) {
            char *name = strtok(NULL, ":");
            char *ram = malloc(strlen(name ? name : "") + 5);
            sprintf(ram, "ram:%s", name ? name : "");
            paths[n++] = ram;
        } else {
            paths[n++] = strdup(p);
        }
    }
    free(copy);
    struct flint_engine_opts opts = {
        .size = sizeof opts,
        .device_paths = paths,
        .device_count = n,
        .device_bytes = (uint64_t)o->device_mib << 20,
        .format = o->format ? 1 : 0,
        .force = 1,
    };
    struct flint_fio *d = calloc(1, sizeof(*d));
    int rc = flint_engine_open(&opts, &d->eng);
    for (uint32_t i = 0; i < n; i++)
        free((void *)paths[i]);
    if (rc < 0) {
        log_err("flint: cannot open the engine: %s\n", strerror(-rc));
        free(d);
        return 1;
    }
    rc = flint_fs_lookup(d->eng, o->fs, &d->fs);
    if (rc == -ENOENT)
        rc = flint_fs_create(d->eng, o->fs, (uint8_t)o->k, (uint8_t)o->m, 1, UINT64_MAX, &d->fs);
    if (rc < 0) {
        log_err("flint: file system %s: %s\n", o->fs, strerror(-rc));
        flint_engine_close(d->eng);
        free(d);
        return 1;
    }
    return flint_fio_ready(td, d);
}

static void flint_fio_cleanup(struct thread_data *td)
{
    struct flint_fio *d = td->io_ops_data;
    if (!d)
        return;
    int rc = flint_engine_close(d->eng);
    if (rc < 0)
        log_err("flint: closing the engine: %s\n", strerror(-rc));
    free(d->events);
    free(d->comps);
    free(d);
    td->io_ops_data = NULL;
}

/* Makes the directories of `path` ("a/b/file" needs "a" and "a/b"), as a
 * job expects its file to be created wherever it names it. */
static int flint_fio_mkdirs(struct flint_fio *d, const char *path)
{
    char dir[4096];
    size_t n = strlen(path);
    if (n >= sizeof dir)
        return -ENAMETOOLONG;
    for (size_t i = 1; i < n; i++) {
        if (path[i] != '/')
            continue;
        memcpy(dir, path, i);
        dir[i] = '\0';
        int rc = flint_mkdir(d->eng, d->fs, dir, 0755);
        if (rc < 0 && rc != -EEXIST)
            return rc;
    }
    return 0;
}

static int flint_fio_open(struct thread_data *td, struct fio_file *f)
{
    struct flint_fio *d = td->io_ops_data;
    uint64_t ino;
    int rc = flint_fio_mkdirs(d, f->file_name);
    if (rc < 0) {
        log_err("flint: directories of %s: %s\n", f->file_name, strerror(-rc));
        return 1;
    }
    rc = flint_file_open(d->eng, d->fs, f->file_name, 1, &ino);
    if (rc < 0) {
        log_err("flint: open %s: %s\n", f->file_name, strerror(-rc));
        return 1;
    }
    f->engine_pos = ino;
    return 0;
}

static int flint_fio_close(struct thread_data *td, struct fio_file *f)
{
    (void)td;
    (void)f;
    return 0;
}

static enum fio_q_status flint_fio_queue(struct thread_data *td, struct io_u *io_u)
{
    struct flint_fio *d = td->io_ops_data;
    fio_ro_check(td, io_u);
    struct flint_io io = {
        .size = sizeof io,
        .ino = io_u->file->engine_pos,
        .offset = io_u->offset,
        .buf = io_u->xfer_buf,
        .len = io_u->xfer_buflen,
        .cb_arg = io_u,
    };
    switch (io_u->ddir) {
    case DDIR_READ:
        io.op = FLINT_OP_READ;
        break;
    case DDIR_WRITE:
        io.op = FLINT_OP_WRITE;
        break;
    case DDIR_SYNC:
    case DDIR_DATASYNC:
        io.op = FLINT_OP_FSYNC;
        break;
    default:
        io_u->error = EINVAL;
        return FIO_Q_COMPLETED;
    }
    int rc = flint_submit(d->eng, &io);
    if (rc == -EAGAIN)
        return FIO_Q_BUSY;
    if (rc < 0) {
        io_u->error = -rc;
        return FIO_Q_COMPLETED;
    }
    return FIO_Q_QUEUED;
}

static int flint_fio_commit(struct thread_data *td)
{
    (void)td; /* flint_submit already handed each operation to the engine */
    return 0;
}

static int flint_fio_getevents(struct thread_data *td, unsigned int min, unsigned int max,
                               const struct timespec *t)
{
    struct flint_fio *d = td->io_ops_data;
    (void)t;
    unsigned int got = 0;
    if (max > d->depth)
        max = d->depth;
    while (got < max) {
        /* Wait (up to 1 ms at a time) only while fio needs more events. */
        int n = got < min ? flint_wait(d->eng, d->comps, (int)(max - got), 1000)
                          : flint_poll(d->eng, d->comps, (int)(max - got));
        if (n < 0)
            return n;
        for (int i = 0; i < n; i++) {
            struct io_u *io_u = d->comps[i].cb_arg;
            int64_t r = d->comps[i].result;
            if (r < 0)
                io_u->error = (int)-r;
            else if (io_u->ddir != DDIR_SYNC && io_u->ddir != DDIR_DATASYNC &&
                     (uint64_t)r < io_u->xfer_buflen)
                io_u->resid = io_u->xfer_buflen - (uint64_t)r;
            d->events[got++] = io_u;
        }
        if (got >= min)
            break;
        if (n == 0)
            sched_yield();
    }
    return (int)got;
}

static struct io_u *flint_fio_event(struct thread_data *td, int ev)
{
    struct flint_fio *d = td->io_ops_data;
    return d->events[ev];
}

struct ioengine_ops ioengine = {
    .name = "flint",
    .version = FIO_IOOPS_VERSION,
    .init = flint_fio_init,
    .cleanup = flint_fio_cleanup,
    .open_file = flint_fio_open,
    .close_file = flint_fio_close,
    .queue = flint_fio_queue,
    .commit = flint_fio_commit,
    .getevents = flint_fio_getevents,
    .event = flint_fio_event,
    .options = options,
    .option_struct_size = sizeof(struct flint_fio_options),
    .flags = FIO_DISKLESSIO | FIO_NOEXTEND | FIO_NODISKUTIL,
};
