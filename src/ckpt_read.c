/* HDF5 checkpoint reader (format v1, docs/CHECKPOINT.md): checks the root
 * attributes on open, then reads only the layers and experts asked for, with
 * hyperslab selections, checking the dtype and shape of every dataset read.
 * Accepts what h5py writes by default (contiguous data, any string kind). */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf16.h"
#include "ckpt.h"
#include "fnv1a.h"
#include "h5util.h"

/* A tensor read into the weights, its checksum to compare on the checker's
 * thread while the next one is read (check_later). */
typedef struct crc_job {
    const void *buf;
    uint64_t n;
    uint32_t want;
    char what[1300]; /* "layers/03/moe_up expert 5 in part file P", for the message */
    struct crc_job *next;
} crc_job;

/* The checker: one thread, started by the first tensor it is given; no
 * HDF5 call on it (this HDF5 is not thread-safe). */
typedef struct crc_checker {
    pthread_mutex_t mu;
    pthread_cond_t more, less;
    crc_job *head, *tail;
    int started, busy, ending;
    pthread_t thread;
    uint64_t checked;  /* bytes compared, added to g1_ckpt.bytes_checked at the wait */
    int failed;        /* the first mismatch, in msg; the jobs after it are dropped */
    char msg[1600];
} crc_checker;

struct g1_ckpt {
    hid_t file;
    hid_t dapl, gapl; /* dataset and group access: external links (a checkpoint in parts) open their
                       * files like this one */
    char *path;
    g1_config cfg;
    uint64_t bytes_read; /* payload bytes, as stored in the file */
    uint64_t bytes_checked; /* of those, compared with the file's checksums */
    int skip_checksums;     /* g1_ckpt_set_checksums(ck, 0) */
    int params_bad;         /* the hyper-parameters do not match their checksum (g1_ckpt_check_header) */
    uint32_t params_crc[2]; /* the checksum recorded, and the one of the values read */
    uint64_t *part_fp;   /* a checkpoint in parts: G1_H5_PART_FP_ATTR (L + 1 values), else NULL */
    char file_name[1024]; /* the name HDF5 gives the checkpoint's own file */
    crc_checker crc;
};

/* An open dataset and what the file says about it. */
typedef struct dset {
    hid_t id;
    int rank;
    hsize_t dims[3];
    size_t esize;   /* bytes per element in the file */
    uint32_t *crc;  /* G1_H5_CRC_ATTR: ncrc values (one, or one per expert), NULL when none */
    int ncrc;
    char name[1200]; /* "layers/03/moe_up" for messages (with "in part file P" when linked) */
    int base_len;    /* of name, before " in part file P" */
} dset;

typedef enum { KIND_I8, KIND_F32 } dkind;

/* Target size of one embedding read (rows rounded to whole chunks). */
#define EMBED_SLAB_BYTES (8u << 20)


/* ---- attributes ---- */

static g1_status open_attr(const g1_ckpt *ck, const char *name, hid_t *out)
{
    if (H5Aexists(ck->file, name) <= 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has no attribute '%s': not a %s file or an incomplete one",
                       ck->path, name, G1_FORMAT_NAME);
    *out = H5Aopen(ck->file, name, H5P_DEFAULT);
    if (*out < 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: cannot open attribute '%s'", ck->path, name);
    hid_t sp = H5Aget_space(*out);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n != 1) {
        H5Aclose(*out);
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: attribute '%s' holds %lld values, expected one", ck->path,
                       name, (long long)n);
    }
    return G1_OK;
}

/* Fixed or variable length string attribute into buf (truncated to n-1). */
static g1_status read_str_attr(const g1_ckpt *ck, const char *name, char *buf, size_t n)
{
    hid_t a;
    G1_TRY(open_attr(ck, name, &a));
    hid_t ft = H5Aget_type(a);
    g1_status st = G1_OK;
    if (H5Tget_class(ft) != H5T_STRING) {
        st = G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: attribute '%s' is not a string", ck->path, name);
    } else {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) < 0)
                st = G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: cannot read attribute '%s'", ck->path, name);
            else
                snprintf(buf, n, "%s", s ? s : "");
            H5free_memory(s);
        } else {
            size_t sz = H5Tget_size(ft);
            char *s = calloc(sz + 1, 1);
            H5Tset_size(mt, sz + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            if (!s)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            else if (H5Aread(a, mt, s) < 0)
                st = G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: cannot read attribute '%s'", ck->path, name);
            else
                snprintf(buf, n, "%s", s);
            free(s);
        }
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return st;
}

/* Any integer or float attribute, through HDF5's conversion. With want_int,
 * the value must be integral and fit an int. */
static g1_status read_num_attr(const g1_ckpt *ck, const char *name, int want_int, double *out)
{
    hid_t a;
    G1_TRY(open_attr(ck, name, &a));
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    herr_t e = -1;
    if (cls == H5T_INTEGER) {
        long long v = 0;
        e = H5Aread(a, H5T_NATIVE_LLONG, &v);
        *out = (double)v;
    } else if (cls == H5T_FLOAT) {
        e = H5Aread(a, H5T_NATIVE_DOUBLE, out);
    }
    H5Aclose(a);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: attribute '%s' is not a number", ck->path, name);
    if (e < 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: cannot read attribute '%s'", ck->path, name);
    if (want_int && (!isfinite(*out) || *out != floor(*out) || fabs(*out) > 2147483647.0))
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: attribute '%s' = %.17g is not an integer", ck->path, name,
                       *out);
    return G1_OK;
}

static g1_status read_header(g1_ckpt *ck)
{
    char fmt[128];
    G1_TRY(read_str_attr(ck, "format", fmt, sizeof fmt));
    if (strcmp(fmt, G1_FORMAT_NAME))
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has format '%s', expected '%s'", ck->path, fmt,
                       G1_FORMAT_NAME);
    double v;
    G1_TRY(read_num_attr(ck, "format_version", 1, &v));
    if (v != G1_FORMAT_VERSION)
        return G1_FAIL(G1_ERR_FORMAT,
                       "checkpoint %s has format_version %d; this program reads format_version %d only",
                       ck->path, (int)v, G1_FORMAT_VERSION);
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        int is_int = p->type == G1_PARAM_INT;
        G1_TRY(read_num_attr(ck, p->name, is_int, &v));
        if (is_int)
            *(int *)((char *)&ck->cfg + p->offset) = (int)v;
        else
            *(double *)((char *)&ck->cfg + p->offset) = v;
    }
    int got = g1_h5_get_params_crc(ck->file, &ck->params_crc[0]);
    ck->params_crc[1] = g1_h5_params_crc(&ck->cfg);
    ck->params_bad = got < 0 ? 2 : got == 1 && ck->params_crc[0] != ck->params_crc[1];
    if (g1_config_validate(&ck->cfg) != G1_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", g1_last_error());
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: %s%s", ck->path, msg,
                       ck->params_bad ? " (and the hyper-parameters do not match the checksum the file records for "
                                        "them: changed since the file was written)"
                                      : "");
    }
    return G1_OK;
}

