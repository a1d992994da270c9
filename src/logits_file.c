/* Logits dump file (grok1-run --dump-logits): one float32 dataset
 * /logits/<k> of shape (n, V) per request k, filled in row pieces, as
 * PATH.partial until g1_logits_file_finish renames it to PATH. An
 * interrupted run leaves PATH.partial closed and whole for a resume. Each
 * dataset is made with the request's token ids (attribute "tokens", int32,
 * one per row) and its id (attribute "id", the JSON text), and each
 * finished one carries the "crc32" attribute of a checkpoint's tensors
 * (G1_H5_CRC_ATTR: one CRC-32 of its float32 values), put on with its last
 * rows; a resume compares the kept ones, grok1-merge every one it joins. */
#include <errno.h>
#include <hdf5.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "durable.h"
#include "fnv1a.h"
#include "h5util.h"

/* A request whose rows are being written: the CRC-32 of rows [0, next)
 * while they come in order (else read back at the last rows). */
typedef struct pending {
    int64_t k;
    int next, in_order;
    uint32_t crc;
} pending;

/* An fsync of the dump on a thread of its own, so that rank 0's work
 * does not wait for the disk. */
typedef struct syncer {
    pthread_t thread;
    int running;        /* started and not yet joined */
    int fd;             /* a dup of the file's descriptor, for the thread */
    int64_t k;          /* the datasets it makes durable: logits/<j>, j <= k */
    atomic_int done;    /* the thread's fsync returned */
    int failed;         /* ... with an error (no mark then) */
} syncer;

struct g1_logits_file {
    hid_t file, group;
    char *path, *tmp;
    int vocab_size;
    char *run; /* the attribute "run" of a dump opened to continue or read; NULL: none */
    int writing; /* opened to write (created or continued): space may be reserved past its end */
    pending *pend;
    size_t npend, cap;
    /* the durable mark (G1_DUMP_SYNCED): results out, the last sync */
    int64_t out_k, synced;
    double sync_every, last_sync;
    syncer sy;
    /* g1_logits_file_defer_flush: a request's last rows are not followed
     * by a flush (the caller flushes, g1_logits_file_flush); flushes: the
     * H5Fflush calls of finished requests so far */
    int defer_flush;
    int64_t flushes;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *sync_main(void *arg)
{
    syncer *sy = arg;
    sy->failed = fsync(sy->fd) != 0;
    atomic_store(&sy->done, 1);
    return NULL;
}

/* The durable mark: dataset G1_DUMP_SYNCED (a scalar int64, its storage
 * allocated when it is made, so that a new mark is 8 bytes written in
 * place: no HDF5 metadata changes, which a kill could tear) set to k. */
static herr_t put_synced(g1_logits_file *f, int64_t k)
{
    hid_t d = -1;
    if (H5Lexists(f->file, G1_DUMP_SYNCED, H5P_DEFAULT) > 0) {
        d = H5Dopen2(f->file, G1_DUMP_SYNCED, H5P_DEFAULT);
    } else {
        hid_t sp = H5Screate(H5S_SCALAR), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
        d = H5Dcreate2(f->file, G1_DUMP_SYNCED, H5T_STD_I64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Pclose(dcpl);
        H5Sclose(sp);
    }
    herr_t e = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &k);
    if (d >= 0)
        H5Dclose(d);
    if (e >= 0)
        f->synced = k;
    return e;
}

/* Close what is open of a dataset's type, space and the dataset. */
static void close_tsd(hid_t t, hid_t sp, hid_t d)
{
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
}

/* The mark of a dump being continued; -1 when it has none. */
static int64_t get_synced(hid_t file)
{
    int64_t k = -1;
    hid_t d = H5Lexists(file, G1_DUMP_SYNCED, H5P_DEFAULT) > 0 ? H5Dopen2(file, G1_DUMP_SYNCED, H5P_DEFAULT) : -1;
    hid_t sp = d < 0 ? -1 : H5Dget_space(d), t = d < 0 ? -1 : H5Dget_type(d);
    if (!(sp >= 0 && t >= 0 && H5Sget_simple_extent_type(sp) == H5S_SCALAR && H5Tget_class(t) == H5T_INTEGER &&
          H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &k) >= 0 && k >= -1))
        k = -1;
    close_tsd(t, sp, d);
    return k;
}

/* The thread joined (waiting for it when `wait`), and the mark put on when
 * its fsync succeeded: 0, or -1 when writing the mark failed. */
static herr_t sync_reap(g1_logits_file *f, int wait)
{
    syncer *sy = &f->sy;
    if (!sy->running || (!wait && !atomic_load(&sy->done)))
        return 0;
    pthread_join(sy->thread, NULL);
    close(sy->fd);
    sy->running = 0;
    if (sy->failed || f->file < 0)
        return 0;
    return put_synced(f, sy->k);
}

/* Start an fsync when the last began sync_every seconds ago and results
 * came out since: the data of every dataset whose result is out was
 * flushed to the kernel before the result (g1_logits_file_write), so once
 * the fsync returns they are on disk. */
static void sync_maybe(g1_logits_file *f)
{
    syncer *sy = &f->sy;
    double now = mono_s();
    if (sy->running || f->out_k <= f->synced || f->sync_every < 0 || now - f->last_sync < f->sync_every)
        return;
    int fd = g1_h5_fd(f->file);
    fd = fd < 0 ? -1 : dup(fd);
    if (fd < 0)
        return;
    sy->fd = fd;
    sy->k = f->out_k;
    sy->failed = 0;
    atomic_store(&sy->done, 0);
    f->last_sync = now;
    if (pthread_create(&sy->thread, NULL, sync_main, sy) != 0) {
        close(fd);
        return;
    }
    sy->running = 1;
}

/* The writer's sync settings: every GROK1_DUMP_SYNC_S seconds (default
 * 30; a test sets 0: after every result; < 0: never). */
static void sync_init(g1_logits_file *f)
{
    const char *e = getenv("GROK1_DUMP_SYNC_S");
    f->sync_every = e && *e ? atof(e) : 30.0;
    f->last_sync = mono_s();
    f->out_k = f->synced = -1;
}


