/* HDF5 error text for our messages. */
#include "h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

/* The checksums are of the little-endian bytes of float32 values; taken
 * from memory as they are, which is right on little-endian hosts only. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checksums (g1_h5_crc32 of float32 buffers) assume a little-endian host"
#endif

/* the innermost description on the stack, and whether there is one */
struct innermost {
    char desc[256];
    int found;
};

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    struct innermost *in = data;
    if (n == 0 && e->desc) {
        snprintf(in->desc, sizeof in->desc, "%s", e->desc);
        in->found = 1;
    }
    return 0;
}

/* An allocation failure: H5E_NOSPACE ("no space available for allocation")
 * and H5E_CANTALLOC ("can't allocate space") are what HDF5 gives when its
 * malloc fails, under H5E_RESOURCE or the major class of the object it was
 * working on. The rest of H5E_RESOURCE (a lock, a file already open) is
 * not memory. */
static herr_t nomem_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)n;
    if (e->min_num == H5E_NOSPACE || e->min_num == H5E_CANTALLOC)
        *(int *)data = 1;
    return 0;
}

int g1_h5_out_of_memory(void)
{
    int yes = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, nomem_cb, &yes);
    return yes;
}

void g1_h5_nomem(void)
{
    H5Epush2(H5E_DEFAULT, __FILE__, __func__, __LINE__, H5E_ERR_CLS, H5E_RESOURCE, H5E_NOSPACE, "out of memory");
}

g1_h5_said g1_h5_detail(char buf[256])
{
    struct innermost in = {"unknown HDF5 error", 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &in);
    if (g1_h5_out_of_memory()) {
        if (!strcmp(in.desc, "out of memory")) /* ours (g1_h5_nomem) */
            snprintf(buf, 256, "out of memory");
        else
            snprintf(buf, 256, "out of memory (HDF5: %.200s)", in.desc);
        return G1_H5_SAID_NOMEM;
    }
    snprintf(buf, 256, "%s", in.desc);
    return in.found ? G1_H5_SAID_ERROR : G1_H5_SAID_NOTHING;
}

static herr_t slab_io(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count, void *buf,
                      const void *cbuf)
{
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    herr_t e = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0)
        e = buf ? H5Dread(d, memtype, ms, fs, H5P_DEFAULT, buf) : H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, cbuf);
    /* the closes below clear HDF5's error stack: kept for g1_h5_detail */
    hid_t stack = e < 0 ? H5Eget_current_stack() : -1;
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (stack >= 0)
        H5Eset_current_stack(stack);
    return e;
}

int g1_h5_read_detail(hid_t d, char *buf, size_t n, g1_h5_said *said)
{
    char detail[256];
    g1_h5_said kind = g1_h5_detail(detail);
    if (said)
        *said = kind;
    snprintf(buf, n, "%s", detail);
    hid_t dcpl = H5Dget_create_plist(d);
    int files = dcpl < 0 ? 0 : H5Pget_external_count(dcpl);
    const char *prefix = getenv("HDF5_EXTFILE_PREFIX");
    int named = 0;
    for (int i = 0; i < files && !named; i++) {
        char name[1024], where[300] = "", err[128] = "";
        off_t off;
        hsize_t size;
        if (H5Pget_external(dcpl, (unsigned)i, sizeof name, name, &off, &size) < 0)
            continue;
        name[sizeof name - 1] = 0;
        int relative = name[0] != '/';
        if (relative && prefix && *prefix) {
            /* looked for under HDF5_EXTFILE_PREFIX, not here: named when
             * HDF5 could not open one */
            if (!strstr(detail, "unable to open external"))
                continue;
            snprintf(where, sizeof where, "; a relative name, looked for in HDF5_EXTFILE_PREFIX (%s)", prefix);
        } else {
            int fd = open(name, O_RDONLY);
            if (fd >= 0) {
                close(fd);
                continue;
            }
            snprintf(err, sizeof err, ": %s", strerror(errno));
            if (relative)
                snprintf(where, sizeof where, "; a relative name, looked for from the current directory");
        }
        snprintf(buf, n, "its data is in the external file %s (HDF5 external storage%s), which cannot be opened%s "
                 "(HDF5 says '%s')", name, where, err, detail);
        named = 1;
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return named;
}

herr_t g1_h5_read_slab(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count, void *buf)
{
    return slab_io(d, memtype, rank, start, count, buf, NULL);
}

herr_t g1_h5_write_slab(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count,
                        const void *buf)
{
    return slab_io(d, memtype, rank, start, count, NULL, buf);
}

/* An attribute of dataspace sp (closed here) on loc. */
static herr_t put_attr_in(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hid_t sp, const void *v)
{
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return e;
}

static herr_t put_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    return put_attr_in(loc, name, ftype, mtype, H5Screate(H5S_SCALAR), v);
}

