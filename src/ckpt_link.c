/* A checkpoint in parts (docs/CHECKPOINT.md, "A checkpoint in parts"): one
 * small HDF5 file with the root attributes and external links to the layers,
 * the embedding and the final norm of part files, each written with a layer
 * range (grok1-convert --layers A-B, grok1-mkckpt --part A-B). The reader
 * follows the links like any group or dataset, so grok1-run needs nothing
 * else, and each rank opens only the parts that hold what it loads. */
#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "durable.h"
#include "fnv1a.h"
#include "h5util.h"

/* Rows of the embedding compared between parts: the first, the last and
 * evenly spread ones between (a fingerprint, not a full comparison). */
#define EMBED_SAMPLE_ROWS 64

typedef struct part {
    const char *path;  /* as given */
    char *real;        /* realpath */
    char *named;       /* realpath of its folder + its own name (a symlink stays one) */
    char *target;      /* the name stored in the links */
    hid_t file;
    int crc;           /* its final norm has checksums (G1_H5_CRC_ATTR): written with them */
} part;

typedef struct linker {
    const char *out;
    int n;
    part *p;
    g1_config cfg;
    int *owner;        /* layer -> part index, -1: none */
    uint64_t *fp;      /* G1_H5_PART_FP_ATTR: attn_norm of each layer, then the final norm */
    int iter_part;     /* the part being listed */
    g1_status iter_st;
} linker;

