/* Streaming HDF5 checkpoint writer (format v1, docs/CHECKPOINT.md): creates
 * every dataset up front under a temporary name, takes tensors one at a time
 * (one expert = one chunk) and renames the file only once all were written.
 * Used by grok1-mkckpt and the release converter. */
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "durable.h"
#include "h5util.h"

/* Embedding chunks of about this many bytes (whole rows). */
#define EMBED_CHUNK_BYTES (4u << 20)

struct g1_ckpt_writer {
    hid_t file;
    char *path, *tmp;
    g1_config cfg;
    int blocks[G1_NUM_QMAT];
    int l0, l1;
    int per_layer;       /* tensors per layer: 4 norms, 4 attn, router, 3 * E experts */
    uint8_t *done;       /* (l1 - l0, per_layer): written yet? */
    uint8_t *rows_done;  /* (V): embedding row written yet? */
    int final_norm_done;
    int with_embedding;
    /* checksums of what was written (G1_H5_CRC_ATTR), put on the datasets
     * at finish: per (layer, item) as done, the weight's and the scale's */
    uint32_t *crc_w, *crc_s;
    uint32_t crc_final_norm;
    uint32_t crc_emb;  /* of rows [0, emb_next) while they come in order */
    int64_t emb_next;  /* -1: rows came out of order, read back at finish */
    double bytes;      /* the datasets' elements, as make_all created them */
};


static int is_expert(g1_qmat_id id) { return id >= G1_MOE_GATE; }

/* ---- attributes ---- */

static g1_status write_attrs(g1_ckpt_writer *wr)
{
    if (g1_h5_put_config(wr->file, &wr->cfg) < 0) {
        char d[256];
        g1_h5_detail(d);
        return G1_FAIL(G1_ERR_IO, "%s: cannot write attributes: %s", wr->tmp, d);
    }
    return G1_OK;
}

/* ---- dataset creation ---- */

/* chunk NULL: contiguous. Fill values are never written: every element is. */
static g1_status make_dset(g1_ckpt_writer *wr, hid_t loc, const char *name, hid_t type, int rank,
                           const hsize_t *dims, const hsize_t *chunk)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    herr_t e = chunk ? H5Pset_chunk(dcpl, rank, chunk) : 0;
    hid_t d = e < 0 ? -1 : H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    double n = (double)H5Tget_size(type);
    for (int i = 0; i < rank; i++)
        n *= (double)dims[i];
    wr->bytes += n;
    char detail[256];
    if (d < 0)
        g1_h5_detail(detail);
    else
        H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (d < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot create dataset %s: %s", wr->tmp, name, detail);
    return G1_OK;
}

static g1_status make_qmat(g1_ckpt_writer *wr, hid_t g, g1_qmat_id id)
{
    const g1_config *c = &wr->cfg;
    int rows, cols;
    g1_qmat_shape(c, id, &rows, &cols);
    char sname[64];
    snprintf(sname, sizeof sname, "%s_scale", g1_qmat_names[id]);
    hsize_t E = (hsize_t)c->num_experts, B = (hsize_t)wr->blocks[id];
    if (!is_expert(id)) {
        hsize_t dw[2] = {(hsize_t)rows, (hsize_t)cols}, ds[2] = {B, (hsize_t)cols};
        G1_TRY(make_dset(wr, g, g1_qmat_names[id], H5T_STD_I8LE, 2, dw, NULL));
        return make_dset(wr, g, sname, H5T_IEEE_F32LE, 2, ds, NULL);
    }
    /* one chunk per expert: a rank reads its experts contiguously */
    hsize_t dw[3] = {E, (hsize_t)rows, (hsize_t)cols}, cw[3] = {1, (hsize_t)rows, (hsize_t)cols};
    hsize_t ds[3] = {E, B, (hsize_t)cols}, cs[3] = {1, B, (hsize_t)cols};
    G1_TRY(make_dset(wr, g, g1_qmat_names[id], H5T_STD_I8LE, 3, dw, cw));
    return make_dset(wr, g, sname, H5T_IEEE_F32LE, 3, ds, cs);
}