herr_t g1_h5_put_string(hid_t loc, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    herr_t e = put_attr(loc, name, t, t, &s);
    H5Tclose(t);
    return e;
}

uint32_t g1_h5_params_crc(const g1_config *cfg)
{
    unsigned char buf[2048];
    size_t n = 0;
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *src = (const char *)cfg + p->offset;
        size_t len = strlen(p->name) + 1;
        if (n + len + 8 > sizeof buf)
            break; /* not with today's table (under 400 bytes) */
        memcpy(buf + n, p->name, len);
        n += len;
        uint64_t u;
        if (p->type == G1_PARAM_INT) {
            int64_t v = *(const int *)src;
            memcpy(&u, &v, 8);
        } else {
            memcpy(&u, src, 8);
        }
        for (int b = 0; b < 8; b++)
            buf[n++] = (unsigned char)(u >> (8 * b));
    }
    return g1_h5_crc32(buf, n);
}

int g1_h5_get_params_crc(hid_t loc, uint32_t *v)
{
    if (H5Aexists(loc, G1_H5_PARAMS_CRC_ATTR) <= 0)
        return 0;
    hid_t a = H5Aopen(loc, G1_H5_PARAMS_CRC_ATTR, H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a), t = a < 0 ? -1 : H5Aget_type(a);
    int ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Tget_class(t) == H5T_INTEGER &&
             H5Aread(a, H5T_NATIVE_UINT32, v) >= 0;
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    return ok ? 1 : -1;
}

herr_t g1_h5_put_config(hid_t loc, const g1_config *cfg)
{
    herr_t e = g1_h5_put_string(loc, "format", G1_FORMAT_NAME);
    int v = G1_FORMAT_VERSION;
    if (e >= 0)
        e = put_attr(loc, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &v);
    for (int i = 0; i < g1_num_params && e >= 0; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *src = (const char *)cfg + p->offset;
        if (p->type == G1_PARAM_INT)
            e = put_attr(loc, p->name, H5T_STD_I32LE, H5T_NATIVE_INT, src);
        else
            e = put_attr(loc, p->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, src);
    }
    return e >= 0 ? g1_h5_put_params_crc(loc, cfg) : e;
}

herr_t g1_h5_put_params_crc(hid_t loc, const g1_config *cfg)
{
    uint32_t crc = g1_h5_params_crc(cfg);
    if (H5Aexists(loc, G1_H5_PARAMS_CRC_ATTR) > 0 && H5Adelete(loc, G1_H5_PARAMS_CRC_ATTR) < 0)
        return -1;
    return put_attr(loc, G1_H5_PARAMS_CRC_ATTR, H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc);
}

hid_t g1_h5_read_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    if (fapl >= 0)
        H5Pset_file_locking(fapl, 0, 1);
#endif
    return fapl;
}

/* ---- a full disk ---- */

static volatile int close_failed; /* some g1_h5_close failed, or g1_h5_skip_shutdown */

int g1_h5_fd(hid_t file)
{
    void *h = NULL;
    int fd = -1;
    hid_t fapl = H5Fget_access_plist(file);
    if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(file, fapl, &h) >= 0 && h)
        fd = *(int *)h;
    if (fapl >= 0)
        H5Pclose(fapl);
    return fd;
}

