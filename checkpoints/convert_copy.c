/* grok1-convert's copy pass: each planned file is read in pieces (embedding
 * slabs of about 8 MiB, one expert of a matrix at a time) straight from the
 * payload offsets the scanner found, and handed to the HDF5 writer. Memory
 * is one piece whatever the model size. */
#include <stdlib.h>
#include <unistd.h>

#include "convert.h"

static size_t max_scale_elems(const g1_config *c, const int blocks[G1_NUM_QMAT], size_t *floats)
{
    size_t m = (size_t)c->emb_size * (size_t)c->num_experts; /* the router */
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(c, (g1_qmat_id)i, &rows, &cols);
        if ((size_t)blocks[i] * (size_t)cols > m)
            m = (size_t)blocks[i] * (size_t)cols;
    }
    size_t slab = (size_t)cv_embed_slab_rows(c) * (size_t)c->emb_size;
    *floats = slab > m ? slab : m; /* float32 pieces: scales, router or an embedding slab */
    return m;
}

g1_status cv_bufs_alloc(const g1_config *cfg, const int blocks[G1_NUM_QMAT], cv_bufs *b)
{
    size_t nf, ns = max_scale_elems(cfg, blocks, &nf);
    b->w = malloc(cv_max_matrix_bytes(cfg));
    b->s16 = malloc(ns * sizeof *b->s16);
    b->f = malloc(nf * sizeof *b->f);
    if (!b->w || !b->s16 || !b->f) {
        cv_bufs_free(b);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory (%zu bytes for one matrix)", cv_max_matrix_bytes(cfg));
    }
    return G1_OK;
}

void cv_bufs_free(cv_bufs *b)
{
    free(b->w);
    free(b->s16);
    free(b->f);
    *b = (cv_bufs){0};
}

int cv_piece_count(const cv_job *job, const cv_file *f)
{
    if (f->kind == CV_EMBEDDING) {
        int64_t s = cv_embed_slab_rows(&job->cfg);
        return (int)((job->cfg.vocab_size + s - 1) / s);
    }
    if (f->kind == CV_QMAT && f->qmat >= G1_MOE_GATE)
        return job->cfg.num_experts;
    return 1;
}

g1_status cv_read_piece(const cv_job *job, const cv_file *f, int fd, int k, cv_bufs *b, uint64_t *bytes)
{
    const g1_config *c = &job->cfg;
    const g1_pickle_array *a = &f->pc.arr[0];
    if (f->kind == CV_EMBEDDING) {
        int64_t s = cv_embed_slab_rows(c), r0 = k * s, n = c->vocab_size - r0 < s ? c->vocab_size - r0 : s;
        uint64_t row = (uint64_t)c->emb_size * 4;
        *bytes = (uint64_t)n * row;
        return cv_pread(fd, f->path, a->offset + (uint64_t)r0 * row, b->f, *bytes);
    }
    if (f->kind != CV_QMAT) {
        *bytes = a->nbytes;
        return cv_pread(fd, f->path, a->offset, b->f, a->nbytes);
    }
    int rows, cols;
    g1_qmat_shape(c, f->qmat, &rows, &cols);
    uint64_t wn = (uint64_t)rows * (uint64_t)cols, sn = (uint64_t)job->blocks[f->qmat] * (uint64_t)cols;
    G1_TRY(cv_pread(fd, f->path, a->offset + (uint64_t)k * wn, b->w, wn));
    G1_TRY(cv_pread(fd, f->path, f->pc.arr[1].offset + (uint64_t)k * sn * 2, b->s16, sn * 2));
    cv_bf16_to_f32(b->s16, b->f, sn);
    *bytes = wn + sn * 2;
    return G1_OK;
}

static g1_status write_piece(const cv_job *job, const cv_file *f, int k, const cv_bufs *b, g1_ckpt_writer *wr)
{
    switch (f->kind) {
    case CV_EMBEDDING: {
        int64_t s = cv_embed_slab_rows(&job->cfg), r0 = k * s;
        int64_t n = job->cfg.vocab_size - r0 < s ? job->cfg.vocab_size - r0 : s;
        return g1_ckpt_write_embedding_rows(wr, r0, n, b->f);
    }
    case CV_FINAL_NORM: return g1_ckpt_write_final_norm(wr, b->f);
    case CV_NORM: return g1_ckpt_write_norm(wr, f->layer, f->norm, b->f);
    case CV_ROUTER: return g1_ckpt_write_router(wr, f->layer, b->f);
    case CV_QMAT: return g1_ckpt_write_qmat(wr, f->layer, f->qmat, k, b->w, b->f);
    }
    return G1_FAIL(G1_ERR_INTERNAL, "bad file kind");
}

static g1_status copy_file(const cv_job *job, const cv_file *f, cv_bufs *b, g1_ckpt_writer *wr, cv_progress *p)
{
    int fd;
    G1_TRY(cv_open(f->path, &fd));
    g1_status st = G1_OK;
    uint64_t covered = 0;
    for (int k = 0; k < cv_piece_count(job, f) && st == G1_OK; k++) {
        uint64_t n = 0;
        st = cv_read_piece(job, f, fd, k, b, &n);
        if (st == G1_OK)
            st = write_piece(job, f, k, b, wr);
        if (st == G1_OK)
            st = cv_progress_add(p, n);
        covered += n;
    }
    close(fd);
    if (st == G1_OK) {
        st = cv_progress_add(p, f->size - covered); /* the pickle's own bytes */
        cv_progress_file_done(p);
    }
    return st;
}

g1_status cv_copy(const cv_job *job, g1_ckpt_writer *wr, cv_progress *p)
{
    cv_bufs b;
    G1_TRY(cv_bufs_alloc(&job->cfg, job->blocks, &b));
    g1_status st = G1_OK;
    for (int i = 0; i < job->n_files && st == G1_OK; i++)
        st = copy_file(job, &job->files[i], &b, wr, p);
    cv_bufs_free(&b);
    return st;
}