static hid_t open_part(const char *path)
{
    hid_t fapl = g1_h5_read_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

/* Same hyper-parameters as part 0, named when not. */
static g1_status same_config(const linker *k, int i, const g1_config *c)
{
    for (int j = 0; j < g1_num_params; j++) {
        const g1_param_desc *d = &g1_params[j];
        const char *a = (const char *)&k->cfg + d->offset, *b = (const char *)c + d->offset;
        double x = d->type == G1_PARAM_INT ? *(const int *)a : *(const double *)a;
        double y = d->type == G1_PARAM_INT ? *(const int *)b : *(const double *)b;
        if (x != y)
            return G1_FAIL(G1_ERR_FORMAT, "%s has %s = %.17g but %s has %.17g: parts of different models",
                           k->p[i].path, d->name, y, k->p[0].path, x);
    }
    return G1_OK;
}

static herr_t list_layer(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    linker *k = data;
    const part *p = &k->p[k->iter_part];
    char *end;
    errno = 0;
    long v = strtol(name, &end, 10);
    char canon[32];
    snprintf(canon, sizeof canon, "%02ld", v);
    if (errno || end == name || *end || v < 0 || strcmp(canon, name)) {
        k->iter_st = G1_FAIL(G1_ERR_FORMAT, "%s has layers/%s, which is not a layer's name (00, 01, ...)", p->path,
                             name);
        return -1;
    }
    if (v >= k->cfg.num_layers) {
        k->iter_st = G1_FAIL(G1_ERR_FORMAT, "%s has layers/%s, but the model has layers 0-%d only", p->path, name,
                             k->cfg.num_layers - 1);
        return -1;
    }
    if (info->type != H5L_TYPE_HARD) {
        k->iter_st = G1_FAIL(G1_ERR_FORMAT,
                             "%s: layers/%s is a link, not the layer itself (is %s a checkpoint in parts? give "
                             "the parts it links to)",
                             p->path, name, p->path);
        return -1;
    }
    if (k->owner[v] >= 0) {
        k->iter_st = G1_FAIL(G1_ERR_FORMAT, "layer %02ld is in both %s and %s: give each layer once", v,
                             k->p[k->owner[v]].path, p->path);
        return -1;
    }
    k->owner[v] = k->iter_part;
    return 0;
}

static g1_status list_layers(linker *k, int i)
{
    part *p = &k->p[i];
    if (H5Lexists(p->file, "layers", H5P_DEFAULT) <= 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s holds no layer", p->path);
    hid_t g = H5Gopen2(p->file, "layers", H5P_DEFAULT);
    if (g < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: layers is not a group", p->path);
    k->iter_part = i;
    k->iter_st = G1_OK;
    int before = 0;
    for (int l = 0; l < k->cfg.num_layers; l++)
        before += k->owner[l] >= 0;
    hsize_t idx = 0;
    herr_t e = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, list_layer, k);
    H5Gclose(g);
    if (k->iter_st != G1_OK)
        return k->iter_st;
    if (e < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: cannot list its layers", p->path);
    int after = 0;
    for (int l = 0; l < k->cfg.num_layers; l++)
        after += k->owner[l] >= 0;
    if (after == before)
        return G1_FAIL(G1_ERR_FORMAT, "%s holds no layer", p->path);
    return G1_OK;
}

void g1_layer_ranges(const int *v, int L, int who, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (int l = 0; l < L; l++) {
        if (v[l] != who || (l > 0 && v[l - 1] == who))
            continue;
        int e = l;
        while (e + 1 < L && v[e + 1] == who)
            e++;
        int w = e > l ? snprintf(buf + used, n - used, "%s%d-%d", used ? ", " : "", l, e)
                      : snprintf(buf + used, n - used, "%s%d", used ? ", " : "", l);
        if (w < 0 || (size_t)w >= n - used) {
            snprintf(buf + (n > 5 ? n - 5 : 0), n > 5 ? 5 : n, "...");
            return;
        }
        used += (size_t)w;
    }
}

/* ---- the embedding and final norm ---- */

/* Rows [row, row+1) (or the whole vector when row < 0) of a float dataset. */
static g1_status read_row(const part *p, const char *name, hsize_t rows, hsize_t cols, long long row, float *buf)
{
    hid_t d = H5Dopen2(p->file, name, H5P_DEFAULT);
    if (d < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s has no dataset %s", p->path, name);
    hid_t fs = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[2] = {0, 0};
    if (rank == 1 || rank == 2)
        H5Sget_simple_extent_dims(fs, dims, NULL);
    int ok = row < 0 ? rank == 1 && dims[0] == cols : rank == 2 && dims[0] == rows && dims[1] == cols;
    herr_t e = -1;
    if (ok) {
        hsize_t start[2] = {row < 0 ? 0 : (hsize_t)row, 0}, count[2] = {row < 0 ? cols : 1, cols};
        hid_t ms = H5Screate_simple(1, row < 0 ? &cols : &count[1], NULL);
        e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        if (e >= 0)
            e = H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
        H5Sclose(ms);
    }
    H5Sclose(fs);
    H5Dclose(d);
    if (!ok)
        return G1_FAIL(G1_ERR_FORMAT, "%s: %s does not have the model's shape", p->path, name);
    if (e < 0)
        return G1_FAIL(G1_ERR_IO, "%s: reading %s failed", p->path, name);
    return G1_OK;
}

/* Every part must have the final norm of `src`, and those with an
 * embedding its embedding (in EMBED_SAMPLE_ROWS rows). */
static g1_status same_embedding(const linker *k, int src)
{
    hsize_t V = (hsize_t)k->cfg.vocab_size, D = (hsize_t)k->cfg.emb_size;
    float *a = malloc(D * sizeof *a), *b = malloc(D * sizeof *b);
    g1_status st = a && b ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int i = 0; i < k->n && st == G1_OK; i++) {
        if (i == src)
            continue;
        const part *p = &k->p[i];
        int has_e = H5Lexists(p->file, "embedding", H5P_DEFAULT) > 0;
        for (int s = -1; s < EMBED_SAMPLE_ROWS && st == G1_OK; s++) {
            if (s >= 0 && !has_e)
                break;
            long long row = s < 0 ? -1 : (long long)((V - 1) * (hsize_t)s / (EMBED_SAMPLE_ROWS - 1));
            const char *name = s < 0 ? "final_norm" : "embedding";
            st = read_row(&k->p[src], name, V, D, row, a);
            if (st == G1_OK)
                st = read_row(p, name, V, D, row, b);
            if (st == G1_OK && memcmp(a, b, D * sizeof *a)) {
                if (s < 0)
                    st = G1_FAIL(G1_ERR_FORMAT, "%s and %s have different final norms: parts of different models",
                                 k->p[src].path, p->path);
                else
                    st = G1_FAIL(G1_ERR_FORMAT,
                                 "%s and %s have different embeddings (row %lld): parts of different models",
                                 k->p[src].path, p->path, row);
            }
        }
    }
    free(a);
    free(b);
    return st;
}

/* The fingerprints the reader checks (G1_H5_PART_FP_ATTR). */
static g1_status fingerprints(linker *k, int src)
{
    int L = k->cfg.num_layers;
    hsize_t D = (hsize_t)k->cfg.emb_size;
    k->fp = malloc(((size_t)L + 1) * sizeof *k->fp);
    float *v = malloc(D * sizeof *v);
    g1_status st = k->fp && v ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int l = 0; l <= L && st == G1_OK; l++) {
        char name[48];
        snprintf(name, sizeof name, l < L ? "layers/%02d/attn_norm" : "final_norm", l);
        st = read_row(&k->p[l < L ? k->owner[l] : src], name, 0, D, -1, v);
        if (st == G1_OK)
            k->fp[l] = g1_fnv1a64(G1_FNV1A64_START, v, D * sizeof *v);
    }
    free(v);
    return st;
}

/* ---- names ---- */

/* The name a link stores for part p: relative to OUT's folder when the part
 * is in it or below (the pair can move together, and HDF5_EXT_PREFIX can
 * point at local copies), else absolute. A part that is a symbolic link is
 * named as the link, not as its target. */
static g1_status target_names(linker *k, const char *outdir)
{
    size_t nd = strlen(outdir);
    for (int i = 0; i < k->n; i++) {
        part *p = &k->p[i];
        p->real = realpath(p->path, NULL);
        char *d = strdup(p->path), *b = strdup(p->path), *rd = NULL;
        if (p->real && d && b && (rd = realpath(dirname(d), NULL)) != NULL) {
            const char *base = basename(b);
            size_t n = strlen(rd) + strlen(base) + 2;
            if ((p->named = malloc(n)) != NULL)
                snprintf(p->named, n, "%s%s%s", rd, strcmp(rd, "/") ? "/" : "", base);
        }
        free(d);
        free(b);
        free(rd);
        if (!p->real || !p->named)
            return G1_FAIL(G1_ERR_IO, "%s: %s", p->path, strerror(errno ? errno : ENOMEM));
        const char *rel = p->named;
        if (!strncmp(p->named, outdir, nd) && p->named[nd] == '/')
            rel = p->named + nd + 1;
        else if (!strcmp(outdir, "/"))
            rel = p->named + 1;
        p->target = strdup(rel);
        if (!p->target)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    return G1_OK;
}

/* ---- writing ---- */

static g1_status write_links(const linker *k, hid_t f, const char *tmp, int src)
{
    herr_t e = g1_h5_put_config(f, &k->cfg);
    hsize_t n = (hsize_t)k->cfg.num_layers + 1;
    hid_t sp = e < 0 ? -1 : H5Screate_simple(1, &n, NULL);
    hid_t a = sp < 0 ? -1 : H5Acreate2(f, G1_H5_PART_FP_ATTR, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    e = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_UINT64, k->fp);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    if (e >= 0)
        e = H5Lcreate_external(k->p[src].target, "/embedding", f, "embedding", H5P_DEFAULT, H5P_DEFAULT);
    if (e >= 0)
        e = H5Lcreate_external(k->p[src].target, "/final_norm", f, "final_norm", H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = e < 0 ? -1 : H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int l = 0; l < k->cfg.num_layers && g >= 0 && e >= 0; l++) {
        char name[32], obj[48];
        snprintf(name, sizeof name, "%02d", l);
        snprintf(obj, sizeof obj, "/layers/%02d", l);
        e = H5Lcreate_external(k->p[k->owner[l]].target, obj, g, name, H5P_DEFAULT, H5P_DEFAULT);
    }
    if (g >= 0)
        H5Gclose(g);
    if (e < 0 || g < 0) {
        char d[256];
        g1_h5_detail(d);
        return G1_FAIL(G1_ERR_IO, "%s: cannot write the links: %s", tmp, d);
    }
    return G1_OK;
}

/* Every link resolves from where the file is (the parts are found). */
static g1_status check_links(const linker *k, hid_t f, const char *out)
{
    char name[48];
    for (int l = -2; l < k->cfg.num_layers; l++) {
        if (l == -2)
            snprintf(name, sizeof name, "embedding");
        else if (l == -1)
            snprintf(name, sizeof name, "final_norm");
        else
            snprintf(name, sizeof name, "layers/%02d", l);
        hid_t o = H5Oopen(f, name, H5P_DEFAULT);
        if (o < 0) {
            char d[256];
            g1_h5_detail(d);
            return G1_FAIL(G1_ERR_IO, "%s: %s does not resolve from beside %s (HDF5 says '%s')", out, name, out, d);
        }
        H5Oclose(o);
    }
    return G1_OK;
}

static g1_status write_out(const linker *k, int src, int replace)
{
    struct stat sb;
    if (!replace && !lstat(k->out, &sb))
        return G1_FAIL(G1_ERR_ARG, "%s exists (--force replaces it)", k->out);
    size_t n = strlen(k->out) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp.%ld", k->out, (long)getpid());
    unlink(tmp); /* made anew, exclusively: never through a link found at the name */
    hid_t f = H5Fcreate(tmp, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    g1_status st = G1_OK;
    if (f < 0) {
        char d[256];
        g1_h5_detail(d);
        st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", tmp, d);
    }
    /* its room first (g1_h5_reserve): links and fingerprints are small */
    if (st == G1_OK && g1_h5_reserve(f, (uint64_t)1 << 20, NULL) < 0)
        st = G1_FAIL(G1_ERR_IO, "no room for %s (about 1 MiB) on its file system%s", tmp,
                     errno == EDQUOT ? " (the quota is reached)" : "");
    if (st == G1_OK)
        st = write_links(k, f, tmp, src);
    if (f >= 0 && g1_h5_close(f) < 0 && st == G1_OK)
        st = G1_FAIL(G1_ERR_IO, "%s: closing the file failed (disk full?)", tmp);
    if (st == G1_OK) { /* links resolve from a file opened, as grok1-run will */
        hid_t r = open_part(tmp);
        st = r < 0 ? G1_FAIL(G1_ERR_IO, "cannot open %s again", tmp) : check_links(k, r, k->out);
        if (r >= 0)
            H5Fclose(r);
    }
    if (st == G1_OK) {
        st = g1_rename_durable(tmp, k->out);
    }
    if (st != G1_OK && f >= 0)
        remove(tmp);
    free(tmp);
    return st;
}

/* ---- the whole ---- */

static g1_status link_parts(linker *k, int replace, char *summary, size_t n_summary)
{
    /* OUT's folder, and OUT must not be a part */
    char *dup = strdup(k->out), *outdir = NULL;
    if (!dup)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    outdir = realpath(dirname(dup), NULL);
    free(dup);
    if (!outdir)
        return G1_FAIL(G1_ERR_IO, "%s: its folder cannot be opened: %s", k->out, strerror(errno));
    g1_status st = G1_OK;
    char *out_real = realpath(k->out, NULL);
    for (int i = 0; i < k->n && st == G1_OK; i++) {
        g1_ckpt *ck;
        st = g1_ckpt_open(k->p[i].path, &ck); /* exists, HDF5, format, hyper-parameters */
        if (st != G1_OK)
            break;
        st = g1_ckpt_check_header(ck);
        if (st == G1_OK && i == 0)
            k->cfg = *g1_ckpt_config(ck);
        else if (st == G1_OK)
            st = same_config(k, i, g1_ckpt_config(ck));
        g1_ckpt_close(ck);
        if (st == G1_OK && i == 0) {
            k->owner = malloc((size_t)k->cfg.num_layers * sizeof *k->owner);
            if (!k->owner)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            for (int l = 0; st == G1_OK && l < k->cfg.num_layers; l++)
                k->owner[l] = -1;
        }
        if (st == G1_OK) {
            k->p[i].file = open_part(k->p[i].path);
            if (k->p[i].file < 0)
                st = G1_FAIL(G1_ERR_IO, "cannot open %s", k->p[i].path);
        }
        if (st == G1_OK)
            st = list_layers(k, i);
    }
    if (st == G1_OK)
        st = target_names(k, outdir);
    for (int i = 0; i < k->n && st == G1_OK; i++)
        if (out_real && !strcmp(out_real, k->p[i].real))
            st = G1_FAIL(G1_ERR_ARG, "%s is also a part: give another output name", k->out);
    free(out_real);
    char buf[512];
    if (st == G1_OK) {
        g1_layer_ranges(k->owner, k->cfg.num_layers, -1, buf, sizeof buf);
        if (buf[0])
            st = G1_FAIL(G1_ERR_FORMAT, "no part holds layer%s %s (the model has layers 0-%d)",
                         strchr(buf, '-') || strchr(buf, ',') ? "s" : "", buf, k->cfg.num_layers - 1);
    }
    /* the embedding from the part with layer 0 (rank 0 loads both), else the
     * first that has one (the others may be made with --no-embedding) */
    int src = -1;
    for (int j = -1; j < k->n && st == G1_OK && src < 0; j++) {
        int i = j < 0 ? k->owner[0] : j;
        if (H5Lexists(k->p[i].file, "embedding", H5P_DEFAULT) > 0)
            src = i;
    }
    if (st == G1_OK && src < 0)
        st = G1_FAIL(G1_ERR_FORMAT, "no part has the embedding: convert one of them without --no-embedding");
    for (int i = 0; i < k->n && st == G1_OK; i++)
        if (H5Lexists(k->p[i].file, "final_norm", H5P_DEFAULT) <= 0)
            st = G1_FAIL(G1_ERR_FORMAT, "%s has no final norm: not a part made by grok1-convert or grok1-mkckpt",
                         k->p[i].path);
    if (st == G1_OK)
        st = same_embedding(k, src);
    if (st == G1_OK)
        st = fingerprints(k, src);
    for (int i = 0; i < k->n && st == G1_OK; i++)
        k->p[i].crc = H5Aexists_by_name(k->p[i].file, "final_norm", G1_H5_CRC_ATTR, H5P_DEFAULT) > 0;
    for (int i = 0; i < k->n; i++) { /* the links open them again, maybe otherwise */
        if (k->p[i].file >= 0)
            H5Fclose(k->p[i].file);
        k->p[i].file = -1;
    }
    if (st == G1_OK)
        st = write_out(k, src, replace);
    if (st == G1_OK && summary && n_summary) {
        size_t used = (size_t)snprintf(summary, n_summary, "embedding and final norm in %s", k->p[src].target);
        for (int l = 0; l < k->cfg.num_layers && used < n_summary; l++) {
            int e = l;
            while (e + 1 < k->cfg.num_layers && k->owner[e + 1] == k->owner[l])
                e++;
            if (e > l)
                used += (size_t)snprintf(summary + used, n_summary - used, "; layers %d-%d in %s", l, e,
                                         k->p[k->owner[l]].target);
            else
                used += (size_t)snprintf(summary + used, n_summary - used, "; layer %d in %s", l,
                                         k->p[k->owner[l]].target);
            l = e;
        }
        int without = 0;
        for (int i = 0; i < k->n; i++)
            without += !k->p[i].crc;
        if (!without && used < n_summary)
            used += (size_t)snprintf(summary + used, n_summary - used, "; checksums in every part");
        for (int i = 0, m = 0; i < k->n && used < n_summary; i++)
            if (!k->p[i].crc)
                used += (size_t)snprintf(summary + used, n_summary - used, "%s%s", m++ ? ", " : "; no checksums in ",
                                         k->p[i].target);
        if (without && used < n_summary)
            snprintf(summary + used, n_summary - used, " (written before checksums: their tensors load unchecked; "
                                                       "grok1-checksum --add on the joined file, or --add --layers "
                                                       "A-B on a part with its layers, puts them in)");
    }
    free(outdir);
    return st;
}

g1_status g1_ckpt_link(const char *out, int n_parts, const char *const *parts, int replace, char *summary,
                       size_t n_summary)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (summary && n_summary)
        summary[0] = 0;
    if (n_parts < 1)
        return G1_FAIL(G1_ERR_ARG, "no part given");
    linker k = {.out = out, .n = n_parts, .p = calloc((size_t)n_parts, sizeof(part))};
    if (!k.p)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_parts; i++) {
        k.p[i].path = parts[i];
        k.p[i].file = -1;
    }
    g1_status st = link_parts(&k, replace, summary, n_summary);
    for (int i = 0; i < n_parts; i++) {
        if (k.p[i].file >= 0)
            H5Fclose(k.p[i].file);
        free(k.p[i].real);
        free(k.p[i].named);
        free(k.p[i].target);
    }
    free(k.p);
    free(k.owner);
    free(k.fp);
    return st;
}