/* File access for writing a dump: the 1.8 file format (HDF5 1.8 and
 * later read it), whose dense attribute storage lets a request's tokens
 * (4 bytes a token) pass the 64 KiB an attribute gets in the oldest
 * format: prompts of over 16K tokens. */
static hid_t write_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 2)
    if (fapl >= 0)
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
#else
    if (fapl >= 0)
        H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
#endif
    return fapl;
}

/* Room reserved past a dump's end beyond what is written next: HDF5's
 * metadata (object headers, the group's links, attributes). */
#define ROOM_MARGIN ((uint64_t)1 << 20)

/* Reserve `bytes` (and ROOM_MARGIN) at the end of file before HDF5
 * writes them (g1_h5_reserve); a failure names `what` and says what
 * statvfs shows free. */
static g1_status reserve(hid_t file, const char *path, const char *what, double bytes)
{
    double avail;
    if (g1_h5_reserve(file, (uint64_t)bytes + ROOM_MARGIN, &avail) == 0)
        return G1_OK;
    int quota = errno == EDQUOT;
    char a[32], b[32] = "";
    g1_bytes_text(a, sizeof a, bytes + (double)ROOM_MARGIN);
    if (avail >= 0)
        g1_bytes_text(b, sizeof b, avail);
    if (avail >= 0 && !strcmp(a, b)) { /* the same when rounded: in bytes */
        snprintf(a, sizeof a, "%.0f bytes", bytes + (double)ROOM_MARGIN);
        snprintf(b, sizeof b, "%.0f bytes", avail);
    }
    return G1_FAIL(G1_ERR_IO, "%s: no room for %s: it needs %s with HDF5's metadata, and the file system has %s free%s",
                   path, what, a, avail >= 0 ? b : "an unknown amount", quota ? " (the quota is reached)" : "");
}

static void free_file(g1_logits_file *f)
{
    free(f->pend);
    free(f->run);
    free(f->path);
    free(f->tmp);
    free(f);
}