int g1_h5_reserve(hid_t file, uint64_t bytes, double *avail)
{
    double free_bytes = -1;
    if (avail)
        *avail = -1;
    int fd = g1_h5_fd(file);
    if (fd < 0)
        return 0;
    struct statvfs sv;
    struct stat sb;
    int have_sb = fstat(fd, &sb) == 0;
    if (fstatvfs(fd, &sv) == 0) {
        free_bytes = (double)sv.f_bavail * (double)sv.f_frsize;
        /* with what this file holds reserved already: the room it has */
        double held = have_sb ? (double)sb.st_blocks * 512.0 - (double)sb.st_size : 0;
        if (held > 0)
            free_bytes += held;
    }
    if (avail)
        *avail = free_bytes;
    off_t end = have_sb ? sb.st_size : 0;
#if H5_VERSION_GE(1, 10, 2)
    haddr_t eoa = 0;
    if (H5Fget_eoa(file, &eoa) >= 0 && eoa != HADDR_UNDEF && (off_t)eoa > end)
        end = (off_t)eoa;
#endif
    if (bytes == 0 || fallocate(fd, FALLOC_FL_KEEP_SIZE, end, (off_t)bytes) == 0)
        return 0;
    if (errno == ENOSPC || errno == EDQUOT)
        return -1;
    /* this file system cannot reserve (some network file systems): what
     * statvfs shows, which a quota does not */
    if (free_bytes >= 0 && free_bytes < (double)bytes) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

void g1_h5_release(const char *path)
{
    int fd = open(path, O_WRONLY);
    struct stat sb;
    if (fd < 0)
        return;
    /* the reserved blocks lie past the end: a truncation to the same size
     * frees them on ext4 (which will not punch past the end), a punch on
     * others (tmpfs, XFS); errors ignored */
    if (fstat(fd, &sb) == 0) {
        (void)ftruncate(fd, sb.st_size);
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, sb.st_size, (off_t)1 << 36);
    }
    close(fd);
}

herr_t g1_h5_close(hid_t file)
{
    herr_t e = H5Fclose(file);
    if (e < 0)
        close_failed = 1;
    return e;
}

void g1_h5_skip_shutdown(void) { close_failed = 1; }

void g1_h5_end(int code)
{
    if (!close_failed)
        return;
    fflush(NULL);
    _exit(code);
}

int g1_h5_layer_index(const char *name)
{
    char *end, canon[32];
    errno = 0;
    long v = strtol(name, &end, 10);
    if (errno || end == name || *end || v < 0 || v > INT_MAX)
        return -1;
    snprintf(canon, sizeof canon, "%02ld", v);
    return strcmp(canon, name) ? -1 : (int)v;
}

void g1_h5_file_name(hid_t obj, char *buf, size_t n)
{
    buf[0] = 0;
    hid_t f = H5Iget_file_id(obj);
    if (f < 0)
        return;
    if (H5Fget_name(f, buf, n) < 0)
        buf[0] = 0;
    H5Fclose(f);
}

/* ---- checksums ---- */

/* Pieces of at least this many bytes, at most CRC_PIECE_MAX: enough of them
 * to keep every thread busy (4 a thread) without joining tiny ones. */
#define CRC_PIECE_MIN ((size_t)1 << 20)
#define CRC_PIECE_MAX ((size_t)8 << 20)

/* libdeflate's CRC-32 is zlib's (the gzip CRC), at memory speed */
static uint32_t crc_piece(const unsigned char *p, size_t n) { return libdeflate_crc32(0, p, n); }

uint32_t g1_h5_crc32_join(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    return (uint32_t)crc32_combine64(crc_a, crc_b, (z_off64_t)len_b);
}

/* Below this, one thread: libdeflate takes a few ms for it, and a parallel
 * region leaves the OpenMP threads spinning for a while after it, taking
 * the cores from the reads and writes of the caller's next step (a merge of
 * logits dumps, whose datasets are a few MB each, took twice as long). */