g1_status g1_ckpt_check_header(const g1_ckpt *ck)
{
    if (!ck->params_bad || ck->skip_checksums)
        return G1_OK;
    if (ck->params_bad == 2)
        return G1_FAIL(G1_ERR_FORMAT,
                       "checkpoint %s: attribute %s (the hyper-parameters' checksum) is not one unsigned integer: "
                       "damaged, or written by another tool (grok1-run --skip-checksums loads it unchecked)",
                       ck->path, G1_H5_PARAMS_CRC_ATTR);
    return G1_FAIL(G1_ERR_FORMAT,
                   "checkpoint %s: its hyper-parameters do not match their checksum (CRC-32 %08x; the file records "
                   "%08x in %s): a root attribute was changed since the file was written (damaged, or edited by "
                   "hand). Copy it again, or convert it again (grok1-run --skip-checksums loads it unchecked)",
                   ck->path, (unsigned)ck->params_crc[1], (unsigned)ck->params_crc[0], G1_H5_PARAMS_CRC_ATTR);
}

/* A checkpoint in parts: the fingerprints grok1-link recorded (none in a
 * one-file checkpoint). */
static g1_status read_part_fp(g1_ckpt *ck)
{
    if (H5Aexists(ck->file, G1_H5_PART_FP_ATTR) <= 0 || ck->cfg.num_layers < 1)
        return G1_OK;
    size_t n = (size_t)ck->cfg.num_layers + 1;
    hid_t a = H5Aopen(ck->file, G1_H5_PART_FP_ATTR, H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    hssize_t got = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    ck->part_fp = got == (hssize_t)n ? malloc(n * sizeof *ck->part_fp) : NULL;
    herr_t e = ck->part_fp ? H5Aread(a, H5T_NATIVE_UINT64, ck->part_fp) : -1;
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    if (got == (hssize_t)n && !ck->part_fp) /* not the attribute's fault */
        return G1_FAIL(G1_ERR_NOMEM, "checkpoint %s: out of memory for its %zu part fingerprints", ck->path, n);
    if (e < 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: attribute %s is not %zu fingerprints (link the parts again)",
                       ck->path, G1_H5_PART_FP_ATTR, n);
    return G1_OK;
}

/* Whether `name` in `loc` is an external link (a checkpoint in parts:
 * grok1-link), looked at without following it. */
static int is_external(hid_t loc, const char *name)
{
    H5L_info_t info;
    return H5Lget_info(loc, name, &info, H5P_DEFAULT) >= 0 && info.type == H5L_TYPE_EXTERNAL;
}

/* Open dataset (group: 0) or group (1) `name` in `loc`. Through an external
 * link with our access lists, so that the part file opens like the
 * checkpoint; otherwise with the default ones. HDF5 1.10.8 crashes in its
 * shutdown (at exit, or inside MPI_Finalize) after an open failed with an
 * access list that carries a file access list for external links, which a
 * damaged object header makes happen: the default lists keep that to
 * objects behind a link, and a failure there asks the tool to end without
 * HDF5's shutdown (g1_h5_skip_shutdown). */
static hid_t open_obj(const g1_ckpt *ck, hid_t loc, const char *name, int group)
{
    int ext = is_external(loc, name);
    hid_t apl = !ext ? H5P_DEFAULT : group ? ck->gapl : ck->dapl;
    hid_t id = group ? H5Gopen2(loc, name, apl) : H5Dopen2(loc, name, apl);
    if (id < 0 && ext)
        g1_h5_skip_shutdown();
    return id;
}

/* What was loaded through a link must be what grok1-link saw: the
 * fingerprint of norm v of layer i (i == num_layers: the final norm), read
 * from a file that `obj` is in (-1: the final norm's, opened for the message). */
static g1_status check_part_fp(const g1_ckpt *ck, int i, hid_t obj, const char *what, const float *v)
{
    if (!ck->part_fp || g1_fnv1a64(G1_FNV1A64_START, v, (size_t)ck->cfg.emb_size * sizeof *v) == ck->part_fp[i])
        return G1_OK;
    char file[1024] = "", obj_name[32];
    if (i < ck->cfg.num_layers)
        snprintf(obj_name, sizeof obj_name, "layers/%02d", i);
    else
        snprintf(obj_name, sizeof obj_name, "the final norm");
    hid_t o = obj >= 0 ? obj : open_obj(ck, ck->file, "final_norm", 0);
    if (o >= 0)
        g1_h5_file_name(o, file, sizeof file);
    if (obj < 0 && o >= 0)
        H5Dclose(o);
    return G1_FAIL(G1_ERR_FORMAT,
                   "checkpoint %s: %s was read from %s, which is not the part grok1-link linked (its %s differs): "
                   "HDF5 found another file of that name first (in HDF5_EXT_PREFIX, beside the checkpoint, or in "
                   "the current directory), or the part was made again since; put the right part there, or link "
                   "the parts again",
                   ck->path, obj_name, *file ? file : "a part file", what);
}

g1_status g1_ckpt_check_part(g1_ckpt *ck, int i)
{
    const g1_config *c = &ck->cfg;
    if (!ck->part_fp || i < 0 || i > c->num_layers)
        return G1_OK;
    char name[32];
    snprintf(name, sizeof name, i < c->num_layers ? "layers/%02d" : "final_norm", i);
    float *v = malloc((size_t)c->emb_size * sizeof *v);
    if (!v) /* not "cannot be read" */
        return G1_FAIL(G1_ERR_NOMEM, "checkpoint %s: out of memory checking the part of %s", ck->path, name);
    hid_t g = i < c->num_layers ? open_obj(ck, ck->file, name, 1) : -1;
    hid_t d = i < c->num_layers ? (g < 0 ? -1 : H5Dopen2(g, "attn_norm", H5P_DEFAULT))
                                : open_obj(ck, ck->file, name, 0);
    hsize_t start[1] = {0}, count[1] = {(hsize_t)c->emb_size};
    g1_status st = d >= 0 && g1_h5_read_slab(d, H5T_NATIVE_FLOAT, 1, start, count, v) >= 0
                       ? check_part_fp(ck, i, d, i < c->num_layers ? "attn_norm" : "final norm", v)
                       : G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: %s%s cannot be read", ck->path, name,
                                 i < c->num_layers ? "/attn_norm" : "");
    if (d >= 0)
        H5Dclose(d);
    if (g >= 0)
        H5Gclose(g);
    free(v);
    return st;
}