static g1_status make_layer(g1_ckpt_writer *wr, hid_t layers, int layer)
{
    const g1_config *c = &wr->cfg;
    char name[32];
    snprintf(name, sizeof name, "%02d", layer);
    hid_t g = H5Gcreate2(layers, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot create group layers/%s", wr->tmp, name);
    hsize_t dv[1] = {(hsize_t)c->emb_size}, dr[2] = {(hsize_t)c->emb_size, (hsize_t)c->num_experts};
    g1_status st = G1_OK;
    for (int n = 0; n < G1_NUM_NORM && st == G1_OK; n++)
        st = make_dset(wr, g, g1_norm_names[n], H5T_IEEE_F32LE, 1, dv, NULL);
    for (int i = 0; i < G1_NUM_QMAT && st == G1_OK; i++)
        st = make_qmat(wr, g, (g1_qmat_id)i);
    if (st == G1_OK)
        st = make_dset(wr, g, "router", H5T_IEEE_F32LE, 2, dr, NULL);
    H5Gclose(g);
    return st;
}

static g1_status make_all(g1_ckpt_writer *wr)
{
    const g1_config *c = &wr->cfg;
    hsize_t de[2] = {(hsize_t)c->vocab_size, (hsize_t)c->emb_size};
    hsize_t rows = EMBED_CHUNK_BYTES / (de[1] * sizeof(float));
    hsize_t ce[2] = {rows < 1 ? 1 : rows < de[0] ? rows : de[0], de[1]};
    if (wr->with_embedding)
        G1_TRY(make_dset(wr, wr->file, "embedding", H5T_IEEE_F32LE, 2, de, ce));
    G1_TRY(make_dset(wr, wr->file, "final_norm", H5T_IEEE_F32LE, 1, &de[1], NULL));
    hid_t layers = H5Gcreate2(wr->file, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (layers < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot create group layers", wr->tmp);
    g1_status st = G1_OK;
    for (int l = wr->l0; l < wr->l1 && st == G1_OK; l++)
        st = make_layer(wr, layers, l);
    H5Gclose(layers);
    return st;
}

/* ---- create / finish / abort ---- */

static g1_status check_args(const char *path, const g1_config *cfg, const int blocks[G1_NUM_QMAT], int l0, int l1)
{
    if (!path || !*path)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: empty output path");
    G1_TRY(g1_config_validate(cfg));
    if (l0 < 0 || l1 > cfg->num_layers || l0 > l1)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: layer range [%d,%d) outside the model's %d layers", l0, l1,
                       cfg->num_layers);
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(cfg, (g1_qmat_id)i, &rows, &cols);
        if (blocks[i] < 1 || rows % blocks[i])
            return G1_FAIL(G1_ERR_ARG, "checkpoint writer: %d scale blocks do not divide the %d rows of %s",
                           blocks[i], rows, g1_qmat_names[i]);
    }
    return G1_OK;
}

static g1_status alloc_writer(const char *path, const g1_config *cfg, const int blocks[G1_NUM_QMAT], int l0,
                              int l1, int with_embedding, g1_ckpt_writer **out)
{
    g1_ckpt_writer *wr = calloc(1, sizeof *wr);
    if (!wr)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    *out = wr;
    wr->file = -1;
    wr->cfg = *cfg;
    memcpy(wr->blocks, blocks, sizeof wr->blocks);
    wr->l0 = l0;
    wr->l1 = l1;
    wr->with_embedding = with_embedding;
    wr->per_layer = G1_NUM_NORM + 4 + 1 + 3 * cfg->num_experts;
    size_t n = strlen(path) + 32;
    wr->path = strdup(path);
    wr->tmp = malloc(n);
    wr->done = calloc((size_t)(l1 - l0) * (size_t)wr->per_layer + 1, 1);
    wr->rows_done = calloc((size_t)cfg->vocab_size, 1);
    wr->crc_w = calloc((size_t)(l1 - l0) * (size_t)wr->per_layer + 1, sizeof *wr->crc_w);
    wr->crc_s = calloc((size_t)(l1 - l0) * (size_t)wr->per_layer + 1, sizeof *wr->crc_s);
    if (!wr->path || !wr->tmp || !wr->done || !wr->rows_done || !wr->crc_w || !wr->crc_s)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (!with_embedding)
        memset(wr->rows_done, 1, (size_t)cfg->vocab_size);
    snprintf(wr->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    return G1_OK;
}

static void free_writer(g1_ckpt_writer *wr)
{
    free(wr->path);
    free(wr->tmp);
    free(wr->done);
    free(wr->rows_done);
    free(wr->crc_w);
    free(wr->crc_s);
    free(wr);
}

/* Reserve `bytes` past the end of the file, and room for HDF5's metadata:
 * 64 KiB and 4 KiB a dataset (an object header with its attributes; a
 * checkpoint of Grok-1's 64 layers has some 1,200 datasets). */
static g1_status reserve_room(g1_ckpt_writer *wr, double bytes)
{
    double datasets = (double)(wr->l1 - wr->l0) * (G1_NUM_NORM + 2 * G1_NUM_QMAT + 1) + 2;
    double margin = 65536.0 + 4096.0 * datasets;
    double avail;
    if (g1_h5_reserve(wr->file, (uint64_t)(bytes + margin), &avail) == 0)
        return G1_OK;
    int quota = errno == EDQUOT;
    char a[32], b[32];
    return G1_FAIL(G1_ERR_IO, "no room for %s: it needs %s, and the file system has %s free%s", wr->path,
                   g1_bytes_text(a, sizeof a, bytes + margin),
                   avail >= 0 ? g1_bytes_text(b, sizeof b, avail) : "an unknown amount",
                   quota ? " (the quota is reached)" : "");
}

g1_status g1_ckpt_writer_create(const char *path, const g1_config *cfg, const int blocks[G1_NUM_QMAT], int l0,
                                int l1, int with_embedding, g1_ckpt_writer **out)
{
    *out = NULL;
    G1_TRY(check_args(path, cfg, blocks, l0, l1));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g1_ckpt_writer *wr = NULL;
    g1_status st = alloc_writer(path, cfg, blocks, l0, l1, with_embedding, &wr);
    if (st != G1_OK) {
        if (wr)
            free_writer(wr);
        return st;
    }
    /* a name of this process's own, made anew: whatever is there (a file
     * left by an earlier process of the same pid, or a symbolic link planted
     * at the name, which a truncating create would write through) goes, and
     * the create is exclusive */
    unlink(wr->tmp);
    wr->file = H5Fcreate(wr->tmp, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (wr->file < 0) {
        char d[256];
        g1_h5_detail(d);
        st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", wr->tmp, d);
        free_writer(wr);
        return st;
    }
    /* the room on disk before HDF5 writes (g1_h5_reserve): first for the
     * metadata, so that a writer stopped below still closes its file, then
     * for every tensor, so that a disk too small (or a quota) is told now,
     * not hours into a conversion */
    st = reserve_room(wr, 0);
    if (st == G1_OK)
        st = write_attrs(wr);
    if (st == G1_OK)
        st = make_all(wr);
    if (st == G1_OK)
        st = reserve_room(wr, wr->bytes);
    if (st != G1_OK) {
        g1_ckpt_writer_abort(wr);
        return st;
    }
    *out = wr;
    return G1_OK;
}

/* Name of the first tensor not written, or NULL when complete. */
static const char *first_missing(const g1_ckpt_writer *wr, char *buf, size_t n)
{
    for (int v = 0; v < wr->cfg.vocab_size; v++)
        if (!wr->rows_done[v]) {
            snprintf(buf, n, "embedding row %d", v);
            return buf;
        }
    if (!wr->final_norm_done)
        return "final_norm";
    int E = wr->cfg.num_experts;
    for (int l = 0; l < wr->l1 - wr->l0; l++)
        for (int i = 0; i < wr->per_layer; i++) {
            if (wr->done[(size_t)l * wr->per_layer + i])
                continue;
            const char *what = i < G1_NUM_NORM ? g1_norm_names[i]
                               : i < G1_NUM_NORM + 4 ? g1_qmat_names[i - G1_NUM_NORM]
                               : i == G1_NUM_NORM + 4 ? "router"
                                                      : g1_qmat_names[G1_MOE_GATE + (i - G1_NUM_NORM - 5) / E];
            if (i > G1_NUM_NORM + 4)
                snprintf(buf, n, "layers/%02d/%s expert %d", wr->l0 + l, what, (i - G1_NUM_NORM - 5) % E);
            else
                snprintf(buf, n, "layers/%02d/%s", wr->l0 + l, what);
            return buf;
        }
    return NULL;
}

/* ---- checksums ---- */

static g1_status put_crcs(g1_ckpt_writer *wr, const char *name, const uint32_t *v, size_t n)
{
    hid_t d = H5Dopen2(wr->file, name, H5P_DEFAULT);
    herr_t e = d < 0 ? -1 : g1_h5_put_crcs(d, v, n);
    char detail[256];
    if (e < 0)
        g1_h5_detail(detail);
    if (d >= 0)
        H5Dclose(d);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot write the checksum of %s: %s", wr->tmp, name, detail);
    return G1_OK;
}

/* The embedding's rows were not written in order: its checksum from the
 * file, read back in slabs. */
static g1_status embedding_crc_from_file(g1_ckpt_writer *wr)
{
    hsize_t dims[2] = {(hsize_t)wr->cfg.vocab_size, (hsize_t)wr->cfg.emb_size};
    hid_t d = H5Dopen2(wr->file, "embedding", H5P_DEFAULT);
    int e = d < 0 ? -1 : g1_h5_crc_of(d, H5T_NATIVE_FLOAT, sizeof(float), 2, dims, -1, &wr->crc_emb, NULL);
    if (d >= 0)
        H5Dclose(d);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "%s: cannot read the embedding back for its checksum", wr->tmp);
    return G1_OK;
}

/* Every dataset's G1_H5_CRC_ATTR, from the checksums of what was written. */
static g1_status put_all_crcs(g1_ckpt_writer *wr)
{
    int E = wr->cfg.num_experts;
    if (wr->with_embedding) {
        if (wr->emb_next != wr->cfg.vocab_size)
            G1_TRY(embedding_crc_from_file(wr));
        G1_TRY(put_crcs(wr, "embedding", &wr->crc_emb, 1));
    }
    G1_TRY(put_crcs(wr, "final_norm", &wr->crc_final_norm, 1));
    uint32_t *v = malloc((size_t)E * sizeof *v);
    if (!v)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st = G1_OK;
    for (int l = wr->l0; l < wr->l1 && st == G1_OK; l++) {
        const uint32_t *cw = wr->crc_w + (size_t)(l - wr->l0) * wr->per_layer;
        const uint32_t *cs = wr->crc_s + (size_t)(l - wr->l0) * wr->per_layer;
        char name[96];
        for (int n = 0; n < G1_NUM_NORM && st == G1_OK; n++) {
            snprintf(name, sizeof name, "layers/%02d/%s", l, g1_norm_names[n]);
            st = put_crcs(wr, name, &cw[n], 1);
        }
        snprintf(name, sizeof name, "layers/%02d/router", l);
        if (st == G1_OK)
            st = put_crcs(wr, name, &cw[G1_NUM_NORM + 4], 1);
        for (int i = 0; i < G1_NUM_QMAT && st == G1_OK; i++) {
            int x = is_expert((g1_qmat_id)i), at = x ? G1_NUM_NORM + 5 + (i - G1_MOE_GATE) * E : G1_NUM_NORM + i;
            for (int half = 0; half < 2 && st == G1_OK; half++) {
                snprintf(name, sizeof name, "layers/%02d/%s%s", l, g1_qmat_names[i], half ? "_scale" : "");
                memcpy(v, (half ? cs : cw) + at, (size_t)(x ? E : 1) * sizeof *v);
                st = put_crcs(wr, name, v, (size_t)(x ? E : 1));
            }
        }
    }
    free(v);
    return st;
}

g1_status g1_ckpt_writer_finish(g1_ckpt_writer *wr)
{
    char buf[96];
    const char *missing = first_missing(wr, buf, sizeof buf);
    g1_status st = missing ? G1_FAIL(G1_ERR_INTERNAL, "checkpoint writer: %s was never written; %s not created",
                                     missing, wr->path)
                           : put_all_crcs(wr);
    if (st != G1_OK) {
        g1_ckpt_writer_abort(wr);
        return st;
    }
    herr_t e = g1_h5_close(wr->file);
    wr->file = -1;
    if (e < 0) {
        st = G1_FAIL(G1_ERR_IO, "%s: closing the file failed (disk full?)", wr->tmp);
    } else {
        g1_h5_release(wr->tmp);
        st = g1_rename_durable(wr->tmp, wr->path);
    }
    if (st != G1_OK)
        remove(wr->tmp);
    free_writer(wr);
    return st;
}

void g1_ckpt_writer_abort(g1_ckpt_writer *wr)
{
    if (!wr)
        return;
    if (wr->file >= 0)
        g1_h5_close(wr->file);
    remove(wr->tmp);
    free_writer(wr);
}

/* ---- tensor writes ---- */

/* Write the hyperslab [start, start+count) of dataset `name`. */
static g1_status write_slab(g1_ckpt_writer *wr, const char *name, hid_t memtype, int rank, const hsize_t *start,
                            const hsize_t *count, const void *buf)
{
    hid_t d = H5Dopen2(wr->file, name, H5P_DEFAULT);
    if (d < 0)
        return G1_FAIL(G1_ERR_INTERNAL, "%s: no dataset %s", wr->tmp, name);
    herr_t e = g1_h5_write_slab(d, memtype, rank, start, count, buf);
    char detail[256];
    if (e < 0)
        g1_h5_detail(detail);
    H5Dclose(d);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "%s: writing %s failed: %s", wr->tmp, name, detail);
    return G1_OK;
}

static g1_status check_layer(const g1_ckpt_writer *wr, int layer)
{
    if (layer < wr->l0 || layer >= wr->l1)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: layer %d outside the file's layers [%d,%d)", layer, wr->l0,
                       wr->l1);
    return G1_OK;
}

