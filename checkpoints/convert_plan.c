/* grok1-convert's plan: which release files a conversion needs (file order =
 * embedding, final norm, then 12 files per layer with the layers in
 * lexicographic order of their index), checks of the directory against the
 * config, and a pickle scan of every needed file before anything is written. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"

/* Item j of a layer: release name, and where it goes. */
static const struct {
    const char *release;
    cv_kind kind;
    int id; /* g1_qmat_id or g1_norm_id */
} items[CV_PER_LAYER] = {
    {"moe/linear (W1, GELU branch)", CV_QMAT, G1_MOE_GATE},
    {"moe/linear_1 (W2, down)", CV_QMAT, G1_MOE_DOWN},
    {"moe/linear_v (Wv, linear branch)", CV_QMAT, G1_MOE_UP},
    {"multi_head_attention/key", CV_QMAT, G1_ATTN_K},
    {"multi_head_attention/linear (output)", CV_QMAT, G1_ATTN_O},
    {"multi_head_attention/query", CV_QMAT, G1_ATTN_Q},
    {"multi_head_attention/value", CV_QMAT, G1_ATTN_V},
    {"rms_norm", CV_NORM, G1_ATTN_NORM},
    {"rms_norm_1", CV_NORM, G1_ATTN_OUT_NORM},
    {"rms_norm_2", CV_NORM, G1_MOE_NORM},
    {"rms_norm_3", CV_NORM, G1_MOE_OUT_NORM},
    {"router", CV_ROUTER, 0},
};

const char *cv_item_name(int j) { return items[j].release; }

static int cmp_decimal(const void *a, const void *b)
{
    char x[16], y[16];
    snprintf(x, sizeof x, "%d", *(const int *)a);
    snprintf(y, sizeof y, "%d", *(const int *)b);
    return strcmp(x, y);
}

/* Position of each layer in the release's file order. */
static g1_status layer_positions(int L, int **pos)
{
    int *order = malloc(sizeof *order * (size_t)L);
    *pos = malloc(sizeof **pos * (size_t)L);
    if (!order || !*pos) {
        free(order);
        free(*pos);
        *pos = NULL;
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < L; i++)
        order[i] = i;
    qsort(order, (size_t)L, sizeof *order, cmp_decimal);
    for (int k = 0; k < L; k++)
        (*pos)[order[k]] = k;
    free(order);
    return G1_OK;
}