/* ---- open / close ---- */

static g1_status open_file(const char *path, hid_t *out, hid_t apl[2])
{
    struct stat sb;
    if (stat(path, &sb))
        return G1_FAIL(G1_ERR_IO, "cannot open checkpoint %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return G1_FAIL(G1_ERR_IO, "cannot open checkpoint %s: it is a directory", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return G1_FAIL(G1_ERR_IO, "cannot open checkpoint %s: %s", path, strerror(errno));
    fclose(f);
#if H5_VERSION_GE(1, 12, 0)
    htri_t is_h5 = H5Fis_accessible(path, H5P_DEFAULT);
#else
    htri_t is_h5 = H5Fis_hdf5(path);
#endif
    if (is_h5 < 0) { /* it could not tell: not "not HDF5" (out of memory in HDF5, for one) */
        char why[256];
        g1_h5_said said = g1_h5_detail(why);
        if (said == G1_H5_SAID_NOTHING) /* HDF5 recorded nothing: it could not, without memory */
            snprintf(why, sizeof why, "it gave no reason: out of memory?");
        return G1_FAIL(said == G1_H5_SAID_NOMEM ? G1_ERR_NOMEM : G1_ERR_IO,
                       "cannot open checkpoint %s: HDF5 could not tell whether it is an HDF5 file (%s)", path, why);
    }
    if (is_h5 == 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s is not an HDF5 file", path);
    hid_t fapl = g1_h5_read_fapl(); /* many ranks at once, often on Lustre/NFS where flock fails */
    *out = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    char detail[256];
    g1_h5_said said = g1_h5_detail(detail);
    /* the part files of a checkpoint in parts open like the checkpoint */
    apl[0] = H5Pcreate(H5P_DATASET_ACCESS);
    apl[1] = H5Pcreate(H5P_GROUP_ACCESS);
    int ok = apl[0] >= 0 && apl[1] >= 0 && H5Pset_elink_fapl(apl[0], fapl) >= 0 &&
             H5Pset_elink_fapl(apl[1], fapl) >= 0;
    H5Pclose(fapl);
    if (*out >= 0 && !ok) {
        H5Fclose(*out);
        *out = -1;
    }
    for (int i = 0; i < 2 && *out < 0; i++)
        if (apl[i] >= 0)
            H5Pclose(apl[i]);
    if (*out < 0 && said == G1_H5_SAID_NOMEM) /* not the file's fault */
        return G1_FAIL(G1_ERR_NOMEM, "cannot open checkpoint %s: %s", path, detail);
    if (*out < 0 && said == G1_H5_SAID_NOTHING) /* HDF5 recorded nothing: it could not, without memory */
        return G1_FAIL(G1_ERR_FORMAT, "cannot open checkpoint %s: HDF5 gave no reason (out of memory, or a truncated "
                       "or damaged file?)", path);
    if (*out < 0)
        return G1_FAIL(G1_ERR_FORMAT, "cannot open checkpoint %s: HDF5 says '%s' (truncated or damaged file?)",
                       path, detail);
    return G1_OK;
}

g1_status g1_ckpt_open(const char *path, g1_ckpt **out)
{
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f, apl[2] = {-1, -1};
    G1_TRY(open_file(path, &f, apl));
    g1_ckpt *ck = calloc(1, sizeof *ck);
    char *p = strdup(path);
    if (!ck || !p) {
        free(ck);
        free(p);
        H5Fclose(f);
        H5Pclose(apl[0]);
        H5Pclose(apl[1]);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&ck->crc.mu, NULL);
    pthread_cond_init(&ck->crc.more, NULL);
    pthread_cond_init(&ck->crc.less, NULL);
    ck->file = f;
    ck->dapl = apl[0];
    ck->gapl = apl[1];
    ck->path = p;
    if (H5Fget_name(f, ck->file_name, sizeof ck->file_name) < 0)
        ck->file_name[0] = 0;
    g1_status st = read_header(ck);
    if (st == G1_OK)
        st = read_part_fp(ck);
    if (st != G1_OK) {
        g1_ckpt_close(ck);
        return st;
    }
    *out = ck;
    return G1_OK;
}

const g1_config *g1_ckpt_config(const g1_ckpt *ck) { return &ck->cfg; }

uint64_t g1_ckpt_bytes_read(const g1_ckpt *ck) { return ck->bytes_read; }

uint64_t g1_ckpt_bytes_checked(const g1_ckpt *ck) { return ck->bytes_checked; }

void g1_ckpt_set_checksums(g1_ckpt *ck, int on) { ck->skip_checksums = !on; }

static g1_status crc_wait(g1_ckpt *ck);

void g1_ckpt_close(g1_ckpt *ck)
{
    if (!ck)
        return;
    crc_checker *c = &ck->crc;
    (void)crc_wait(ck);
    pthread_mutex_lock(&c->mu);
    c->ending = 1;
    pthread_cond_signal(&c->more);
    pthread_mutex_unlock(&c->mu);
    if (c->started)
        pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->less);
    pthread_cond_destroy(&c->more);
    pthread_mutex_destroy(&c->mu);
    H5Fclose(ck->file);
    H5Pclose(ck->dapl);
    H5Pclose(ck->gapl);
    free(ck->part_fp);
    free(ck->path);
    free(ck);
}

/* ---- datasets ---- */

static void fmt_shape(char *buf, size_t n, int rank, const hsize_t *dims)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
}

static void fmt_type(char *buf, size_t n, hid_t t)
{
    H5T_class_t c = H5Tget_class(t);
    size_t bits = H5Tget_size(t) * 8;
    if (c == H5T_INTEGER)
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
    else if (c == H5T_FLOAT)
        snprintf(buf, n, "float%zu", bits);
    else if (c == H5T_STRING)
        snprintf(buf, n, "string");
    else
        snprintf(buf, n, "HDF5 type class %d", (int)c);
}