static void mark(g1_ckpt_writer *wr, int layer, int item) { wr->done[(size_t)(layer - wr->l0) * wr->per_layer + item] = 1; }

g1_status g1_ckpt_write_embedding_rows(g1_ckpt_writer *wr, int64_t row0, int64_t nrows, const float *rows)
{
    const g1_config *c = &wr->cfg;
    if (row0 < 0 || nrows < 0 || row0 + nrows > c->vocab_size)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: embedding rows [%lld,%lld) outside the %d rows",
                       (long long)row0, (long long)(row0 + nrows), c->vocab_size);
    if (nrows == 0)
        return G1_OK;
    if (!wr->with_embedding)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: %s was made without an embedding", wr->path);
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)nrows, (hsize_t)c->emb_size};
    G1_TRY(write_slab(wr, "embedding", H5T_NATIVE_FLOAT, 2, start, count, rows));
    memset(wr->rows_done + row0, 1, (size_t)nrows);
    if (row0 == wr->emb_next) { /* in order: the checksum runs on */
        size_t nb = (size_t)nrows * (size_t)c->emb_size * sizeof *rows;
        uint32_t crc = g1_h5_crc32(rows, nb);
        wr->crc_emb = row0 ? g1_h5_crc32_join(wr->crc_emb, crc, nb) : crc;
        wr->emb_next = row0 + nrows;
    } else {
        wr->emb_next = -1;
    }
    return G1_OK;
}