#define CRC_PARALLEL_MIN ((size_t)32 << 20)

uint32_t g1_h5_crc32_here(const void *p, size_t n) { return crc_piece(p, n); }

uint32_t g1_h5_crc32(const void *p, size_t n)
{
    const unsigned char *b = p;
    if (n < CRC_PARALLEL_MIN)
        return crc_piece(b, n);
#ifdef _OPENMP
    size_t piece = n / (4 * (size_t)omp_get_max_threads());
#else
    size_t piece = n;
#endif
    piece = piece < CRC_PIECE_MIN ? CRC_PIECE_MIN : piece > CRC_PIECE_MAX ? CRC_PIECE_MAX : piece;
    size_t pieces = (n + piece - 1) / piece;
    uint32_t *c = pieces > 1 ? malloc(pieces * sizeof *c) : NULL;
    if (!c) /* one piece (or no memory for the list): on this thread */
        return crc_piece(b, n);
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < pieces; i++)
        c[i] = crc_piece(b + i * piece, i + 1 < pieces ? piece : n - i * piece);
    uint32_t all = c[0];
    for (size_t i = 1; i < pieces; i++)
        all = g1_h5_crc32_join(all, c[i], i + 1 < pieces ? piece : n - i * piece);
    free(c);
    return all;
}

herr_t g1_h5_put_ints(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v, size_t n)
{
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0)
        return -1;
    hsize_t dims[1] = {n};
    return put_attr_in(loc, name, ftype, mtype, H5Screate_simple(1, dims, NULL), v);
}

int g1_h5_get_ints(hid_t loc, const char *name, hid_t memtype, void *v, size_t max)
{
    htri_t there = H5Aexists(loc, name);
    if (there == 0)
        return 0;
    if (there < 0)
        return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_ndims(sp) <= 1 && n >= 1 && (size_t)n <= max &&
             n <= INT_MAX && (!v || H5Aread(a, memtype, v) >= 0);
    H5Tclose(t);
    H5Sclose(sp);
    H5Aclose(a);
    return ok ? (int)n : -1;
}

herr_t g1_h5_put_crcs(hid_t dset, const uint32_t *v, size_t n)
{
    return g1_h5_put_ints(dset, G1_H5_CRC_ATTR, H5T_STD_U32LE, H5T_NATIVE_UINT32, v, n);
}

int g1_h5_get_crcs(hid_t dset, uint32_t *v, size_t max)
{
    /* every 32-bit checksum must survive the type it is stored in: uint32,
     * as the writers store it, or a 64-bit integer (h5py's for Python
     * ints); a signed 32-bit or narrower type reads 2^31 and more as 0, a
     * false mismatch, so it is refused as not checksums */
    if (H5Aexists(dset, G1_H5_CRC_ATTR) > 0) {
        hid_t a = H5Aopen(dset, G1_H5_CRC_ATTR, H5P_DEFAULT);
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        size_t size = t >= 0 ? H5Tget_size(t) : 0;
        int fits = t >= 0 && H5Tget_class(t) == H5T_INTEGER &&
                   (size >= 8 || (size == 4 && H5Tget_sign(t) == H5T_SGN_NONE));
        if (t >= 0)
            H5Tclose(t);
        if (a >= 0)
            H5Aclose(a);
        if (!fits)
            return -1;
    }
    return g1_h5_get_ints(dset, G1_H5_CRC_ATTR, H5T_NATIVE_UINT32, v, max);
}

/* Bytes one read of g1_h5_crc_of covers at most. */
#define CRC_SLAB_BYTES ((size_t)64 << 20)