static void close_dset(dset *d)
{
    if (d->id >= 0)
        H5Dclose(d->id);
    d->id = -1;
    free(d->crc);
    d->crc = NULL;
    d->ncrc = 0;
}

/* The dataset's checksums (G1_H5_CRC_ATTR), when it has them: one per
 * expert for a 3-dimensional (expert) dataset, else one. */
static g1_status read_crcs(dset *d)
{
    size_t want = d->rank == 3 ? (size_t)d->dims[0] : 1;
    d->crc = malloc((want ? want : 1) * sizeof *d->crc);
    if (!d->crc)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    int n = g1_h5_get_crcs(d->id, d->crc, want ? want : 1);
    if (n == 0) {
        free(d->crc);
        d->crc = NULL;
        return G1_OK;
    }
    if (n < 0 || (size_t)n != want)
        return G1_FAIL(G1_ERR_FORMAT,
                       "checkpoint %s has a %s attribute that is not %zu unsigned integer%s (one per %s): not "
                       "written by grok1-convert or grok1-mkckpt?",
                       d->name, G1_H5_CRC_ATTR, want, want == 1 ? "" : "s", d->rank == 3 ? "expert" : "dataset");
    d->ncrc = n;
    return G1_OK;
}

/* "layers/03/moe_up expert 5 in part file P": checksum idx of d. */
static void crc_what(const dset *d, int idx, char *out, size_t size)
{
    char which[32] = "";
    if (d->rank == 3)
        snprintf(which, sizeof which, " expert %d", idx);
    snprintf(out, size, "%.*s%s%s", d->base_len, d->name, which, d->name + d->base_len);
}

static void crc_message(char *out, size_t size, const char *path, const char *what, uint32_t got, uint32_t want)
{
    snprintf(out, size,
             "checkpoint %s: %s does not match its checksum (CRC-32 %08x; the file records %08x): the file is "
             "damaged (cut short or changed since it was written). Copy it again, or convert it again (grok1-run "
             "--skip-checksums loads it unchecked)",
             path, what, (unsigned)got, (unsigned)want);
}

/* A read's bytes (n of them; crc their CRC-32) are all of checksum idx of
 * d (the dataset, or expert idx): compare, when it has checksums. */
static g1_status check_crc(g1_ckpt *ck, const dset *d, int idx, uint32_t crc, uint64_t n)
{
    if (!d->ncrc || ck->skip_checksums)
        return G1_OK;
    if (crc != d->crc[idx]) {
        char what[1300], msg[1600];
        crc_what(d, idx, what, sizeof what);
        crc_message(msg, sizeof msg, ck->path, what, crc, d->crc[idx]);
        return G1_FAIL(G1_ERR_FORMAT, "%s", msg);
    }
    ck->bytes_checked += n;
    return G1_OK;
}

static void *crc_main(void *arg)
{
    g1_ckpt *ck = arg;
    crc_checker *c = &ck->crc;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->head && !c->ending)
            pthread_cond_wait(&c->more, &c->mu);
        crc_job *j = c->head;
        if (!j)
            break;
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        if (!c->failed) {
            c->busy = 1;
            pthread_mutex_unlock(&c->mu);
            uint32_t got = g1_h5_crc32_here(j->buf, (size_t)j->n);
            pthread_mutex_lock(&c->mu);
            c->busy = 0;
            if (got == j->want)
                c->checked += j->n;
            else if (!c->failed) {
                c->failed = 1;
                crc_message(c->msg, sizeof c->msg, ck->path, j->what, got, j->want);
            }
        }
        free(j);
        pthread_cond_broadcast(&c->less);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Every tensor given to the checker compared: the first mismatch, or
 * G1_OK. The buffers given may be freed or read into after this. */
static g1_status crc_wait(g1_ckpt *ck)
{
    crc_checker *c = &ck->crc;
    pthread_mutex_lock(&c->mu);
    while (c->head || c->busy)
        pthread_cond_wait(&c->less, &c->mu);
    ck->bytes_checked += c->checked;
    c->checked = 0;
    int failed = c->failed;
    char msg[sizeof c->msg];
    memcpy(msg, c->msg, sizeof msg);
    c->failed = 0;
    pthread_mutex_unlock(&c->mu);
    return failed ? G1_FAIL(G1_ERR_FORMAT, "%s", msg) : G1_OK;
}

/* check_buf on the checker's thread: buf (n bytes, checksum idx of d) must
 * stay as it is until crc_wait. A mismatch already found is returned at
 * once (the load stops at the next tensor); otherwise G1_OK, the result at
 * crc_wait. On one thread when the checker cannot start. */
static g1_status check_later(g1_ckpt *ck, const dset *d, int idx, const void *buf, uint64_t n)
{
    if (!d->ncrc || ck->skip_checksums)
        return G1_OK;
    crc_checker *c = &ck->crc;
    crc_job *j = malloc(sizeof *j);
    if (!j)
        return check_crc(ck, d, idx, g1_h5_crc32(buf, (size_t)n), n);
    *j = (crc_job){.buf = buf, .n = n, .want = d->crc[idx]};
    crc_what(d, idx, j->what, sizeof j->what);
    pthread_mutex_lock(&c->mu);
    if (c->failed) {
        pthread_mutex_unlock(&c->mu);
        free(j);
        return crc_wait(ck);
    }
    if (!c->started) {
        /* signals (SIGTERM, ^C) go to the loading thread, not this one */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        c->started = pthread_create(&c->thread, NULL, crc_main, ck) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!c->started) {
            pthread_mutex_unlock(&c->mu);
            free(j);
            return check_crc(ck, d, idx, g1_h5_crc32(buf, (size_t)n), n);
        }
    }
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    pthread_cond_signal(&c->more);
    pthread_mutex_unlock(&c->mu);
    return G1_OK;
}

/* The same from the bytes themselves (not computed when not compared). */
static g1_status check_buf(g1_ckpt *ck, const dset *d, int idx, const void *buf, uint64_t n)
{
    if (!d->ncrc || ck->skip_checksums)
        return G1_OK;
    return check_crc(ck, d, idx, g1_h5_crc32(buf, (size_t)n), n);
}