g1_status g1_ckpt_write_final_norm(g1_ckpt_writer *wr, const float *v)
{
    hsize_t start[1] = {0}, count[1] = {(hsize_t)wr->cfg.emb_size};
    G1_TRY(write_slab(wr, "final_norm", H5T_NATIVE_FLOAT, 1, start, count, v));
    wr->final_norm_done = 1;
    wr->crc_final_norm = g1_h5_crc32(v, (size_t)wr->cfg.emb_size * sizeof *v);
    return G1_OK;
}

g1_status g1_ckpt_write_norm(g1_ckpt_writer *wr, int layer, g1_norm_id n, const float *v)
{
    G1_TRY(check_layer(wr, layer));
    if ((int)n < 0 || n >= G1_NUM_NORM)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: no norm %d", (int)n);
    char name[64];
    snprintf(name, sizeof name, "layers/%02d/%s", layer, g1_norm_names[n]);
    hsize_t start[1] = {0}, count[1] = {(hsize_t)wr->cfg.emb_size};
    G1_TRY(write_slab(wr, name, H5T_NATIVE_FLOAT, 1, start, count, v));
    mark(wr, layer, (int)n);
    wr->crc_w[(size_t)(layer - wr->l0) * wr->per_layer + (int)n] = g1_h5_crc32(v, (size_t)wr->cfg.emb_size * sizeof *v);
    return G1_OK;
}