/* The root attributes: format, vocab_size, and run (when given). */
static herr_t put_attrs(hid_t file, int vocab_size, const char *run)
{
    herr_t e = g1_h5_put_string(file, "format", "grok1-logits");
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t b = e < 0 ? -1 : H5Acreate2(file, "vocab_size", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    e = b < 0 ? -1 : H5Awrite(b, H5T_NATIVE_INT, &vocab_size);
    if (b >= 0)
        H5Aclose(b);
    H5Sclose(sp);
    if (e >= 0 && run)
        e = g1_h5_put_string(file, "run", run);
    return e;
}

/* The root attribute "run" (a string) of an open dump, malloc'd; NULL when
 * it has none, or when memory ran out reading it (then *nomem is 1, else
 * 0): not a dump without a record, whose run goes unchecked. */
static char *get_run(hid_t file, int *nomem) { return g1_h5_get_string(file, "run", (size_t)1 << 20, nomem); }

const char *g1_logits_file_run(const g1_logits_file *f) { return f->run; }

/* f with path and PATH.partial set, nothing open */
static g1_status new_file(const char *path, int vocab_size, g1_logits_file **out)
{
    *out = NULL;
    if (!path || !*path || vocab_size <= 0)
        return G1_FAIL(G1_ERR_ARG, "logits file: empty path or vocab_size %d", vocab_size);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g1_logits_file *f = calloc(1, sizeof *f);
    size_t n = strlen(path) + sizeof ".partial";
    char *p = strdup(path), *tmp = malloc(n);
    if (!f || !p || !tmp) {
        free(f);
        free(p);
        free(tmp);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    snprintf(tmp, n, "%s.partial", path);
    *f = (g1_logits_file){.file = -1, .group = -1, .path = p, .tmp = tmp, .vocab_size = vocab_size};
    *out = f;
    return G1_OK;
}

static void close_file(g1_logits_file *f)
{
    (void)sync_reap(f, 1);
    if (f->group >= 0)
        H5Gclose(f->group);
    if (f->file >= 0)
        g1_h5_close(f->file);
    f->group = f->file = -1;
}

g1_status g1_logits_file_create(const char *path, int vocab_size, const char *run, g1_logits_file **out)
{
    g1_logits_file *f;
    G1_TRY(new_file(path, vocab_size, &f));
    hid_t fapl = write_fapl();
    /* made anew and exclusively: a symbolic link found at DUMP.partial is
     * removed, not written through (TRUNC would empty the file it names) */
    if (unlink(f->tmp) != 0 && errno != ENOENT) {
        g1_status st = G1_FAIL(G1_ERR_IO, "cannot remove %s to make the logits file anew: %s", f->tmp,
                               strerror(errno));
        H5Pclose(fapl);
        free_file(f);
        return st;
    }
    f->file = H5Fcreate(f->tmp, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    f->writing = 1;
    sync_init(f);
    H5Pclose(fapl);
    if (f->file < 0) {
        char d[256];
        g1_h5_detail(d);
        g1_status st = G1_FAIL(G1_ERR_IO, "cannot create logits file %s: %s", f->tmp, d);
        free_file(f);
        return st;
    }
    g1_status room = reserve(f->file, f->tmp, "a new logits dump", 0);
    if (room != G1_OK) {
        close_file(f);
        remove(f->tmp);
        free_file(f);
        return room;
    }
    if (put_attrs(f->file, vocab_size, run) >= 0)
        f->group = H5Gcreate2(f->file, "logits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    /* on disk whole from the start, before any result is written */
    if (f->group >= 0 && H5Fflush(f->file, H5F_SCOPE_LOCAL) < 0) {
        H5Gclose(f->group);
        f->group = -1;
    }
    if (f->group < 0) {
        g1_status st = G1_FAIL(G1_ERR_IO, "%s: cannot create group logits", f->tmp);
        close_file(f);
        remove(f->tmp);
        free_file(f);
        return st;
    }
    *out = f;
    return G1_OK;
}

int g1_logits_file_present(const char *path)
{
    g1_logits_file *f;
    if (new_file(path, 1, &f) != G1_OK)
        return -1; /* not "absent": a resume would be refused for a dump that is there */
    struct stat sb;
    int yes = stat(f->tmp, &sb) == 0 || stat(f->path, &sb) == 0;
    free_file(f);
    return yes;
}

/* f->file open (or < 0): its vocab_size (-1 when unreadable), and, when it
 * is vocab_size's, group logits (f->group) and the attribute run (*nomem: 1
 * when memory ran out reading it, else 0). */
static int open_group(g1_logits_file *f, int vocab_size, int *nomem)
{
    *nomem = 0;
    int v = -1;
    if (f->file >= 0 && H5Aexists(f->file, "vocab_size") > 0) {
        hid_t a = H5Aopen(f->file, "vocab_size", H5P_DEFAULT);
        if (a < 0 || H5Aread(a, H5T_NATIVE_INT, &v) < 0)
            v = -1;
        if (a >= 0)
            H5Aclose(a);
    }
    if (f->file >= 0 && v == vocab_size && H5Lexists(f->file, "logits", H5P_DEFAULT) > 0)
        f->group = H5Gopen2(f->file, "logits", H5P_DEFAULT);
    if (f->group >= 0)
        f->run = get_run(f->file, nomem);
    return v;
}

g1_status g1_logits_file_resume(const char *path, int vocab_size, g1_logits_file **out)
{
    g1_logits_file *f;
    G1_TRY(new_file(path, vocab_size, &f));
    struct stat sb;
    /* never written through a link: the run makes DUMP.partial itself (an
     * I/O failure, so that the run stops rather than sets it aside) */
    if (lstat(f->tmp, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        g1_status st = G1_FAIL(G1_ERR_IO, "cannot continue the logits dump: %s is a symbolic link, not the file an "
                                          "interrupted run left (a resume would write through it): remove it",
                               f->tmp);
        free_file(f);
        return st;
    }
    /* a finished dump is continued as the partial file it was */
    if (stat(f->tmp, &sb) != 0) {
        if (stat(f->path, &sb) != 0) {
            free_file(f);
            *out = NULL;
            return G1_OK;
        }
        if (rename(f->path, f->tmp) != 0) {
            g1_status st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", f->path, f->tmp, strerror(errno));
            free_file(f);
            return st;
        }
    }
    hid_t fapl = write_fapl();
    f->file = H5Fopen(f->tmp, H5F_ACC_RDWR, fapl);
    f->writing = 1;
    sync_init(f);
    H5Pclose(fapl);
    int nomem;
    int v = open_group(f, vocab_size, &nomem);
    if (f->group >= 0)
        f->synced = get_synced(f->file);
    if (nomem) { /* its record of the run unread: not to be continued unchecked */
        g1_status st = G1_FAIL(G1_ERR_NOMEM, "out of memory reading the attribute run of the logits dump %s", f->tmp);
        close_file(f);
        free_file(f);
        return st;
    }
    if (f->group < 0) {
        g1_status st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s cannot be continued: %s", f->tmp,
                               f->file < 0 ? "it is not a readable HDF5 file (a job killed without warning can "
                                             "leave it so)"
                               : v != vocab_size ? "it is not a grok1 logits dump of this model's vocabulary"
                                                 : "it has no group logits");
        close_file(f);
        free_file(f);
        return st;
    }
    *out = f;
    return G1_OK;
}

g1_status g1_logits_file_open_read(const char *path, int vocab_size, g1_logits_file **out)
{
    g1_logits_file *f;
    G1_TRY(new_file(path, vocab_size, &f));
    struct stat sb;
    const char *at = stat(f->tmp, &sb) == 0 ? f->tmp : f->path;
    hid_t fapl = g1_h5_read_fapl();
    f->file = H5Fopen(at, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    int nomem;
    open_group(f, vocab_size, &nomem);
    f->synced = f->group >= 0 ? get_synced(f->file) : -1; /* which values g1_logits_file_look reads back */
    if (nomem) {
        g1_status st = G1_FAIL(G1_ERR_NOMEM, "out of memory reading the attribute run of the logits dump %s", at);
        close_file(f);
        free_file(f);
        *out = NULL;
        return st;
    }
    if (f->group < 0) {
        g1_status st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s cannot be read as a dump of this model", at);
        close_file(f);
        free_file(f);
        *out = NULL;
        return st;
    }
    *out = f;
    return G1_OK;
}

/* The request's attributes on its new dataset d: its n token ids and its
 * id (JSON text); either may be NULL (not recorded). */
static herr_t put_request_attrs(hid_t d, int n, const int *tokens, const char *id_json)
{
    herr_t e = tokens ? g1_h5_put_ints(d, G1_DUMP_TOKENS_ATTR, H5T_STD_I32LE, H5T_NATIVE_INT, tokens, (size_t)n) : 0;
    if (e >= 0 && id_json)
        e = g1_h5_put_string(d, G1_DUMP_ID_ATTR, id_json);
    return e;
}

uint64_t g1_tokens_fnv1a64(const int *tokens, size_t n)
{
    uint64_t h = G1_FNV1A64_START;
    for (size_t i = 0; i < n; i++) {
        uint32_t t = (uint32_t)tokens[i];
        unsigned char le[4] = {(unsigned char)t, (unsigned char)(t >> 8), (unsigned char)(t >> 16),
                               (unsigned char)(t >> 24)};
        h = g1_fnv1a64(h, le, 4);
    }
    return h;
}

/* The "tokens" attribute of dataset d (n rows) into v (n values; NULL:
 * only looked at): 1 when it is there as n integers in [0, vocab_size),
 * 0 when absent, -1 otherwise (another shape or type, unreadable, a value
 * out of range). */
static int get_tokens(hid_t d, int n, int vocab_size, int *v)
{
    /* without the caller's buffer its length first: a forged row count must
     * not size an allocation (8 GiB at 2^31 - 1 rows) for an attribute that
     * is absent or shorter; into the caller's n values it is read at once
     * (a longer one is refused unread, a shorter one fills fewer) */
    int len = v ? n : g1_h5_get_ints(d, G1_DUMP_TOKENS_ATTR, H5T_NATIVE_INT, NULL, (size_t)n);
    if (len != n)
        return len == 0 ? 0 : -1;
    int *buf = v ? v : malloc((size_t)n * sizeof *buf);
    int got = buf ? g1_h5_get_ints(d, G1_DUMP_TOKENS_ATTR, H5T_NATIVE_INT, buf, (size_t)n) : -1;
    int ok = got == n;
    for (int i = 0; ok && i < n; i++)
        ok = buf[i] >= 0 && buf[i] < vocab_size;
    if (buf != v)
        free(buf);
    return got == 0 ? 0 : ok ? 1 : -1;
}

/* The "id" attribute of dataset d, malloc'd; NULL when absent (*bad: 0),
 * not a string (*bad: 1) or when memory ran out (*bad: -1). */
static char *get_id(hid_t d, int *bad)
{
    int there = H5Aexists(d, G1_DUMP_ID_ATTR), nomem = 0;
    char *id = there > 0 ? g1_h5_get_string(d, G1_DUMP_ID_ATTR, (size_t)1 << 20, &nomem) : NULL;
    *bad = nomem ? -1 : there < 0 || (there > 0 && !id);
    return id;
}

/* Open /logits/<k>, creating it (n, V) on first use with the request's
 * attributes; check its rows. */
static g1_status open_request(g1_logits_file *f, const char *name, int n_rows_total, const int *tokens,
                              const char *id_json, hid_t *out)
{
    hsize_t dims[2] = {(hsize_t)n_rows_total, (hsize_t)f->vocab_size};
    if (H5Lexists(f->group, name, H5P_DEFAULT) > 0) {
        *out = H5Dopen2(f->group, name, H5P_DEFAULT);
        hid_t sp = *out < 0 ? -1 : H5Dget_space(*out);
        hsize_t have[2] = {0, 0};
        int ok = sp >= 0 && H5Sget_simple_extent_dims(sp, have, NULL) == 2 && have[0] == dims[0] &&
                 have[1] == dims[1];
        if (sp >= 0)
            H5Sclose(sp);
        if (!ok) {
            if (*out >= 0)
                H5Dclose(*out);
            return G1_FAIL(G1_ERR_ARG, "logits file: logits/%s has %llu rows, not %d", name,
                           (unsigned long long)have[0], n_rows_total);
        }
        return G1_OK;
    }
    /* its room on disk first: a full disk (or a quota) stops the run here,
     * between requests, with the file whole (g1_h5_reserve) */
    char what[64];
    snprintf(what, sizeof what, "logits/%s", name);
    G1_TRY(reserve(f->file, f->tmp, what,
                   (double)n_rows_total * ((double)f->vocab_size * sizeof(float) + sizeof(int32_t)) +
                       (double)(id_json ? strlen(id_json) : 0)));
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    *out = H5Dcreate2(f->group, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (*out < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot create dataset logits/%s", f->tmp, name);
    if (put_request_attrs(*out, n_rows_total, tokens, id_json) < 0) {
        H5Dclose(*out);
        return G1_FAIL(G1_ERR_IO, "%s: cannot write the attributes of logits/%s (disk full?)", f->tmp, name);
    }
    return G1_OK;
}

/* Request k's entry in f->pend, added when absent; NULL: no memory. */
static pending *pending_of(g1_logits_file *f, int64_t k)
{
    for (size_t i = 0; i < f->npend; i++)
        if (f->pend[i].k == k)
            return &f->pend[i];
    if (f->npend == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        pending *v = realloc(f->pend, cap * sizeof *v);
        if (!v)
            return NULL;
        f->pend = v;
        f->cap = cap;
    }
    f->pend[f->npend] = (pending){.k = k, .next = 0, .in_order = 1, .crc = 0};
    return &f->pend[f->npend++];
}

/* Request k's rows are all written: the checksum on its dataset d. */
static herr_t put_crc(g1_logits_file *f, hid_t d, pending *p, int n_rows_total)
{
    uint32_t crc = p->crc;
    hsize_t dims[2] = {(hsize_t)n_rows_total, (hsize_t)f->vocab_size};
    /* rows out of order, or written twice: from the file */
    if (!(p->in_order && p->next == n_rows_total) &&
        g1_h5_crc_of(d, H5T_NATIVE_FLOAT, sizeof(float), 2, dims, -1, &crc, NULL) < 0)
        return -1;
    *p = f->pend[--f->npend];
    return g1_h5_put_crcs(d, &crc, 1);
}

g1_status g1_logits_file_write(g1_logits_file *f, int64_t k, int n_rows_total, int row0, int nrows,
                               const float *logits, const int *tokens, const char *id_json)
{
    if (k < 0 || n_rows_total <= 0 || row0 < 0 || nrows < 0 || row0 + nrows > n_rows_total)
        return G1_FAIL(G1_ERR_ARG, "logits file: request %lld rows [%d,%d) outside its %d rows", (long long)k, row0,
                       row0 + nrows, n_rows_total);
    char name[32];
    snprintf(name, sizeof name, "%lld", (long long)k);
    pending *p = pending_of(f, k);
    if (!p)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    hid_t d;
    G1_TRY(open_request(f, name, n_rows_total, tokens, id_json, &d));
    herr_t e = 0;
    if (nrows > 0) {
        hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)nrows, (hsize_t)f->vocab_size};
        e = g1_h5_write_slab(d, H5T_NATIVE_FLOAT, 2, start, count, logits);
        size_t n = (size_t)nrows * (size_t)f->vocab_size * sizeof *logits;
        if (p->in_order && row0 == p->next) {
            p->crc = p->next ? g1_h5_crc32_join(p->crc, g1_h5_crc32(logits, n), n) : g1_h5_crc32(logits, n);
            p->next += nrows;
        } else {
            p->in_order = 0;
        }
    }
    /* a request's last rows: its checksum, then to disk (unless the caller
     * flushes several requests at once), so that a job killed without
     * warning most likely leaves a file a resume can open */
    int last = row0 + nrows == n_rows_total;
    if (e >= 0 && last)
        e = put_crc(f, d, p, n_rows_total);
    H5Dclose(d);
    if (e >= 0 && last && !f->defer_flush) {
        e = H5Fflush(f->file, H5F_SCOPE_LOCAL);
        f->flushes++;
    }
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "%s: writing logits/%s failed (disk full?)", f->tmp, name);
    return G1_OK;
}

void g1_logits_file_defer_flush(g1_logits_file *f, int on) { f->defer_flush = on; }

g1_status g1_logits_file_flush(g1_logits_file *f)
{
    f->flushes++;
    if (H5Fflush(f->file, H5F_SCOPE_LOCAL) < 0)
        return G1_FAIL(G1_ERR_IO, "%s: flushing the logits failed (disk full?)", f->tmp);
    return G1_OK;
}

int64_t g1_logits_file_flushes(const g1_logits_file *f) { return f->flushes; }

static g1_status check_crc(hid_t d, const char *where, const char *name, int vocab_size, uint32_t *crc, int *had);

int g1_logits_file_look(g1_logits_file *f, int64_t k, int n_rows_total, const int *tokens, const char *id_json,
                        int check, int *read_back)
{
    char name[32];
    snprintf(name, sizeof name, "%lld", (long long)k);
    *read_back = 0;
    /* no H5Lexists first: the open looks the name up (a second lookup cost
     * 5% of a resume of 100k kept results); one that is not there fails,
     * silently (new_file turned HDF5's error printing off) */
    hid_t d = H5Dopen2(f->group, name, H5P_DEFAULT);
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    hsize_t have[2] = {0, 0};
    int r = sp >= 0 && H5Sget_simple_extent_dims(sp, have, NULL) == 2 && have[0] == (hsize_t)n_rows_total &&
                    have[1] == (hsize_t)f->vocab_size
                ? G1_DUMP_THERE
                : G1_DUMP_ABSENT;
    if (sp >= 0)
        H5Sclose(sp);
    /* what it records of its request (a dump from before the attributes
     * has none: taken as it is) */
    int *v = r == G1_DUMP_THERE && tokens ? malloc((size_t)n_rows_total * sizeof *v) : NULL;
    if (v) {
        int got = get_tokens(d, n_rows_total, f->vocab_size, v);
        if (got < 0 || (got == 1 && memcmp(v, tokens, (size_t)n_rows_total * sizeof *v)))
            r = G1_DUMP_OTHER_TOKENS;
        free(v);
    } else if (r == G1_DUMP_THERE && tokens) { /* not known to be there; not "absent" either */
        r = G1_DUMP_NOMEM;
        (void)G1_FAIL(G1_ERR_NOMEM, "out of memory for the tokens of logits/%s", name);
    }
    if (r == G1_DUMP_THERE && id_json) {
        int bad;
        char *id = get_id(d, &bad);
        if (bad < 0) {
            r = G1_DUMP_NOMEM;
            (void)G1_FAIL(G1_ERR_NOMEM, "out of memory for the id of logits/%s", name);
        } else if (bad || (id && strcmp(id, id_json))) {
            r = G1_DUMP_OTHER_ID;
        }
        free(id);
    }
    /* its values, as g1_logits_file_prune reads them: while the dataset's
     * header is in the cache, so that the prune need not open it again */
    if (r == G1_DUMP_THERE && check && k > f->synced) {
        uint32_t crc;
        int had;
        *read_back = 1;
        g1_status cs = check_crc(d, "", name, f->vocab_size, &crc, &had);
        if (cs != G1_OK)
            r = cs == G1_ERR_NOMEM ? G1_DUMP_NOMEM : G1_DUMP_DAMAGED; /* no memory says nothing of the dump */
    }
    if (d >= 0)
        H5Dclose(d);
    return r;
}

int g1_logits_file_has(g1_logits_file *f, int64_t k, int n_rows_total, const int *tokens, const char *id_json)
{
    int read_back;
    return g1_logits_file_look(f, k, n_rows_total, tokens, id_json, 0, &read_back);
}

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static herr_t collect(hid_t group, const char *name, const H5L_info_t *info, void *ctx)
{
    (void)group, (void)info;
    names *ns = ctx;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? 2 * ns->cap : 256;
        char **v = realloc(ns->v, cap * sizeof *v);
        if (!v) {
            g1_h5_nomem(); /* the listing's message from HDF5's stack says so */
            return -1;
        }
        ns->v = v;
        ns->cap = cap;
    }
    if (!(ns->v[ns->n] = strdup(name))) {
        g1_h5_nomem();
        return -1;
    }
    ns->n++;
    return 0;
}

/* Request dataset d (n x V float32) against its checksum: G1_OK when it
 * matches or has none (*had says which); *crc: the CRC-32 of what it holds
 * (0 when not read). Messages start with `where` ("" or "FILE: "). */
static g1_status check_crc(hid_t d, const char *where, const char *name, int vocab_size, uint32_t *crc, int *had)
{
    uint32_t rec;
    int have = g1_h5_get_crcs(d, &rec, 1);
    *crc = 0;
    *had = have == 1;
    if (have < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%slogits/%s has a %s attribute that is not one unsigned integer", where, name,
                       G1_H5_CRC_ATTR);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, dims, NULL) == 2 &&
             dims[0] > 0 && dims[1] == (hsize_t)vocab_size;
    if (sp >= 0)
        H5Sclose(sp);
    if (!ok)
        return G1_FAIL(G1_ERR_FORMAT, "%slogits/%s is not a dataset of (n, %d)", where, name, vocab_size);
    /* a shape that declares more than the file holds (forged, or never
     * written) would read fill values, for hours at a forged row count */
    char why[400];
    if (!g1_h5_stored(d, why, sizeof why))
        return G1_FAIL(G1_ERR_FORMAT, "%slogits/%s cannot be read: %s", where, name, why);
    if (g1_h5_crc_of(d, H5T_NATIVE_FLOAT, sizeof(float), 2, dims, -1, crc, NULL) < 0) {
        if (g1_h5_out_of_memory()) /* not the file's fault */
            return G1_FAIL(G1_ERR_NOMEM, "%sout of memory reading logits/%s", where, name);
        char detail[256];
        g1_h5_detail(detail);
        return G1_FAIL(G1_ERR_FORMAT, "%slogits/%s cannot be read (%s)", where, name, detail);
    }
    if (have == 1 && *crc != rec)
        return G1_FAIL(G1_ERR_FORMAT,
                       "%slogits/%s does not match its checksum (CRC-32 %08x; the file records %08x): the file is "
                       "damaged (cut short or changed since grok1-run wrote it)",
                       where, name, (unsigned)*crc, (unsigned)rec);
    return G1_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

g1_status g1_logits_file_prune(g1_logits_file *f, int64_t k_last, int check, const int64_t *known, size_t n_known,
                               int64_t *n_kept, int64_t *n_checked)
{
    *n_kept = *n_checked = 0;
    /* datasets past the kept results are deleted and made again: the mark
     * vouches for none of them */
    if (f->synced > k_last && put_synced(f, k_last) < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot write its dataset %s", f->tmp, G1_DUMP_SYNCED);
    names ns = {0};
    hsize_t at = 0;
    g1_status st = G1_OK;
    if (H5Literate(f->group, H5_INDEX_NAME, H5_ITER_NATIVE, &at, collect, &ns) < 0) {
        char d[256];
        g1_h5_detail(d);
        st = G1_FAIL(g1_h5_out_of_memory() ? G1_ERR_NOMEM : G1_ERR_FORMAT, "its group logits cannot be listed (%s)",
                     d);
    }
    for (size_t i = 0; st == G1_OK && i < ns.n; i++) {
        char *end;
        long long k = strtoll(ns.v[i], &end, 10);
        if (*end || end == ns.v[i] || k < 0) {
            st = G1_FAIL(G1_ERR_FORMAT, "it holds logits/%s, which no request writes", ns.v[i]);
        } else if (k > k_last) {
            if (H5Ldelete(f->group, ns.v[i], H5P_DEFAULT) < 0)
                st = G1_FAIL(G1_ERR_FORMAT, "logits/%s of an unfinished request cannot be removed", ns.v[i]);
        } else if (n_known && bsearch(&(int64_t){(int64_t)k}, known, n_known, sizeof *known, cmp_i64)) {
            ++*n_kept; /* looked at already, its values too where they needed it */
        } else {
            hid_t d = H5Dopen2(f->group, ns.v[i], H5P_DEFAULT);
            hid_t sp = d < 0 ? -1 : H5Dget_space(d);
            hsize_t have[2] = {0, 0};
            int ok = sp >= 0 && H5Sget_simple_extent_dims(sp, have, NULL) == 2 &&
                     have[1] == (hsize_t)f->vocab_size;
            if (sp >= 0)
                H5Sclose(sp);
            if (!ok)
                st = G1_FAIL(G1_ERR_FORMAT, "logits/%s of a kept result does not open as (n, %d) float32", ns.v[i],
                             f->vocab_size);
            else if (check && k > f->synced) { /* not on disk for sure before the interruption */
                uint32_t crc;
                int had;
                st = check_crc(d, "", ns.v[i], f->vocab_size, &crc, &had);
                ++*n_checked;
            }
            if (d >= 0)
                H5Dclose(d);
            *n_kept += ok;
        }
    }
    for (size_t i = 0; i < ns.n; i++)
        free(ns.v[i]);
    free(ns.v);
    /* the pruned state on disk before anything new is written */
    if (st == G1_OK && H5Fflush(f->file, H5F_SCOPE_LOCAL) < 0)
        st = G1_FAIL(G1_ERR_IO, "%s: flushing failed (disk full?)", f->tmp);
    return st;
}

g1_status g1_logits_file_set_aside(const char *path, g1_logits_file *f, char *aside, size_t n)
{
    if (f) {
        close_file(f);
        free_file(f);
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    /* an earlier one set aside stays: this one gets the next free name */
    char name[4200];
    snprintf(name, sizeof name, "%s.partial.damaged", path);
    struct stat sb;
    for (int i = 2; i < 1000 && stat(name, &sb) == 0; i++)
        snprintf(name, sizeof name, "%s.partial.damaged.%d", path, i);
    if (n) { /* the name given back (copied: gcc under ASan saw a null destination in snprintf) */
        size_t len = strlen(name) < n ? strlen(name) : n - 1;
        memcpy(aside, name, len);
        aside[len] = 0;
    }
    if (rename(tmp, name) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", tmp, name, strerror(errno));
    return G1_OK;
}

void g1_logits_file_result_out(g1_logits_file *f, int64_t k)
{
    if (!f || !f->writing || f->file < 0)
        return;
    if (k > f->out_k)
        f->out_k = k;
    (void)sync_reap(f, 0); /* a mark that cannot be written: the older one stays, which is safe */
    sync_maybe(f);
}

g1_status g1_logits_file_finish(g1_logits_file *f)
{
    /* a finished dump has every dataset: the mark only serves a resume */
    (void)sync_reap(f, 1);
    if (H5Lexists(f->file, G1_DUMP_SYNCED, H5P_DEFAULT) > 0)
        H5Ldelete(f->file, G1_DUMP_SYNCED, H5P_DEFAULT);
    H5Gclose(f->group);
    herr_t e = g1_h5_close(f->file);
    g1_status st = G1_OK;
    if (e < 0)
        st = G1_FAIL(G1_ERR_IO, "%s: closing the file failed (disk full?)", f->tmp);
    else
        g1_h5_release(f->tmp);
    /* on the disk before it takes its final name; on any failure the
     * file stays as it is, for --resume (which sets a damaged one aside):
     * removing it lost every row of the run */
    if (st == G1_OK)
        st = g1_rename_durable(f->tmp, f->path);
    free_file(f);
    return st;
}

void g1_logits_file_abort(g1_logits_file *f)
{
    if (!f)
        return;
    int writing = f->file >= 0 && f->writing;
    close_file(f);
    if (writing)
        g1_h5_release(f->tmp);
    free_file(f);
}

/* ---- grok1-merge: the finished dumps of the shards of one input ---- */

/* The request k that /logits/<name> holds: the name as grok1-run writes it
 * ("%lld", k >= 0); -1 for any other name. */
static int64_t request_of(const char *name)
{
    char *end;
    errno = 0;
    long long k = strtoll(name, &end, 10);
    char back[32];
    if (errno || end == name || *end || k < 0)
        return -1;
    snprintf(back, sizeof back, "%lld", k);
    return strcmp(back, name) ? -1 : (int64_t)k;
}

/* entries sorted by their first member, an int64_t k */
static int cmp_k(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A finished dump read-only: its file, group logits and the names in it. */
static g1_status open_finished(const char *path, hid_t *file, hid_t *group, int *vocab_size, names *ns)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    *group = -1;
    *vocab_size = -1;
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0) {
        char d[256];
        if (g1_h5_detail(d) == G1_H5_SAID_NOMEM) /* not the file's fault */
            return G1_FAIL(G1_ERR_NOMEM, "the logits dump %s cannot be opened: %s", path, d);
        return G1_FAIL(G1_ERR_FORMAT, "the logits dump %s cannot be opened (%s): is it an HDF5 file?", path, d);
    }
    g1_status st = G1_OK;
    int is_dump = g1_h5_is_logits_dump(*file);
    if (is_dump < 0)
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory reading the attribute format of the logits dump %s", path);
    else if (!is_dump)
        st = G1_FAIL(G1_ERR_FORMAT, "%s is not a logits dump of grok1-run (no attribute format = \"grok1-logits\")",
                     path);
    if (st == G1_OK && H5Aexists(*file, "vocab_size") > 0) {
        hid_t a = H5Aopen(*file, "vocab_size", H5P_DEFAULT);
        if (a < 0 || H5Aread(a, H5T_NATIVE_INT, vocab_size) < 0)
            *vocab_size = -1;
        if (a >= 0)
            H5Aclose(a);
    }
    if (st == G1_OK && *vocab_size <= 0)
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s has no readable attribute vocab_size", path);
    if (st == G1_OK && (H5Lexists(*file, "logits", H5P_DEFAULT) <= 0 ||
                        (*group = H5Gopen2(*file, "logits", H5P_DEFAULT)) < 0))
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s has no group logits", path);
    hsize_t at = 0;
    if (st == G1_OK && H5Literate(*group, H5_INDEX_NAME, H5_ITER_INC, &at, collect, ns) < 0) {
        char d[256];
        g1_h5_detail(d);
        st = G1_FAIL(g1_h5_out_of_memory() ? G1_ERR_NOMEM : G1_ERR_FORMAT,
                     "the group logits of %s cannot be listed (%s)", path, d);
    }
    if (st != G1_OK) {
        if (*group >= 0)
            H5Gclose(*group);
        H5Fclose(*file);
        *group = *file = -1;
    }
    return st;
}

static void free_names(names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    *ns = (names){0};
}

g1_status g1_logits_file_list(const char *path, int *vocab_size, int64_t **ks, size_t *n, char **run, char ***ids)
{
    return g1_logits_file_list_tokens(path, vocab_size, ks, n, run, ids, NULL);
}

g1_status g1_logits_file_list_tokens(const char *path, int *vocab_size, int64_t **ks, size_t *n, char **run,
                                     char ***ids, g1_dump_tokens **toks)
{
    if (toks)
        *toks = NULL;
    *ks = NULL;
    *n = 0;
    *run = NULL;
    if (ids)
        *ids = NULL;
    hid_t file, group;
    names ns = {0};
    g1_status st = open_finished(path, &file, &group, vocab_size, &ns);
    if (st != G1_OK) {
        free_names(&ns);
        return st;
    }
    int run_nomem;
    *run = get_run(file, &run_nomem);
    if (run_nomem)
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory reading the attribute run of the logits dump %s", path);
    /* the names sorted by k, each with its id */
    typedef struct entry {
        int64_t k;
        char *id;
        g1_dump_tokens t;
    } entry;
    entry *v = ns.n ? calloc(ns.n, sizeof *v) : NULL;
    if (st == G1_OK && ns.n && !v)
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == G1_OK && i < ns.n; i++) {
        if ((v[i].k = request_of(ns.v[i])) < 0) {
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s holds logits/%s, which no request writes", path,
                         ns.v[i]);
            break;
        }
        hid_t d = H5Dopen2(group, ns.v[i], H5P_DEFAULT);
        hid_t sp = d < 0 ? -1 : H5Dget_space(d), t = d < 0 ? -1 : H5Dget_type(d);
        hsize_t have[2] = {0, 0};
        int ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_ndims(sp) == 2 &&
                 H5Sget_simple_extent_dims(sp, have, NULL) == 2 && have[0] > 0 && have[0] <= INT32_MAX &&
                 have[1] == (hsize_t)*vocab_size && H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
        int bad_id = 0, *tv = NULL, got_t = 0, len = -1;
        /* the tokens themselves, when wanted: their hash (a forged row
         * count sizes nothing: get_tokens reads the length first) */
        if (ok && toks) {
            v[i].t.rows = (int64_t)have[0];
            len = g1_h5_get_ints(d, G1_DUMP_TOKENS_ATTR, H5T_NATIVE_INT, NULL, (size_t)have[0]);
            tv = len == (int)have[0] ? malloc((size_t)have[0] * sizeof *tv) : NULL;
        }
        if (!ok)
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s: logits/%s is not a float32 dataset of (n, %d)", path,
                         ns.v[i], *vocab_size);
        else if (toks && len == (int)have[0] && !tv) /* not a dataset without the attribute: left unchecked */
            st = G1_FAIL(G1_ERR_NOMEM, "the logits dump %s: out of memory for the %llu token ids of logits/%s", path,
                         (unsigned long long)have[0], ns.v[i]);
        else if ((got_t = get_tokens(d, (int)have[0], *vocab_size, tv)) < 0)
            st = G1_FAIL(G1_ERR_FORMAT,
                         "the logits dump %s: logits/%s has a %s attribute that is not its %llu token ids (integers "
                         "below %d)",
                         path, ns.v[i], G1_DUMP_TOKENS_ATTR, (unsigned long long)have[0], *vocab_size);
        else if ((v[i].id = get_id(d, &bad_id)), bad_id < 0)
            st = G1_FAIL(G1_ERR_NOMEM, "the logits dump %s: out of memory reading the %s attribute of logits/%s", path,
                         G1_DUMP_ID_ATTR, ns.v[i]);
        else if (bad_id)
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s: logits/%s has an %s attribute that is not a string",
                         path, ns.v[i], G1_DUMP_ID_ATTR);
        if (st == G1_OK && tv && got_t == 1) {
            v[i].t.has = 1;
            v[i].t.fnv1a64 = g1_tokens_fnv1a64(tv, (size_t)have[0]);
        }
        free(tv);
        close_tsd(t, sp, d);
    }
    H5Gclose(group);
    H5Fclose(file);
    size_t count = ns.n;
    free_names(&ns);
    int64_t *out = st == G1_OK && count ? malloc(count * sizeof *out) : NULL;
    char **out_ids = st == G1_OK && count && ids ? malloc(count * sizeof *out_ids) : NULL;
    g1_dump_tokens *out_t = st == G1_OK && count && toks ? malloc(count * sizeof *out_t) : NULL;
    if (st == G1_OK && count && (!out || (ids && !out_ids) || (toks && !out_t)))
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (st == G1_OK && count) {
        qsort(v, count, sizeof *v, cmp_k);
        for (size_t i = 0; i < count; i++) {
            out[i] = v[i].k;
            if (toks)
                out_t[i] = v[i].t;
            if (ids)
                out_ids[i] = v[i].id;
            else
                free(v[i].id);
        }
    } else {
        for (size_t i = 0; v && i < count; i++)
            free(v[i].id);
        free(out);
        free(out_ids);
        free(out_t);
        out = NULL;
        out_ids = NULL;
        out_t = NULL;
    }
    free(v);
    if (st != G1_OK) {
        free(*run);
        *run = NULL;
        return st;
    }
    *ks = out;
    *n = count;
    if (ids)
        *ids = out_ids;
    if (toks)
        *toks = out_t;
    return G1_OK;
}

/* Dataset `name` of group `from` (in file src) into group `to` as stored
 * (H5Ocopy, with its attributes), then read back from the copy and
 * compared with its checksum; a copy of one without a checksum gets one
 * (*unchecked grows). */
static g1_status copy_request(hid_t from, hid_t to, const char *src, const char *tmp, const char *name, int vocab_size,
                              long *unchecked)
{
    /* its room first (g1_h5_reserve): its values, its attributes (the
     * tokens, about one int32 a row) */
    hid_t sd = H5Dopen2(from, name, H5P_DEFAULT);
    double bytes = sd < 0 ? 0 : (double)H5Dget_storage_size(sd) * (1.0 + 1.0 / vocab_size);
    if (sd >= 0)
        H5Dclose(sd);
    char what[64];
    snprintf(what, sizeof what, "logits/%s", name);
    hid_t file = H5Iget_file_id(to);
    g1_status st = reserve(file, tmp, what, bytes);
    H5Fclose(file);
    G1_TRY(st);
    if (H5Ocopy(from, name, to, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
        char d[256];
        g1_h5_detail(d);
        return G1_FAIL(G1_ERR_IO, "copying logits/%s of %s into %s failed: %s", name, src, tmp, d);
    }
    hid_t d = H5Dopen2(to, name, H5P_DEFAULT);
    char where[4200];
    snprintf(where, sizeof where, "the logits dump %s: ", src);
    uint32_t crc;
    int had = 0;
    st = d < 0 ? G1_FAIL(G1_ERR_IO, "%s: logits/%s cannot be opened after its copy", tmp, name)
               : check_crc(d, where, name, vocab_size, &crc, &had);
    if (st != G1_OK && st != G1_ERR_NOMEM && d >= 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", g1_last_error());
        st = G1_FAIL(st, "%s; run that shard again, or copy its dump again", msg);
    } else if (st == G1_OK && !had) {
        if (g1_h5_put_crcs(d, &crc, 1) < 0)
            st = G1_FAIL(G1_ERR_IO, "%s: cannot write the checksum of logits/%s (disk full?)", tmp, name);
        else
            (*unchecked)++;
    }
    if (d >= 0)
        H5Dclose(d);
    return st;
}

g1_status g1_logits_file_join(const char *tmp, int vocab_size, const char *run, const char *const *srcs, int n,
                              long *unchecked)
{
    *unchecked = 0;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = write_fapl();
    /* made anew, never through a link found at that name */
    if (unlink(tmp) != 0 && errno != ENOENT) {
        H5Pclose(fapl);
        return G1_FAIL(G1_ERR_IO, "cannot remove %s to make it anew: %s", tmp, strerror(errno));
    }
    hid_t out = H5Fcreate(tmp, H5F_ACC_EXCL, H5P_DEFAULT, fapl), group = -1;
    H5Pclose(fapl);
    if (out < 0) {
        char d[256];
        g1_h5_detail(d);
        return G1_FAIL(G1_ERR_IO, "cannot create %s: %s", tmp, d);
    }
    /* all of it, first: a disk too small is told before anything is copied */
    double total = 0;
    struct stat sb;
    for (int i = 0; i < n; i++)
        if (stat(srcs[i], &sb) == 0)
            total += (double)sb.st_size;
    g1_status st = reserve(out, tmp, "the joined dump", total);
    if (st == G1_OK &&
        (put_attrs(out, vocab_size, run) < 0 ||
         (group = H5Gcreate2(out, "logits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0))
        st = G1_FAIL(G1_ERR_IO, "%s: cannot write its attributes and group logits (disk full?)", tmp);
    for (int i = 0; st == G1_OK && i < n; i++) {
        hid_t file, from;
        int v;
        names ns = {0};
        if ((st = open_finished(srcs[i], &file, &from, &v, &ns)) != G1_OK) {
            free_names(&ns);
            break;
        }
        if (v != vocab_size)
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s has vocab_size %d, not %d", srcs[i], v, vocab_size);
        /* the datasets as they are stored: no decoding, no conversion */
        for (size_t j = 0; st == G1_OK && j < ns.n; j++)
            st = copy_request(from, group, srcs[i], tmp, ns.v[j], vocab_size, unchecked);
        H5Gclose(from);
        H5Fclose(file);
        free_names(&ns);
    }
    if (group >= 0)
        H5Gclose(group);
    if (st == G1_OK && H5Fflush(out, H5F_SCOPE_LOCAL) < 0)
        st = G1_FAIL(G1_ERR_IO, "%s: flushing failed (disk full?)", tmp);
    if (g1_h5_close(out) < 0 && st == G1_OK)
        st = G1_FAIL(G1_ERR_IO, "%s: closing the file failed (disk full?)", tmp);
    if (st != G1_OK)
        remove(tmp);
    else
        g1_h5_release(tmp);
    return st;
}