static g1_status check_type(const dset *d, dkind kind)
{
    hid_t t = H5Dget_type(d->id);
    H5T_class_t c = H5Tget_class(t);
    int ok = kind == KIND_I8 ? (c == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_2)
                             : c == H5T_FLOAT;
    char found[64];
    fmt_type(found, sizeof found, t);
    H5Tclose(t);
    if (!ok)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has type %s, expected %s", d->name, found,
                       kind == KIND_I8 ? "int8" : "float32");
    return G1_OK;
}

/* Opening `name` in `loc` (`shown` in messages) as `what` failed. When it
 * is an external link, the checkpoint is in parts (grok1-link): say which
 * part file and where HDF5 looked for it. */
static g1_status link_failure(const g1_ckpt *ck, hid_t loc, const char *name, const char *shown, const char *what)
{
    char detail[256];
    g1_h5_detail(detail);
    H5L_info_t info;
    if (H5Lget_info(loc, name, &info, H5P_DEFAULT) < 0 || info.type != H5L_TYPE_EXTERNAL || !info.u.val_size)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s is not %s", shown, what);
    char *buf = malloc(info.u.val_size);
    const char *file = NULL, *obj = NULL;
    unsigned flags;
    if (!buf || H5Lget_val(loc, name, buf, info.u.val_size, H5P_DEFAULT) < 0 ||
        H5Lunpack_elink_val(buf, info.u.val_size, &flags, &file, &obj) < 0 || !file || !obj) {
        free(buf);
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: %s is an external link that cannot be read", ck->path,
                       shown);
    }
    const char *prefix = getenv("HDF5_EXT_PREFIX");
    g1_status st;
    /* the file, not the object in it: HDF5's innermost message depends on
     * where its last lookup failed, so a missing file is looked for here */
    if (strstr(detail, "unable to open external file") || !g1_h5_part_present(ck->path, file))
        st = G1_FAIL(G1_ERR_IO,
                     "checkpoint %s: %s is in part file %s (as %s; a checkpoint in parts, grok1-link), which cannot "
                     "be opened (HDF5 says '%s'). HDF5 looks for a part in the folders of HDF5_EXT_PREFIX (%s), "
                     "then beside %s, then in the current directory; put the part there, or link the parts again",
                     ck->path, shown, file, obj, detail, prefix && *prefix ? prefix : "not set", ck->path);
    else
        st = G1_FAIL(G1_ERR_FORMAT,
                     "checkpoint %s: %s is linked to %s in part file %s, but HDF5 says '%s': the file found under "
                     "that name is not the part grok1-link linked (made again since, or another file of that name "
                     "found first in HDF5_EXT_PREFIX (%s), beside the checkpoint or in the current directory); put "
                     "the right part there, or link the parts again",
                     ck->path, shown, obj, file, detail, prefix && *prefix ? prefix : "not set");
    free(buf);
    return st;
}

/* Open `name` in `loc` (group path `dir` for messages), check its element
 * kind, fill rank and dims. */
static g1_status open_dset(const g1_ckpt *ck, hid_t loc, const char *dir, const char *name, dkind kind, dset *d)
{
    memset(d, 0, sizeof *d);
    d->id = -1;
    char file[1024] = "";
    g1_h5_file_name(loc, file, sizeof file);
    int other = *file && strcmp(file, ck->file_name); /* a group in a part file */
    snprintf(d->name, sizeof d->name, "%s%s%s", dir, *dir ? "/" : "", name);
    d->base_len = (int)strlen(d->name);
    snprintf(d->name + d->base_len, sizeof d->name - (size_t)d->base_len, "%s%s", other ? " in part file " : "",
             other ? file : "");
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint has no dataset %s", d->name);
    d->id = open_obj(ck, loc, name, 0);
    if (d->id < 0)
        return link_failure(ck, loc, name, d->name, "a dataset");
    g1_status st = check_type(d, kind);
    hid_t sp = H5Dget_space(d->id);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK];
    if (st == G1_OK && (rank < 0 || rank > 3)) {
        st = G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has %d dimensions, expected at most 3", d->name, rank);
    } else if (st == G1_OK) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        d->rank = rank;
        memcpy(d->dims, dims, (size_t)rank * sizeof *dims);
        hid_t t = H5Dget_type(d->id);
        d->esize = H5Tget_size(t);
        H5Tclose(t);
    }
    H5Sclose(sp);
    if (st != G1_OK)
        close_dset(d);
    return st;
}

static int same_shape(const dset *d, int rank, const hsize_t *dims)
{
    if (d->rank != rank)
        return 0;
    for (int i = 0; i < rank; i++)
        if (d->dims[i] != dims[i])
            return 0;
    return 1;
}

static g1_status shape_error(const dset *d, int rank, const hsize_t *dims, const char *hint)
{
    char found[96], want[96];
    fmt_shape(found, sizeof found, d->rank, d->dims);
    fmt_shape(want, sizeof want, rank, dims);
    return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has shape %s, expected %s%s", d->name, found, want, hint);
}

/* The checksums of d, once its shape is known to be right (their count
 * follows it); none when checksums are skipped (not even their form is
 * looked at). Closes d on failure. */
static g1_status open_crcs(const g1_ckpt *ck, dset *d)
{
    g1_status st = ck->skip_checksums ? G1_OK : read_crcs(d);
    if (st != G1_OK)
        close_dset(d);
    return st;
}

/* open_dset + exact shape check + checksums; closes on failure. */
static g1_status open_shaped(const g1_ckpt *ck, hid_t loc, const char *dir, const char *name, dkind kind,
                             int rank, const hsize_t *dims, dset *d)
{
    G1_TRY(open_dset(ck, loc, dir, name, kind, d));
    if (!same_shape(d, rank, dims)) {
        close_dset(d);
        return shape_error(d, rank, dims, "");
    }
    return open_crcs(ck, d);
}

/* Read the hyperslab [start, start+count) into buf as `memtype`. */
static g1_status read_slab(g1_ckpt *ck, const dset *d, hid_t memtype, const hsize_t *start, const hsize_t *count,
                           void *buf)
{
    herr_t e = g1_h5_read_slab(d->id, memtype, d->rank, start, count, buf);
    char detail[1600];
    if (e < 0)
        g1_h5_read_detail(d->id, detail, sizeof detail, NULL);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "checkpoint %s: reading %s failed: %s", ck->path, d->name, detail);
    uint64_t n = d->esize;
    for (int i = 0; i < d->rank; i++)
        n *= count[i];
    ck->bytes_read += n;
    return G1_OK;
}