int g1_h5_crc_of(hid_t d, hid_t memtype, size_t esize, int rank, const hsize_t *dims, int e, uint32_t *crc,
                 unsigned long long *bytes)
{
    int x = e >= 0; /* what is read: dimensions x.. (at index e of the first when x) */
    *crc = 0;
    if (rank < 1 || rank > 3 || rank <= x || esize < 1 || esize > CRC_SLAB_BYTES)
        return -1;
    /* inner[j]: the bytes of one index of dimension j (every later one
     * whole), at most CRC_SLAB_BYTES + 1; each read is of whole indices of
     * dimension k, the first whose index fits, so a row of any length (a
     * forged shape) is read in pieces, in row-major order */
    hsize_t inner[3];
    inner[rank - 1] = esize;
    for (int j = rank - 2; j >= x; j--)
        inner[j] = dims[j + 1] && inner[j + 1] > CRC_SLAB_BYTES / dims[j + 1] ? CRC_SLAB_BYTES + 1
                                                                               : inner[j + 1] * dims[j + 1];
    int k = x;
    while (inner[k] > CRC_SLAB_BYTES)
        k++;
    for (int j = x; j < rank; j++)
        if (!dims[j])
            return 0; /* no element: the CRC-32 of nothing */
    hsize_t per = CRC_SLAB_BYTES / inner[k];
    per = per > dims[k] ? dims[k] : per;
    void *buf = malloc((size_t)(per * inner[k]) + 1);
    if (!buf) {
        g1_h5_nomem(); /* the caller's message from HDF5's stack says so */
        return -1;
    }
    uint32_t c = 0;
    herr_t err = 0;
    hsize_t at[3] = {0, 0, 0}; /* the next read's start in dimensions x..k */
    for (int first = 1, done = 0; !done && err >= 0; first = 0) {
        hsize_t start[3] = {0, 0, 0}, count[3];
        for (int j = 0; j < rank; j++) {
            start[j] = j < x ? (hsize_t)e : j <= k ? at[j] : 0;
            count[j] = j < x || j < k ? 1 : j == k ? (dims[k] - at[k] < per ? dims[k] - at[k] : per) : dims[j];
        }
        err = g1_h5_read_slab(d, memtype, rank, start, count, buf);
        size_t n = (size_t)(count[k] * inner[k]);
        if (err >= 0) {
            c = first ? g1_h5_crc32(buf, n) : g1_h5_crc32_join(c, g1_h5_crc32(buf, n), n);
            if (bytes)
                *bytes += n;
        }
        /* the next start: at[k] on by count[k], carried into the earlier dimensions */
        at[k] += count[k];
        for (int j = k; j >= x && at[j] == dims[j]; j--) {
            if (j == x)
                done = 1;
            else
                at[j] = 0, at[j - 1]++;
        }
    }
    free(buf);
    *crc = c;
    return err < 0 ? -1 : 0;
}

int g1_h5_stored(hid_t d, char *why, size_t n)
{
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d), dcpl = H5Dget_create_plist(d);
    int rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK];
    size_t esize = t < 0 ? 0 : H5Tget_size(t);
    uint64_t declared = esize;
    if (rank >= 0 && H5Sget_simple_extent_dims(sp, dims, NULL) == rank)
        for (int i = 0; i < rank; i++)
            declared = dims[i] && declared > UINT64_MAX / dims[i] ? UINT64_MAX : declared * dims[i];
    /* without filters (compression) or external files, the file holds
     * every byte of a dataset written whole; with filters, every chunk */
    H5D_layout_t layout = dcpl < 0 ? H5D_LAYOUT_ERROR : H5Pget_layout(dcpl);
    int filtered = layout == H5D_CHUNKED && H5Pget_nfilters(dcpl) > 0;
    int plain = (layout == H5D_CONTIGUOUS || layout == H5D_CHUNKED || layout == H5D_COMPACT) &&
                H5Pget_external_count(dcpl) == 0 && rank >= 0 && esize > 0;
    hsize_t stored = 0, chunks = 0, want = 1;
    int ok = 1;
    if (plain && !filtered) {
        stored = H5Dget_storage_size(d);
        ok = stored >= declared;
    }
