/* grok1-convert --verify: re-open the written HDF5 file, check its
 * attributes through the runner's reader, then read every tensor back piece
 * by piece (hyperslabs) and compare it bit for bit with the release files. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "h5util.h"

static g1_status check_config(const cv_job *job, const char *path)
{
    g1_ckpt *ck;
    G1_TRY(g1_ckpt_open(path, &ck));
    const g1_config *got = g1_ckpt_config(ck), *want = &job->cfg;
    g1_status st = G1_OK;
    for (int i = 0; i < g1_num_params && st == G1_OK; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *a = (const char *)got + p->offset, *b = (const char *)want + p->offset;
        if (memcmp(a, b, p->type == G1_PARAM_INT ? sizeof(int) : sizeof(double)))
            st = G1_FAIL(G1_ERR_FORMAT, "verify: %s has attribute %s different from the config", path, p->name);
    }
    g1_ckpt_close(ck);
    return st;
}

/* Read [start, start+count) of dataset `name` into buf as `mtype`. */
static g1_status read_slab(hid_t file, const char *path, const char *name, hid_t mtype, int rank,
                           const hsize_t *start, const hsize_t *count, void *buf)
{
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        return G1_FAIL(G1_ERR_FORMAT, "verify: %s has no dataset %s", path, name);
    herr_t e = g1_h5_read_slab(d, mtype, rank, start, count, buf);
    H5Dclose(d);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "verify: reading %s from %s failed", name, path);
    return G1_OK;
}

static g1_status differ(const cv_file *f, const char *name, int k)
{
    return G1_FAIL(G1_ERR_FORMAT, "verify: %s (piece %d) differs from %s: the output is wrong (disk error?)", name, k,
                   f->path);
}

/* Read piece k of f from the HDF5 file into o and compare with the source in s. */
static g1_status check_piece(const cv_job *job, const cv_file *f, int k, hid_t file, const char *path,
                             const cv_bufs *s, cv_bufs *o)
{
    const g1_config *c = &job->cfg;
    char name[80], sname[96];
    hsize_t st[3] = {0, 0, 0}, ct[3] = {1, 1, 1};
    size_t nf;
    if (f->kind == CV_EMBEDDING) {
        int64_t sl = cv_embed_slab_rows(c), n = c->vocab_size - k * sl < sl ? c->vocab_size - k * sl : sl;
        st[0] = (hsize_t)(k * sl);
        ct[0] = (hsize_t)n;
        ct[1] = (hsize_t)c->emb_size;
        nf = (size_t)n * (size_t)c->emb_size;
        G1_TRY(read_slab(file, path, "embedding", H5T_NATIVE_FLOAT, 2, st, ct, o->f));
        return memcmp(s->f, o->f, nf * 4) ? differ(f, "embedding", k) : G1_OK;
    }
    if (f->kind != CV_QMAT) {
        int rank = f->kind == CV_ROUTER ? 2 : 1;
        ct[0] = (hsize_t)c->emb_size;
        ct[1] = (hsize_t)c->num_experts;
        nf = (size_t)c->emb_size * (f->kind == CV_ROUTER ? (size_t)c->num_experts : 1);
        if (f->kind == CV_FINAL_NORM)
            snprintf(name, sizeof name, "final_norm");
        else
            snprintf(name, sizeof name, "layers/%02d/%s", f->layer,
                     f->kind == CV_ROUTER ? "router" : g1_norm_names[f->norm]);
        G1_TRY(read_slab(file, path, name, H5T_NATIVE_FLOAT, rank, st, ct, o->f));
        return memcmp(s->f, o->f, nf * 4) ? differ(f, name, k) : G1_OK;
    }
    int rows, cols, x = f->qmat >= G1_MOE_GATE;
    g1_qmat_shape(c, f->qmat, &rows, &cols);
    snprintf(name, sizeof name, "layers/%02d/%s", f->layer, g1_qmat_names[f->qmat]);
    snprintf(sname, sizeof sname, "%s_scale", name);
    st[0] = (hsize_t)k;
    ct[x] = (hsize_t)rows;
    ct[x + 1] = (hsize_t)cols;
    G1_TRY(read_slab(file, path, name, H5T_NATIVE_INT8, 2 + x, st + 1 - x, ct, o->w));
    if (memcmp(s->w, o->w, (size_t)rows * (size_t)cols))
        return differ(f, name, k);
    ct[x] = (hsize_t)job->blocks[f->qmat];
    G1_TRY(read_slab(file, path, sname, H5T_NATIVE_FLOAT, 2 + x, st + 1 - x, ct, o->f));
    nf = (size_t)job->blocks[f->qmat] * (size_t)cols;
    return memcmp(s->f, o->f, nf * 4) ? differ(f, sname, k) : G1_OK;
}

static g1_status verify_file(const cv_job *job, const cv_file *f, hid_t file, const char *path, cv_bufs *s,
                             cv_bufs *o, cv_progress *p)
{
    int fd;
    G1_TRY(cv_open(f->path, &fd));
    g1_status st = G1_OK;
    uint64_t covered = 0;
    for (int k = 0; k < cv_piece_count(job, f) && st == G1_OK; k++) {
        uint64_t n = 0;
        st = cv_read_piece(job, f, fd, k, s, &n);
        if (st == G1_OK)
            st = check_piece(job, f, k, file, path, s, o);
        if (st == G1_OK)
            st = cv_progress_add(p, n);
        covered += n;
    }
    close(fd);
    if (st == G1_OK) {
        st = cv_progress_add(p, f->size - covered);
        cv_progress_file_done(p);
    }
    return st;
}

g1_status cv_verify(const cv_job *job, const char *h5path, cv_progress *p)
{
    G1_TRY(check_config(job, h5path));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(h5path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        return G1_FAIL(G1_ERR_IO, "verify: cannot open %s", h5path);
    cv_bufs s = {0}, o = {0};
    g1_status st = cv_bufs_alloc(&job->cfg, job->blocks, &s);
    if (st == G1_OK)
        st = cv_bufs_alloc(&job->cfg, job->blocks, &o);
    for (int i = 0; i < job->n_files && st == G1_OK; i++)
        st = verify_file(job, &job->files[i], file, h5path, &s, &o, p);
    cv_bufs_free(&s);
    cv_bufs_free(&o);
    H5Fclose(file);
    return st;
}