/* The whole dataset, compared with its checksum (as float32 or int8 in
 * memory: what the checksums are of); `later`: on the checker's thread
 * (check_later: buf stays until crc_wait). */
static g1_status read_all(g1_ckpt *ck, const dset *d, hid_t memtype, void *buf, int later)
{
    hsize_t start[3] = {0, 0, 0};
    G1_TRY(read_slab(ck, d, memtype, start, d->dims, buf));
    uint64_t n = H5Tget_size(memtype);
    for (int i = 0; i < d->rank; i++)
        n *= d->dims[i];
    return later ? check_later(ck, d, 0, buf, n) : check_buf(ck, d, 0, buf, n);
}

/* A NaN or an infinity in a float tensor (a scale, a norm, the router, the
 * embedding) would show only as NaN logits at the first request, naming
 * nothing: refused at the load, with the tensor. v: n values of d (expert
 * idx), from element `at` on. */
static g1_status check_finite(const g1_ckpt *ck, const dset *d, int idx, const float *v, size_t n, uint64_t at)
{
    size_t i = 0;
    while (i < n && isfinite(v[i]))
        i++;
    if (i == n)
        return G1_OK;
    char what[1200];
    crc_what(d, idx, what, sizeof what);
    return G1_FAIL(G1_ERR_FORMAT,
                   "checkpoint %s: %s holds %s (element %llu): a damaged file (grok1-checksum tells) or a wrong "
                   "conversion",
                   ck->path, what, isnan(v[i]) ? "a NaN" : "an infinity", (unsigned long long)(at + i));
}

/* A whole float dataset of the given shape, finite. */
static g1_status read_floats(g1_ckpt *ck, hid_t loc, const char *dir, const char *name, int rank,
                             const hsize_t *dims, float *out)
{
    dset d;
    G1_TRY(open_shaped(ck, loc, dir, name, KIND_F32, rank, dims, &d));
    g1_status st = read_all(ck, &d, H5T_NATIVE_FLOAT, out, 0);
    size_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    if (st == G1_OK)
        st = check_finite(ck, &d, 0, out, n, 0);
    close_dset(&d);
    return st;
}

/* ---- quantised matrices ---- */

static int is_expert(g1_qmat_id id) { return id >= G1_MOE_GATE; }

/* Expected shape of a weight (blocks < 0) or of its scale. */
static int qmat_dims(const g1_config *c, g1_qmat_id id, int blocks, hsize_t *dims)
{
    int rows, cols, r = 0;
    g1_qmat_shape(c, id, &rows, &cols);
    if (is_expert(id))
        dims[r++] = (hsize_t)c->num_experts;
    dims[r++] = (hsize_t)(blocks < 0 ? rows : blocks);
    dims[r++] = (hsize_t)cols;
    return r;
}

/* Row blocks of matrix `id` in layer group `g`, read from its scale's shape. */
static g1_status scale_blocks(g1_ckpt *ck, hid_t g, const char *dir, g1_qmat_id id, int *blocks)
{
    char name[64];
    snprintf(name, sizeof name, "%s_scale", g1_qmat_names[id]);
    dset d;
    G1_TRY(open_dset(ck, g, dir, name, KIND_F32, &d));
    close_dset(&d);
    hsize_t want[3];
    int rank = qmat_dims(&ck->cfg, id, 1, want);
    hsize_t b = d.rank == rank ? d.dims[rank - 2] : 1;
    want[rank - 2] = b; /* any block count, checked below */
    if (!same_shape(&d, rank, want))
        return shape_error(&d, rank, want, "");
    int rows, cols;
    g1_qmat_shape(&ck->cfg, id, &rows, &cols);
    if (b < 1 || (hsize_t)rows % b)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has %llu row blocks, which do not divide the %d rows of %s",
                       d.name, (unsigned long long)b, rows, g1_qmat_names[id]);
    *blocks = (int)b;
    return G1_OK;
}

static g1_status open_layer(const g1_ckpt *ck, int layer, char dir[32], hid_t *g)
{
    snprintf(dir, 32, "layers/%02d", layer);
    if (H5Lexists(ck->file, "layers", H5P_DEFAULT) <= 0 || H5Lexists(ck->file, dir, H5P_DEFAULT) <= 0)
        return G1_FAIL(G1_ERR_FORMAT,
                       "checkpoint has no %s: is it one part of a checkpoint (grok1-convert --layers)? "
                       "grok1-link joins the parts",
                       dir);
    *g = open_obj(ck, ck->file, dir, 1);
    if (*g < 0)
        return link_failure(ck, ck->file, dir, dir, "a group");
    return G1_OK;
}

static herr_t layer_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g, (void)info;
    const g1_ckpt *ck = data;
    int l = g1_h5_layer_index(name);
    if (l < 0) {
        (void)G1_FAIL(G1_ERR_FORMAT, "checkpoint %s has layers/%s, which is not a layer's name (00, 01, ...)", ck->path,
                name);
        return 1;
    }
    if (l >= ck->cfg.num_layers) {
        (void)G1_FAIL(G1_ERR_FORMAT,
                "checkpoint %s has layers/%s, but its num_layers is %d (layers/00 to layers/%02d): a layer the "
                "model does not have (num_layers changed, or a group added by hand?)",
                ck->path, name, ck->cfg.num_layers, ck->cfg.num_layers - 1);
        return 1;
    }
    return 0;
}

/* Every member of group "layers" is a layer of the model: one more (a
 * checkpoint of more layers, num_layers edited) was left unread. */
static g1_status check_layer_names(const g1_ckpt *ck)
{
    if (H5Lexists(ck->file, "layers", H5P_DEFAULT) <= 0 || is_external(ck->file, "layers"))
        return G1_OK; /* no layer is found, or it is told, at the load */
    hid_t g = H5Gopen2(ck->file, "layers", H5P_DEFAULT);
    if (g < 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: layers is not a group", ck->path);
    hsize_t idx = 0;
    herr_t e = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, layer_name, (void *)ck);
    H5Gclose(g);
    if (e > 0)
        return G1_ERR_FORMAT; /* recorded by layer_name */
    if (e < 0)
        return G1_FAIL(G1_ERR_FORMAT, "checkpoint %s: cannot list its layers", ck->path);
    return G1_OK;
}