/* "tensorNNNNN_000" -> NNNNN, or -1. */
static int parse_name(const char *s)
{
    if (strncmp(s, "tensor", 6) || strlen(s) != 15 || strcmp(s + 11, "_000"))
        return -1;
    int v = 0;
    for (int i = 6; i < 11; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Which indices are present; refuses names the release does not have. */
static g1_status list_dir(const char *dir, int n_expected, uint8_t *present)
{
    DIR *d = opendir(dir);
    if (!d)
        return G1_FAIL(G1_ERR_IO, "cannot open the checkpoint directory %s: %s", dir, strerror(errno));
    g1_status st = G1_OK;
    struct dirent *e;
    while (st == G1_OK && (e = readdir(d))) {
        if (strncmp(e->d_name, "tensor", 6))
            continue; /* ".", "..", a README: not part of the release's tensor set */
        int idx = parse_name(e->d_name);
        if (idx < 0)
            st = G1_FAIL(G1_ERR_FORMAT, "%s/%s: unexpected file name (the release has tensorNNNNN_000 only)",
                         dir, e->d_name);
        else if (idx >= n_expected)
            st = G1_FAIL(G1_ERR_FORMAT, "%s/%s: extra file: the config's layers imply %d files "
                         "(tensor00000_000 .. tensor%05d_000): wrong --config, or a file that does not belong?",
                         dir, e->d_name, n_expected, n_expected - 1);
        else
            present[idx] = 1;
    }
    closedir(d);
    return st;
}

static void describe(const cv_file *f, const cv_job *job, char *buf, size_t n)
{
    if (f->kind == CV_EMBEDDING)
        snprintf(buf, n, "embedding");
    else if (f->kind == CV_FINAL_NORM)
        snprintf(buf, n, "final norm");
    else
        snprintf(buf, n, "layer %d %s", f->layer, cv_item_name((f->index - 2) % CV_PER_LAYER));
    (void)job;
}

static void shape_str(const int64_t *s, int nd, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)s[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
}

static g1_status want_shape(const cv_file *f, const cv_job *job, const g1_pickle_array *a, const char *what,
                            g1_pickle_dtype dt, int nd, const int64_t *shape)
{
    char d[96], got[96], want[96];
    describe(f, job, d, sizeof d);
    shape_str(a->shape, a->ndim, got, sizeof got);
    shape_str(shape, nd, want, sizeof want);
    if (a->dtype != dt)
        return G1_FAIL(G1_ERR_FORMAT, "%s (%s%s): dtype %s, expected %s", f->path, d, what,
                       g1_pickle_dtype_name(a->dtype), g1_pickle_dtype_name(dt));
    int same = a->ndim == nd;
    for (int i = 0; same && i < nd; i++)
        same = shape[i] < 0 ? a->shape[i] > 0 : a->shape[i] == shape[i];
    if (!same)
        return G1_FAIL(G1_ERR_FORMAT, "%s (%s%s): shape %s, expected %s by the config%s: wrong --config?", f->path, d,
                       what, got, want, strchr(want, '-') ? " (-1: any)" : "");
    return G1_OK;
}

/* Check one file's arrays against the config; sets the scale blocks of its kind. */
static g1_status check_file(cv_file *f, cv_job *job, int *blocks_seen)
{
    const g1_config *c = &job->cfg;
    int64_t D = c->emb_size, E = c->num_experts;
    char d[96];
    describe(f, job, d, sizeof d);
    int want_qw8 = f->kind == CV_QMAT;
    if ((f->pc.kind == G1_PICKLE_QW8) != want_qw8)
        return G1_FAIL(G1_ERR_FORMAT, "%s (%s): holds %s, expected %s (files out of order?)", f->path, d,
                       f->pc.kind == G1_PICKLE_QW8 ? "a QuantizedWeight8bit" : "a plain array",
                       want_qw8 ? "a QuantizedWeight8bit" : "a float32 array");
    if (f->kind == CV_EMBEDDING)
        return want_shape(f, job, &f->pc.arr[0], "", G1_PICKLE_F32, 2, (int64_t[]){c->vocab_size, D});
    if (f->kind == CV_FINAL_NORM || f->kind == CV_NORM)
        return want_shape(f, job, &f->pc.arr[0], "", G1_PICKLE_F32, 1, (int64_t[]){D});
    if (f->kind == CV_ROUTER)
        return want_shape(f, job, &f->pc.arr[0], "", G1_PICKLE_F32, 2, (int64_t[]){D, E});
    int rows, cols, x = f->qmat >= G1_MOE_GATE;
    g1_qmat_shape(c, f->qmat, &rows, &cols);
    int64_t ws[3] = {E, rows, cols}, ss[3] = {E, -1, cols};
    G1_TRY(want_shape(f, job, &f->pc.arr[0], " weight", G1_PICKLE_I8, 2 + x, ws + 1 - x));
    G1_TRY(want_shape(f, job, &f->pc.arr[1], " scales", G1_PICKLE_BF16, 2 + x, ss + 1 - x));
    int64_t B = f->pc.arr[1].shape[x];
    if (B > rows || rows % B)
        return G1_FAIL(G1_ERR_FORMAT, "%s (%s): %lld scale row blocks do not divide the %d rows", f->path, d,
                       (long long)B, rows);
    if (blocks_seen[f->qmat] && job->blocks[f->qmat] != B)
        return G1_FAIL(G1_ERR_FORMAT, "%s (%s): %lld scale row blocks, but other layers have %d: the HDF5 format "
                       "needs one block count per matrix kind", f->path, d, (long long)B, job->blocks[f->qmat]);
    blocks_seen[f->qmat] = 1;
    job->blocks[f->qmat] = (int)B;
    return G1_OK;
}

typedef struct fd_src {
    int fd;
    const char *path;
} fd_src;

static g1_status fd_read(void *ctx, uint64_t off, void *buf, size_t n)
{
    const fd_src *s = ctx;
    return cv_pread(s->fd, s->path, off, buf, n);
}

static g1_status scan_file(cv_file *f)
{
    int fd;
    G1_TRY(cv_open(f->path, &fd));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return G1_FAIL(G1_ERR_IO, "%s: not a regular file", f->path);
    }
    f->size = (uint64_t)sb.st_size;
    fd_src s = {fd, f->path};
    g1_pickle_src src = {fd_read, &s, f->size, f->path};
    g1_status st = g1_pickle_scan(&src, &f->pc);
    close(fd);
    return st;
}

static g1_status add_file(cv_job *job, const char *dir, const uint8_t *present, int index, cv_kind kind, int layer,
                          int item)
{
    cv_file *f = &job->files[job->n_files++];
    f->index = index;
    f->kind = kind;
    f->layer = layer;
    if (kind == CV_NORM)
        f->norm = (g1_norm_id)items[item].id;
    if (kind == CV_QMAT)
        f->qmat = (g1_qmat_id)items[item].id;
    size_t n = strlen(dir) + 32;
    if (!(f->path = malloc(n)))
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(f->path, n, "%s/tensor%05d_000", dir, index);
    if (!present[index]) {
        char d[96];
        describe(f, job, d, sizeof d);
        return G1_FAIL(G1_ERR_IO, "missing file %s (%s): incomplete download, or wrong --config?", f->path, d);
    }
    return G1_OK;
}

static g1_status plan_files(const char *dir, cv_job *job, const uint8_t *present)
{
    int L = job->cfg.num_layers, *pos;
    G1_TRY(layer_positions(L, &pos));
    g1_status st = job->with_embedding ? add_file(job, dir, present, 0, CV_EMBEDDING, -1, 0) : G1_OK;
    if (st == G1_OK)
        st = add_file(job, dir, present, 1, CV_FINAL_NORM, -1, 0);
    for (int l = job->l0; l < job->l1 && st == G1_OK; l++)
        for (int j = 0; j < CV_PER_LAYER && st == G1_OK; j++)
            st = add_file(job, dir, present, 2 + CV_PER_LAYER * pos[l] + j, items[j].kind, l, j);
    free(pos);
    return st;
}

g1_status cv_plan(const char *dir, const g1_config *cfg, int l0, int l1, int with_embedding, cv_job *job)
{
    *job = (cv_job){.cfg = *cfg, .l0 = l0, .l1 = l1, .with_embedding = with_embedding};
    G1_TRY(g1_config_validate(cfg));
    int n_expected = 2 + CV_PER_LAYER * cfg->num_layers;
    uint8_t *present = calloc((size_t)n_expected, 1);
    job->files = calloc((size_t)(2 + CV_PER_LAYER * (l1 - l0)), sizeof *job->files);
    if (!present || !job->files) {
        free(present);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    g1_status st = list_dir(dir, n_expected, present);
    if (st == G1_OK)
        st = plan_files(dir, job, present);
    free(present);
    int blocks_seen[G1_NUM_QMAT] = {0};
    for (int i = 0; i < job->n_files && st == G1_OK; i++) {
        st = scan_file(&job->files[i]);
        if (st == G1_OK)
            st = check_file(&job->files[i], job, blocks_seen);
        job->total_bytes += job->files[i].size;
    }
    for (int i = 0; i < G1_NUM_QMAT && st == G1_OK; i++)
        if (!blocks_seen[i])
            job->blocks[i] = 1; /* no layer converted: any valid count */
    return st;
}

void cv_job_free(cv_job *job)
{
    for (int i = 0; i < job->n_files; i++)
        free(job->files[i].path);
    free(job->files);
    job->files = NULL;
    job->n_files = 0;
}