#if H5_VERSION_GE(1, 10, 5)
    hsize_t chunk[H5S_MAX_RANK];
    if (plain && filtered && H5Pget_chunk(dcpl, rank, chunk) == rank && H5Dget_num_chunks(d, sp, &chunks) >= 0) {
        for (int i = 0; i < rank; i++) {
            hsize_t c = chunk[i] ? (dims[i] + chunk[i] - 1) / chunk[i] : 0;
            want = c && want > UINT64_MAX / c ? UINT64_MAX : want * c;
        }
        ok = chunks >= want;
    }
#endif
    if (!ok && why) {
        char shape[128], held[128];
        size_t k = (size_t)snprintf(shape, sizeof shape, "(");
        for (int i = 0; i < rank && k < sizeof shape; i++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
        if (k < sizeof shape)
            snprintf(shape + k, sizeof shape - k, ")");
        if (filtered)
            snprintf(held, sizeof held, "%llu of its %llu chunks", (unsigned long long)chunks,
                     (unsigned long long)want);
        else
            snprintf(held, sizeof held, "%llu bytes of its data", (unsigned long long)stored);
        snprintf(why, n,
                 "its shape %s of %zu-byte elements is %s%llu bytes, but the file holds %s: a forged or damaged "
                 "dataset (or one never written)",
                 shape, esize, declared == UINT64_MAX ? "over " : "", (unsigned long long)declared, held);
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    return ok;
}

char *g1_h5_get_string(hid_t loc, const char *name, size_t max, int *nomem)
{
    int no_memory = 0;
    if (nomem)
        *nomem = 0;
    if (H5Aexists(loc, name) <= 0)
        return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    char *out = NULL;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        hid_t m = H5Tcopy(H5T_C_S1);
        H5Tset_cset(m, H5Tget_cset(t)); /* no conversion between ASCII and UTF-8 */
        if (H5Tis_variable_str(t) > 0) {
            char *v = NULL;
            H5Tset_size(m, H5T_VARIABLE);
            if (H5Aread(a, m, &v) >= 0 && v) {
                out = strlen(v) <= max ? strdup(v) : NULL;
                no_memory = strlen(v) <= max && !out;
                H5free_memory(v);
            }
        } else {
            size_t n = H5Tget_size(t);
            out = n > 0 && n <= max ? calloc(n + 1, 1) : NULL;
            no_memory = n > 0 && n <= max && !out;
            H5Tset_size(m, n + 1);
            if (out && H5Aread(a, m, out) < 0) {
                free(out);
                out = NULL;
            }
        }
        H5Tclose(m);
    }
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    if (nomem)
        *nomem = no_memory;
    return out;
}

int g1_h5_is_logits_dump(hid_t file)
{
    int nomem;
    char *s = g1_h5_get_string(file, "format", 4096, &nomem);
    int yes = s && !strcmp(s, "grok1-logits");
    free(s);
    return nomem ? -1 : yes;
}

/* Whether a file named `file` (an external link's target in the checkpoint
 * at ckpt_path) is where HDF5 looks for it: the name itself (absolute, or
 * from the current directory), in a folder of HDF5_EXT_PREFIX, or beside
 * the checkpoint; an absolute name is also looked for by its last part. */
int g1_h5_part_present(const char *ckpt_path, const char *file)
{
    struct stat sb;
    if (stat(file, &sb) == 0)
        return 1;
    const char *base = file[0] == '/' ? strrchr(file, '/') + 1 : file;
    char cand[4096];
    const char *prefix = getenv("HDF5_EXT_PREFIX");
    for (const char *p = prefix; p && *p;) {
        size_t n = strcspn(p, ":");
        if (n && snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, base) < (int)sizeof cand && stat(cand, &sb) == 0)
            return 1;
        p += n + (p[n] == ':');
    }
    const char *slash = strrchr(ckpt_path, '/');
    int dir_len = slash ? (int)(slash - ckpt_path) : 1;
    return snprintf(cand, sizeof cand, "%.*s/%s", dir_len, slash ? ckpt_path : ".", base) < (int)sizeof cand &&
           stat(cand, &sb) == 0;
}