/* Block counts of every matrix kind, from the first layer to load. */
static g1_status find_blocks(g1_ckpt *ck, int layer, int blocks[G1_NUM_QMAT])
{
    char dir[32];
    hid_t g;
    G1_TRY(open_layer(ck, layer, dir, &g));
    g1_status st = G1_OK;
    for (int i = 0; i < G1_NUM_QMAT && st == G1_OK; i++)
        st = scale_blocks(ck, g, dir, (g1_qmat_id)i, &blocks[i]);
    H5Gclose(g);
    return st;
}

/* Open weight and scale of matrix `id`, shapes checked against `blocks`. */
static g1_status open_qmat(g1_ckpt *ck, hid_t g, const char *dir, g1_qmat_id id, int blocks, int first_layer,
                           dset *w, dset *s)
{
    hsize_t dims[3];
    int rank = qmat_dims(&ck->cfg, id, -1, dims);
    G1_TRY(open_shaped(ck, g, dir, g1_qmat_names[id], KIND_I8, rank, dims, w));
    char name[64], hint[128];
    snprintf(name, sizeof name, "%s_scale", g1_qmat_names[id]);
    g1_status st = open_dset(ck, g, dir, name, KIND_F32, s);
    qmat_dims(&ck->cfg, id, blocks, dims);
    if (st == G1_OK && !same_shape(s, rank, dims)) {
        snprintf(hint, sizeof hint, " (%d row blocks, as in layers/%02d: a matrix kind must have the same in every layer)",
                 blocks, first_layer);
        close_dset(s);
        st = shape_error(s, rank, dims, hint);
    } else if (st == G1_OK) {
        st = open_crcs(ck, s);
    }
    if (st != G1_OK)
        close_dset(w);
    return st;
}

/* Matrix `id` of one layer into q[0 .. e1-e0) (one matrix for attention);
 * their checksums compared on the checker's thread (crc_wait). */
static g1_status load_qmat(g1_ckpt *ck, hid_t g, const char *dir, g1_qmat_id id, int e0, int e1, int first_layer,
                           g1_qmat *q)
{
    dset w, s;
    G1_TRY(open_qmat(ck, g, dir, id, q[0].blocks, first_layer, &w, &s));
    g1_status st = G1_OK;
    if (!is_expert(id)) {
        st = read_all(ck, &w, H5T_NATIVE_INT8, q->w, 1);
        if (st == G1_OK)
            st = read_all(ck, &s, H5T_NATIVE_FLOAT, q->scale, 1);
        if (st == G1_OK)
            st = check_finite(ck, &s, 0, q->scale, (size_t)(s.dims[0] * s.dims[1]), 0);
    }
    for (int e = e0; is_expert(id) && e < e1 && st == G1_OK; e++) {
        /* one expert: one chunk, one contiguous read */
        g1_qmat *m = &q[e - e0];
        hsize_t start[3] = {(hsize_t)e, 0, 0};
        hsize_t cw[3] = {1, w.dims[1], w.dims[2]}, cs[3] = {1, s.dims[1], s.dims[2]};
        st = read_slab(ck, &w, H5T_NATIVE_INT8, start, cw, m->w);
        if (st == G1_OK)
            st = check_later(ck, &w, e, m->w, (uint64_t)(cw[1] * cw[2]));
        if (st == G1_OK)
            st = read_slab(ck, &s, H5T_NATIVE_FLOAT, start, cs, m->scale);
        if (st == G1_OK)
            st = check_later(ck, &s, e, m->scale, (uint64_t)(cs[1] * cs[2]) * sizeof(float));
        if (st == G1_OK)
            st = check_finite(ck, &s, e, m->scale, (size_t)(cs[1] * cs[2]), 0);
    }
    close_dset(&w);
    close_dset(&s);
    return st;
}

static g1_status load_layer_in(g1_ckpt *ck, hid_t g, const char *dir, g1_weights *w, g1_layer_weights *L)
{
    const g1_config *c = &ck->cfg;
    hsize_t dv[1] = {(hsize_t)c->emb_size}, dr[2] = {(hsize_t)c->emb_size, (hsize_t)c->num_experts};
    for (int n = 0; n < G1_NUM_NORM; n++)
        G1_TRY(read_floats(ck, g, dir, g1_norm_names[n], 1, dv, L->norm[n]));
    for (int i = 0; i < 4; i++)
        G1_TRY(load_qmat(ck, g, dir, (g1_qmat_id)i, 0, 1, w->layer0, &L->attn[i]));
    G1_TRY(read_floats(ck, g, dir, "router", 2, dr, L->router));
    for (int m = 0; m < 3; m++)
        G1_TRY(load_qmat(ck, g, dir, (g1_qmat_id)(G1_MOE_GATE + m), w->expert0, w->expert1, w->layer0, L->moe[m]));
    return G1_OK;
}

static g1_status load_layer(g1_ckpt *ck, int layer, g1_weights *w)
{
    char dir[32];
    hid_t g;
    G1_TRY(open_layer(ck, layer, dir, &g));
    g1_layer_weights *L = &w->layers[layer - w->layer0];
    g1_status st = load_layer_in(ck, g, dir, w, L);
    if (st == G1_OK)
        st = check_part_fp(ck, layer, g, "attn_norm", L->norm[G1_ATTN_NORM]);
    H5Gclose(g);
    return st;
}

/* A part made with --no-embedding given as the whole model. */
static g1_status has_embedding(const g1_ckpt *ck)
{
    if (H5Lexists(ck->file, "embedding", H5P_DEFAULT) > 0)
        return G1_OK;
    return G1_FAIL(G1_ERR_FORMAT,
                   "checkpoint %s has no embedding: is it one part of a checkpoint (grok1-convert --layers "
                   "--no-embedding)? grok1-link joins the parts",
                   ck->path);
}

/* ---- embedding ---- */

/* Rows per read: about EMBED_SLAB_BYTES, a whole number of chunks. */
static hsize_t embed_slab_rows(const dset *d)
{
    hsize_t row_bytes = d->dims[1] * sizeof(float), rows = EMBED_SLAB_BYTES / (row_bytes ? row_bytes : 1);
    hid_t dcpl = H5Dget_create_plist(d->id);
    hsize_t chunk[2];
    if (H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, chunk) == 2 && chunk[0] > 0)
        rows = rows / chunk[0] * chunk[0];
    H5Pclose(dcpl);
    if (rows < 1)
        rows = 1;
    return rows < d->dims[0] ? rows : d->dims[0];
}