g1_status g1_ckpt_write_router(g1_ckpt_writer *wr, int layer, const float *v)
{
    G1_TRY(check_layer(wr, layer));
    char name[64];
    snprintf(name, sizeof name, "layers/%02d/router", layer);
    hsize_t start[2] = {0, 0}, count[2] = {(hsize_t)wr->cfg.emb_size, (hsize_t)wr->cfg.num_experts};
    G1_TRY(write_slab(wr, name, H5T_NATIVE_FLOAT, 2, start, count, v));
    mark(wr, layer, G1_NUM_NORM + 4);
    wr->crc_w[(size_t)(layer - wr->l0) * wr->per_layer + G1_NUM_NORM + 4] =
        g1_h5_crc32(v, (size_t)wr->cfg.emb_size * (size_t)wr->cfg.num_experts * sizeof *v);
    return G1_OK;
}

g1_status g1_ckpt_write_qmat(g1_ckpt_writer *wr, int layer, g1_qmat_id id, int expert, const int8_t *w,
                             const float *scale)
{
    G1_TRY(check_layer(wr, layer));
    if ((int)id < 0 || id >= G1_NUM_QMAT)
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: no matrix kind %d", (int)id);
    int E = wr->cfg.num_experts, rows, cols;
    if (is_expert(id) && (expert < 0 || expert >= E))
        return G1_FAIL(G1_ERR_ARG, "checkpoint writer: expert %d outside the model's %d", expert, E);
    g1_qmat_shape(&wr->cfg, id, &rows, &cols);
    char name[64], sname[80];
    snprintf(name, sizeof name, "layers/%02d/%s", layer, g1_qmat_names[id]);
    snprintf(sname, sizeof sname, "%s_scale", name);
    int x = is_expert(id) ? 1 : 0, rank = 2 + x;
    hsize_t start[3] = {(hsize_t)expert, 0, 0}, cw[3] = {1, 1, 1}, cs[3] = {1, 1, 1};
    cw[x] = (hsize_t)rows;
    cw[x + 1] = (hsize_t)cols;
    cs[x] = (hsize_t)wr->blocks[id];
    cs[x + 1] = (hsize_t)cols;
    G1_TRY(write_slab(wr, name, H5T_NATIVE_INT8, rank, start + 1 - x, cw, w));
    G1_TRY(write_slab(wr, sname, H5T_NATIVE_FLOAT, rank, start + 1 - x, cs, scale));
    int item = is_expert(id) ? G1_NUM_NORM + 5 + ((int)id - G1_MOE_GATE) * E + expert : G1_NUM_NORM + (int)id;
    mark(wr, layer, item);
    size_t at = (size_t)(layer - wr->l0) * wr->per_layer + item;
    wr->crc_w[at] = g1_h5_crc32(w, (size_t)rows * (size_t)cols);
    wr->crc_s[at] = g1_h5_crc32(scale, (size_t)wr->blocks[id] * (size_t)cols * sizeof *scale);
    return G1_OK;
}