static g1_status load_embedding(g1_ckpt *ck, g1_weights *w)
{
    const g1_config *c = &ck->cfg;
    hsize_t dims[2] = {(hsize_t)c->vocab_size, (hsize_t)c->emb_size};
    G1_TRY(has_embedding(ck));
    G1_TRY(read_floats(ck, ck->file, "", "final_norm", 1, &dims[1], w->final_norm));
    G1_TRY(check_part_fp(ck, c->num_layers, -1, "final norm", w->final_norm));
    dset d;
    G1_TRY(open_shaped(ck, ck->file, "", "embedding", KIND_F32, 2, dims, &d));
    hsize_t slab = embed_slab_rows(&d);
    float *buf = malloc((size_t)(slab * dims[1]) * sizeof *buf);
    g1_status st = buf ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    int crc_on = d.ncrc && !ck->skip_checksums;
    uint32_t crc = 0; /* of the rows read so far */
    for (hsize_t r = 0; r < dims[0] && st == G1_OK; r += slab) {
        hsize_t start[2] = {r, 0}, count[2] = {dims[0] - r < slab ? dims[0] - r : slab, dims[1]};
        st = read_slab(ck, &d, H5T_NATIVE_FLOAT, start, count, buf);
        size_t n = (size_t)(count[0] * count[1]);
        if (st == G1_OK && crc_on)
            crc = r ? g1_h5_crc32_join(crc, g1_h5_crc32(buf, n * sizeof *buf), n * sizeof *buf)
                    : g1_h5_crc32(buf, n * sizeof *buf);
        if (st == G1_OK)
            st = check_finite(ck, &d, 0, buf, n, (uint64_t)(r * dims[1]));
        uint16_t *dst = w->embedding + (size_t)(r * dims[1]);
        for (size_t i = 0; st == G1_OK && i < n; i++)
            dst[i] = g1_f32_to_bf16(buf[i]);
    }
    if (st == G1_OK && crc_on)
        st = check_crc(ck, &d, 0, crc, (uint64_t)(dims[0] * dims[1]) * sizeof *buf);
    free(buf);
    close_dset(&d);
    return st;
}

/* ---- fingerprint ---- */

#define FP_EMBED_ROWS 64

g1_status g1_ckpt_fingerprint(g1_ckpt *ck, char hex[17])
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const g1_config *c = &ck->cfg;
    hsize_t V = (hsize_t)c->vocab_size, D = (hsize_t)c->emb_size;
    float *v = malloc(D * sizeof *v);
    if (!v)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    uint64_t saved = ck->bytes_read, saved_checked = ck->bytes_checked, h = G1_FNV1A64_START;
    dset d = {.id = -1};
    g1_status st = has_embedding(ck);
    if (st == G1_OK)
        st = open_shaped(ck, ck->file, "", "final_norm", KIND_F32, 1, &D, &d);
    if (st == G1_OK) {
        st = read_all(ck, &d, H5T_NATIVE_FLOAT, v, 0);
        close_dset(&d);
    }
    hsize_t dims[2] = {V, D};
    if (st == G1_OK)
        st = open_shaped(ck, ck->file, "", "embedding", KIND_F32, 2, dims, &d);
    for (int k = -1; st == G1_OK && k < FP_EMBED_ROWS; k++) {
        if (k >= 0) {
            hsize_t start[2] = {(V - 1) * (hsize_t)k / (FP_EMBED_ROWS - 1), 0}, count[2] = {1, D};
            st = read_slab(ck, &d, H5T_NATIVE_FLOAT, start, count, v);
        }
        if (st == G1_OK)
            h = g1_fnv1a64(h, v, D * sizeof *v);
    }
    close_dset(&d); /* idempotent: a failed open left it closed */
    ck->bytes_read = saved; /* not part of the share a rank loads */
    ck->bytes_checked = saved_checked;
    free(v);
    if (st == G1_OK)
        snprintf(hex, 17, "%016llx", (unsigned long long)h);
    return st;
}

/* ---- load ---- */

static g1_status load_into(g1_ckpt *ck, int l0, int l1, int e0, int e1, int with_embedding, g1_weights *w)
{
    const g1_config *c = &ck->cfg;
    G1_TRY(g1_ckpt_check_header(ck));
    G1_TRY(check_layer_names(ck));
    if (l0 < 0 || l1 > c->num_layers || l0 > l1)
        return G1_FAIL(G1_ERR_ARG, "layer range [%d,%d) outside the checkpoint's %d layers", l0, l1, c->num_layers);
    if (e0 < 0 || e1 > c->num_experts || e0 >= e1)
        return G1_FAIL(G1_ERR_ARG, "expert range [%d,%d) outside the checkpoint's %d experts", e0, e1,
                       c->num_experts);
    int blocks[G1_NUM_QMAT];
    for (int i = 0; i < G1_NUM_QMAT; i++)
        blocks[i] = 1; /* no layer to load: any count dividing the rows */
    if (l1 > l0)
        G1_TRY(find_blocks(ck, l0, blocks));
    G1_TRY(g1_weights_realloc(w, c, l0, l1, e0, e1, blocks, with_embedding));
    if (with_embedding)
        G1_TRY(load_embedding(ck, w));
    for (int l = l0; l < l1; l++)
        G1_TRY(load_layer(ck, l, w));
    return G1_OK;
}

g1_status g1_ckpt_load(g1_ckpt *ck, int l0, int l1, int e0, int e1, int with_embedding, g1_weights *w)
{
    memset(w, 0, sizeof *w);
    return g1_ckpt_load_reuse(ck, l0, l1, e0, e1, with_embedding, w);
}

g1_status g1_ckpt_load_reuse(g1_ckpt *ck, int l0, int l1, int e0, int e1, int with_embedding, g1_weights *w)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g1_status st = load_into(ck, l0, l1, e0, e1, with_embedding, w);
    /* the checker is done with the weights before they are used or freed;
     * a mismatch it found comes first (the load may have stopped for it) */
    g1_status cs = crc_wait(ck);
    if (cs != G1_OK)
        st = cs;
    if (st == G1_OK)
        st = g1_weights_prepare(w);
    if (st != G1_OK)
        g1_weights_free(w);
    return st;
}
