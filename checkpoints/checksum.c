/* grok1-checksum: check every tensor of a checkpoint against its checksums
 * (the "crc32" attribute our writers put on each dataset: one CRC-32 per
 * expert for the moe datasets, else one; docs/CHECKPOINT.md), or with --add
 * put checksums on a checkpoint written before they existed.
 * Exit 0 all checked and matched, 1 damaged, unreadable or incomplete (a
 * layer of the model missing, or one more in the file), 2 usage, 3 no
 * mismatch but some datasets have no checksum (check mode only). */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt.h"
#include "durable.h"
#include "cli_out.h"
#include "g1_version.h"
#include "h5util.h"

static const char usage_text[] =
    "usage: grok1-checksum [--add] [--layers A-B] CKPT.h5\n"
    "       grok1-checksum [--add] DUMP.h5\n"
    "\n"
    "Reads every tensor of a grok1-hdf5 checkpoint (one file, a part, or one\n"
    "joined by grok1-link, through its links) and compares it with the CRC-32\n"
    "that grok1-convert and grok1-mkckpt record on each dataset (one per expert\n"
    "for the moe tensors), and the hyper-parameters with theirs (root attribute\n"
    "params_crc32). Run it on a node after copying a checkpoint there.\n"
    "grok1-run compares the tensors it loads the same way, so a damaged file\n"
    "stops a job at load; this finds the damage before the job is queued, and\n"
    "lists every damaged tensor, not only the first. Through a joined checkpoint\n"
    "it also compares each layer's attn_norm and the final norm with the\n"
    "fingerprints grok1-link took, as grok1-run does: a part made again or\n"
    "replaced since the link (its own checksums match) is named.\n"
    "\n"
    "Given a logits dump of grok1-run (--dump-logits; a finished one or its\n"
    ".partial), it compares every logits/<k> with the CRC-32 grok1-run put on\n"
    "it when the request's last rows were written, and checks that its tokens\n"
    "attribute holds one token id a row and its id attribute is a string.\n"
    "\n"
    "  --add         put checksums on the datasets (and the hyper-parameters)\n"
    "                that have none (a checkpoint written before checksums\n"
    "                existed), computed from what the file holds now: run it on\n"
    "                the file as the converter wrote it, before copying it\n"
    "                (checksums added to a damaged file record the damage).\n"
    "                Datasets that have one are checked. Needs write\n"
    "                access to the file (for a checkpoint in parts: to the parts),\n"
    "                and no job reading it meanwhile (it changes HDF5 metadata).\n"
    "                A part alone takes --add with --layers and its layers:\n"
    "                without them it is refused (exit 2) and left unwritten.\n"
    "                The file is written in place (through a symbolic link, the\n"
    "                file it names); a device, FIFO or directory is refused\n"
    "                (exit 2; without --add, exit 1), never opened.\n"
    "  --layers A-B  only layers A..B (inclusive), and no embedding or final norm\n"
    "                unless A is 0;\n"
    "                without it, every layer of the model (num_layers), which\n"
    "                the file must hold: a part holds some, so check a part with\n"
    "                its layers (--layers beyond them is a usage error)\n"
    "  --help        this text\n"
    "  --version     the version\n"
    "\n"
    "Exit status: 0 every dataset read had a checksum and matched it (or got\n"
    "one, with --add); 1 a tensor or the hyper-parameters do not match, a tensor\n"
    "could not be read, a part is not the one linked, a layer of the model is\n"
    "missing (INCOMPLETE; without --layers), or layers/ has a group that is not\n"
    "a layer of the model; 2 usage; 3 nothing\n"
    "damaged, but some datasets (or the hyper-parameters) have no checksum, so\n"
    "were not checked.\n"
    "OMP_NUM_THREADS sets the threads that compute the CRCs (default: every core).\n";

typedef struct tally {
    const char *path;
    int add;
    long datasets, matched, damaged, unchecked, added, failed;
    long nomem; /* of failed: not checked for want of memory, which says nothing of the file */
    long missing;     /* layers of the model the file does not hold (checked without --layers) */
    long extra;       /* members of group layers that are not a layer of the model */
    int num_layers;
    long foreign;     /* norms read from a part that is not the one grok1-link linked */
    int joined;       /* a checkpoint joined by grok1-link (it has G1_H5_PART_FP_ATTR) */
    struct lost *lost; /* part files that cannot be opened: one line each at the end */
    int nlost;
    unsigned long long bytes;
    const char *params; /* the hyper-parameters' checksum: "matched", "DAMAGED", "none", "added"; NULL: a dump */
} tally;

/* A part file a joined checkpoint links to that cannot be opened, and
 * what of it was therefore not checked. */
struct lost {
    char file[1024], detail[256];
    int layers, first, last, embedding, final_norm;
};

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "grok1-checksum: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\n(grok1-checksum --help for usage)\n");
    return 2;
}

/* A dataset's failure: detail is what HDF5 said; nomem, that it was out of
 * memory (g1_h5_detail's G1_H5_SAID_NOMEM: HDF5's allocation, or ours that
 * g1_h5_nomem put on its stack). */
static void fail_detail(tally *t, const char *name, const char *what, const char *detail, int nomem)
{
    if (nomem) { /* not the file's fault, and maybe not HDF5 that said it */
        fprintf(stderr, "grok1-checksum: %s: %s: %s: %s\n", t->path, name, what, detail);
        t->nomem++;
    } else
        fprintf(stderr, "grok1-checksum: %s: %s: %s (HDF5 says '%s')\n", t->path, name, what, detail);
    t->failed++;
}

static void fail(tally *t, const char *name, const char *what)
{
    char detail[256];
    g1_h5_said said = g1_h5_detail(detail);
    fail_detail(t, name, what, detail, said == G1_H5_SAID_NOMEM);
}

/* Link `name` (layer `layer`, or -1 the embedding, -2 the final norm) of a
 * joined checkpoint: 1 when it is an external link that does not lead to
 * an object (then noted: a part file that cannot be opened is told once,
 * at the end; a file of that name without the object, here), else 0. */
static int unreachable(hid_t file, const char *name, int layer, tally *t)
{
    H5L_info_t info;
    if (H5Lget_info(file, name, &info, H5P_DEFAULT) < 0 || info.type != H5L_TYPE_EXTERNAL || !info.u.val_size)
        return 0;
    hid_t o = H5Oopen(file, name, H5P_DEFAULT);
    if (o >= 0) {
        H5Oclose(o);
        return 0;
    }
    char detail[256];
    g1_h5_detail(detail);
    char *buf = malloc(info.u.val_size);
    const char *part = NULL, *obj = NULL;
    unsigned flags;
    if (!buf || H5Lget_val(file, name, buf, info.u.val_size, H5P_DEFAULT) < 0 ||
        H5Lunpack_elink_val(buf, info.u.val_size, &flags, &part, &obj) < 0 || !part || !obj) {
        fprintf(stderr, "grok1-checksum: %s: %s is an external link that cannot be read\n", t->path, name);
        t->failed++;
    } else if (!strstr(detail, "unable to open external file") && g1_h5_part_present(t->path, part)) {
        fprintf(stderr,
                "grok1-checksum: %s: %s is linked to %s in part file %s, but HDF5 says '%s': the file found under "
                "that name is not the part grok1-link linked; put the right part there, or link the parts again\n",
                t->path, name, obj, part, detail);
        t->failed++;
    } else {
        struct lost *l = NULL;
        for (int i = 0; i < t->nlost && !l; i++)
            if (!strcmp(t->lost[i].file, part))
                l = &t->lost[i];
        if (!l) {
            struct lost *v = realloc(t->lost, (size_t)(t->nlost + 1) * sizeof *v);
            if (v) {
                struct lost *n = &v[t->nlost];
                memset(n, 0, sizeof *n);
                snprintf(n->file, sizeof n->file, "%s", part);
                snprintf(n->detail, sizeof n->detail, "%s", detail);
                t->lost = v;
                t->nlost++;
                l = n;
            }
        }
        if (l && layer >= 0) {
            l->first = l->layers ? l->first : layer;
            l->last = layer;
            l->layers++;
        } else if (l) {
            *(layer == -1 ? &l->embedding : &l->final_norm) = 1;
        }
        t->failed++;
    }
    free(buf);
    return 1;
}

/* One line per part file that could not be opened. */
static void tell_lost(const tally *t)
{
    const char *prefix = getenv("HDF5_EXT_PREFIX");
    for (int i = 0; i < t->nlost; i++) {
        const struct lost *l = &t->lost[i];
        char what[160] = "";
        if (l->layers == 1)
            snprintf(what, sizeof what, "layer %d", l->first);
        else if (l->layers)
            snprintf(what, sizeof what, "%d layers (%d to %d)", l->layers, l->first, l->last);
        if (l->embedding)
            snprintf(what + strlen(what), sizeof what - strlen(what), "%sthe embedding",
                     !*what ? "" : l->final_norm ? ", " : " and ");
        if (l->final_norm)
            snprintf(what + strlen(what), sizeof what - strlen(what), "%sthe final norm", *what ? " and " : "");
        fprintf(stderr,
                "grok1-checksum: %s: part file %s cannot be opened (HDF5 says '%s'), so %s in it %s not checked. HDF5 "
                "looks for a part in the folders of HDF5_EXT_PREFIX (%s), then beside %s, then in the current "
                "directory; put the part there, or link the parts again\n",
                t->path, l->file, l->detail, what, l->layers + l->embedding + l->final_norm == 1 ? "was" : "were",
                prefix && *prefix ? prefix : "not set", t->path);
    }
}

/* Every layer of the model (num_layers, L) is in the file, as grok1-run
 * needs to load it: else one line naming the missing ones (a part alone
 * looks the same: it is checked with --layers, its layers). */
static void check_complete(const int *holds, int L, tally *t)
{
    int held = 0, lo = -1, hi = -1;
    for (int l = 0; l < L; l++)
        if (holds[l]) {
            lo = lo < 0 ? l : lo;
            hi = l;
            held++;
        }
    if (held == L)
        return;
    t->missing = L - held;
    char missing[160], has[200] = "no layer", hint[300] = "";
    g1_layer_ranges(holds, L, 0, missing, sizeof missing);
    if (held) {
        snprintf(has, sizeof has, "layer%s ", held == 1 ? "" : "s");
        g1_layer_ranges(holds, L, 1, has + strlen(has), sizeof has - strlen(has));
    }
    if (held && held == hi - lo + 1)
        snprintf(hint, sizeof hint,
                 ". If it is a part of a checkpoint in parts (grok1-convert --layers, grok1-mkckpt --part), check "
                 "it with --layers %d-%d, or check the checkpoint grok1-link joined",
                 lo, hi);
    fprintf(stderr, "grok1-checksum: %s: layer%s %s missing (the model has %d layers, num_layers; the file holds "
                    "%s): INCOMPLETE, grok1-run refuses to load it%s\n",
            t->path, t->missing == 1 ? "" : "s", missing, L, has, hint);
}

static herr_t extra_layer(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g, (void)info;
    tally *t = data;
    int l = g1_h5_layer_index(name);
    if (l >= 0 && l < t->num_layers)
        return 0;
    if (l < 0)
        fprintf(stderr, "grok1-checksum: %s: layers/%s is not a layer's name (00, 01, ...): grok1-run refuses the "
                        "file\n", t->path, name);
    else
        fprintf(stderr, "grok1-checksum: %s: layers/%s is not a layer of the model (num_layers %d: layers/00 to "
                        "layers/%02d; num_layers changed, or a group added by hand?): not checked, and grok1-run "
                        "refuses the file\n", t->path, name, t->num_layers, t->num_layers - 1);
    t->extra++;
    return 0;
}

/* Every member of group layers is a layer of the model, as the reader
 * requires: one more would be left unread. */
static void check_extra(hid_t file, tally *t)
{
    H5L_info_t info;
    if (H5Lexists(file, "layers", H5P_DEFAULT) <= 0 || H5Lget_info(file, "layers", &info, H5P_DEFAULT) < 0 ||
        info.type != H5L_TYPE_HARD)
        return;
    hid_t g = H5Gopen2(file, "layers", H5P_DEFAULT);
    hsize_t idx = 0;
    if (g < 0 || H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, extra_layer, t) < 0)
        fail(t, "layers", "cannot be listed");
    if (g >= 0)
        H5Gclose(g);
}

/* One dataset: compare each checksum it has; with --add, put them on when
 * it has none. */
static void check_dataset(hid_t file, const char *shown, tally *t)
{
    hid_t d = H5Dopen2(file, shown, H5P_DEFAULT);
    if (d < 0) {
        fail(t, shown, t->joined ? "cannot be opened (a part file missing or replaced?)" : "cannot be opened");
        return;
    }
    t->datasets++;
    /* in a part file (a checkpoint joined by grok1-link): say which */
    char root[1024] = "", part[1024] = "", where[1100] = "";
    g1_h5_file_name(file, root, sizeof root);
    g1_h5_file_name(d, part, sizeof part);
    if (*part && strcmp(root, part))
        snprintf(where, sizeof where, " in part file %s", part);
    char name[1300];
    snprintf(name, sizeof name, "%s%s", shown, where);
    hid_t type = H5Dget_type(d), sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK];
    if (rank > 0)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5T_class_t cls = H5Tget_class(type);
    int i8 = cls == H5T_INTEGER && H5Tget_size(type) == 1 && H5Tget_sign(type) == H5T_SGN_2;
    H5Sclose(sp);
    H5Tclose(type);
    if (rank < 1 || rank > 3 || !(i8 || cls == H5T_FLOAT)) {
        fail(t, name, "is not an int8 or float tensor of 1 to 3 dimensions");
        H5Dclose(d);
        return;
    }
    char why[400];
    if (!g1_h5_stored(d, why, sizeof why)) {
        fprintf(stderr, "grok1-checksum: %s: %s cannot be read: %s\n", t->path, name, why);
        t->failed++;
        H5Dclose(d);
        return;
    }
    int n = rank == 3 ? (int)dims[0] : 1;
    uint32_t *rec = malloc((size_t)n * sizeof *rec), *got = malloc((size_t)n * sizeof *got);
    int have = rec && got ? g1_h5_get_crcs(d, rec, (size_t)n) : -1;
    if (!rec || !got) { /* not the attribute's fault */
        fprintf(stderr, "grok1-checksum: %s: %s: out of memory for its %d checksum%s\n", t->path, name, n,
                n == 1 ? "" : "s");
        t->failed++;
        t->nomem++;
    } else if (have < 0 || (have && have != n)) {
        fprintf(stderr, "grok1-checksum: %s: %s has a %s attribute that is not %d unsigned integer%s\n", t->path,
                name, G1_H5_CRC_ATTR, n, n == 1 ? "" : "s");
        t->failed++;
    } else {
        hid_t memtype = i8 ? H5T_NATIVE_INT8 : H5T_NATIVE_FLOAT;
        size_t esize = i8 ? 1 : sizeof(float);
        int bad = 0, read_failed = 0;
        for (int e = 0; e < n && !read_failed; e++) {
            if (g1_h5_crc_of(d, memtype, esize, rank, dims, rank == 3 ? e : -1, &got[e], &t->bytes) < 0) {
                char detail[1600];
                const char *it = rank == 3 ? "an expert" : "it";
                g1_h5_said said;
                if (g1_h5_read_detail(d, detail, sizeof detail, &said)) {
                    fprintf(stderr, "grok1-checksum: %s: %s: %s could not be read: %s\n", t->path, name, it, detail);
                    t->failed++;
                } else {
                    char what[64];
                    snprintf(what, sizeof what, "%s could not be read", it);
                    fail_detail(t, name, what, detail, said == G1_H5_SAID_NOMEM);
                }
                read_failed = 1;
            } else if (have && got[e] != rec[e]) {
                char which[32] = "";
                if (rank == 3)
                    snprintf(which, sizeof which, " expert %d", e);
                fprintf(stderr,
                        "grok1-checksum: %s: %s%s%s does not match its checksum (CRC-32 %08x; the file records "
                        "%08x): DAMAGED\n",
                        t->path, shown, which, where, (unsigned)got[e], (unsigned)rec[e]);
                bad = 1;
            }
        }
        if (read_failed) {
            /* counted in failed */
        } else if (bad) {
            t->damaged++;
        } else if (have) {
            t->matched++;
        } else if (!t->add) {
            t->unchecked++;
        } else if (g1_h5_put_crcs(d, got, (size_t)n) < 0) {
            fail(t, name, "cannot take its checksum (is the file writable?)");
        } else {
            t->added++;
        }
    }
    free(rec);
    free(got);
    H5Dclose(d);
}

static void check_layer(hid_t file, int layer, tally *t)
{
    char name[96];
    for (int n = 0; n < G1_NUM_NORM; n++) {
        snprintf(name, sizeof name, "layers/%02d/%s", layer, g1_norm_names[n]);
        check_dataset(file, name, t);
    }
    for (int i = 0; i < G1_NUM_QMAT; i++)
        for (int s = 0; s < 2; s++) {
            snprintf(name, sizeof name, "layers/%02d/%s%s", layer, g1_qmat_names[i], s ? "_scale" : "");
            check_dataset(file, name, t);
        }
    snprintf(name, sizeof name, "layers/%02d/router", layer);
    check_dataset(file, name, t);
}

static int parse_layers(const char *v, int *a, int *b)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '-' || x < 0)
        return 0;
    const char *w = end + 1;
    long y = strtol(w, &end, 10);
    if (end == w || *end || y < x || y > 100000)
        return 0;
    *a = (int)x, *b = (int)y;
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The closing line and the exit status. */
static int summary(const tally *t, const char *what, double dt)
{
    printf("grok1-checksum: %s: %ld datasets (%s): %llu bytes read in %.2f s (%.2f GB/s); %ld matched", t->path,
           t->datasets, what, t->bytes, dt, dt > 0 ? (double)t->bytes / dt / 1e9 : 0.0, t->matched);
    if (t->add)
        printf(", %ld added", t->added);
    if (t->unchecked)
        printf(", %ld without a checksum (not checked; --add puts them in)", t->unchecked);
    if (t->damaged)
        printf(", %ld DAMAGED", t->damaged);
    if (t->failed > t->nomem)
        printf(", %ld unreadable", t->failed - t->nomem);
    if (t->nomem)
        printf(", %ld not checked (out of memory)", t->nomem);
    if (t->foreign)
        printf(", %ld norm%s from a part not the one linked", t->foreign, t->foreign == 1 ? "" : "s");
    if (t->missing)
        printf(", %ld layer%s missing (INCOMPLETE)", t->missing, t->missing == 1 ? "" : "s");
    if (t->extra)
        printf(", %ld in layers/ not a layer of the model", t->extra);
    if (t->params)
        printf("; hyper-parameters %s", !strcmp(t->params, "none") ? "without a checksum (--add puts it in)"
                                                                   : t->params);
    printf("\n");
    if (t->damaged || t->failed || t->foreign || t->missing || t->extra ||
        (t->params && !strcmp(t->params, "DAMAGED")))
        return 1;
    if (t->datasets == 0) {
        fprintf(stderr, "grok1-checksum: %s: no dataset checked\n", t->path);
        return 1;
    }
    return t->unchecked || (t->params && !strcmp(t->params, "none")) ? 3 : 0;
}

/* The root attribute params_crc32 against the hyper-parameters read. */
static void check_params(hid_t file, const g1_config *cfg, tally *t)
{
    uint32_t rec, want = g1_h5_params_crc(cfg);
    int got = g1_h5_get_params_crc(file, &rec);
    if (got == 1 && rec == want) {
        t->params = "matched";
    } else if (got != 0) {
        char rec_text[64] = "unreadable";
        if (got == 1)
            snprintf(rec_text, sizeof rec_text, "the file records %08x", (unsigned)rec);
        fprintf(stderr, "grok1-checksum: %s: the hyper-parameters do not match their checksum (CRC-32 %08x; %s in "
                        "%s): a root attribute was changed since the file was written: DAMAGED\n",
                t->path, (unsigned)want, rec_text, G1_H5_PARAMS_CRC_ATTR);
        t->params = "DAMAGED";
    } else if (t->add && g1_h5_put_params_crc(file, cfg) >= 0) {
        t->params = "added";
    } else {
        if (t->add)
            t->failed++;
        t->params = "none";
    }
}

/* 1 when path is an HDF5 file with the root attributes of a logits dump;
 * -1 when memory ran out reading them */
static int is_dump(const char *path)
{
    hid_t fapl = g1_h5_read_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    int yes = f >= 0 ? g1_h5_is_logits_dump(f) : 0;
    if (f >= 0)
        H5Fclose(f);
    return yes;
}

/* A logits dump of grok1-run (--dump-logits): every dataset logits/<k>
 * (one CRC-32 each), in the order of k. */
static int check_dump(tally *t)
{
    /* its datasets, each logits/<k> of float32 (n, V), by k (the checks of
     * grok1-merge: a dataset of another name or shape is told here) */
    int v;
    int64_t *ks = NULL;
    size_t nk = 0;
    char *run = NULL;
    if (g1_logits_file_list(t->path, &v, &ks, &nk, &run, NULL) != G1_OK) {
        fprintf(stderr, "grok1-checksum: %s\n", g1_last_error());
        return 1;
    }
    free(run);
    hid_t file = H5Fopen(t->path, t->add ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        char detail[256];
        g1_h5_detail(detail);
        fprintf(stderr, "grok1-checksum: cannot open %s%s: %s\n", t->path, t->add ? " for writing (--add)" : "",
                detail);
        free(ks);
        return 1;
    }
    double t0 = now_s();
    for (size_t i = 0; i < nk; i++) {
        char name[64];
        snprintf(name, sizeof name, "logits/%lld", (long long)ks[i]);
        check_dataset(file, name, t);
    }
    free(ks);
    if (g1_h5_close(file) < 0 && t->add) {
        fprintf(stderr, "grok1-checksum: closing %s failed: the checksums added may not be in it\n", t->path);
        t->failed++;
    }
    return summary(t, "logits dump", now_s() - t0);
}

static int tool_main(int argc, char **argv)
{
    tally t = {0};
    int a = -1, b = -1, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return g1_stdout_done("grok1-checksum");
        } else if (!strcmp(argv[i], "--version")) {
            printf("grok1-checksum %s\n", G1_VERSION);
            return g1_stdout_done("grok1-checksum");
        } else if (!strcmp(argv[i], "--add")) {
            t.add = 1;
        } else if (!strcmp(argv[i], "--layers")) {
            if (i + 1 >= argc)
                return usage_error("--layers needs A-B%s", "");
            if (a >= 0) {
                char both[96];
                snprintf(both, sizeof both, "%d-%d, then %.40s", a, b, argv[i + 1]);
                return usage_error("--layers is given twice (%s): give it once", both);
            }
            if (!parse_layers(argv[++i], &a, &b))
                return usage_error("--layers %s: expected A-B with 0 <= A <= B, e.g. 0-3", argv[i]);
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else {
            return usage_error("unknown option '%s'", argv[i]);
        }
    }
    if (argc - i != 1)
        return usage_error("expected one checkpoint file%s", "");
    t.path = argv[i];
    /* HDF5 cannot read a stream (a FIFO would hang the open) nor write one:
     * a device, FIFO, socket or folder is refused before it is opened, and
     * with --add it is never written (exit 2, as other outputs) */
    struct stat sb;
    if (t.add) {
        char *through = NULL;
        if (g1_h5_output_path("--add", t.path, &through) != G1_OK) {
            fprintf(stderr, "grok1-checksum: %s\n", g1_last_error());
            return 2;
        }
        free(through); /* written in place: through a link, the file it names */
    } else if (stat(t.path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "grok1-checksum: %s is %s, not a regular file: a checkpoint or a logits dump is an HDF5 "
                        "file\n", t.path, S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO"
                                                              : S_ISCHR(sb.st_mode) ? "a character device"
                                                              : "a device or socket");
        return 1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int dump = is_dump(t.path);
    if (dump < 0) {
        fprintf(stderr, "grok1-checksum: %s: out of memory reading its attribute format\n", t.path);
        return 1;
    }
    if (dump && a >= 0) {
        fprintf(stderr, "grok1-checksum: --layers: %s is a logits dump of grok1-run, not a checkpoint\n", t.path);
        return 2;
    }
    if (dump)
        return check_dump(&t);
    /* the file is a checkpoint of a known model: the reader's checks */
    g1_ckpt *ck;
    if (g1_ckpt_open(t.path, &ck) != G1_OK) {
        fprintf(stderr, "grok1-checksum: %s\n", g1_last_error());
        return 1;
    }
    g1_config cfg = *g1_ckpt_config(ck);
    int L = cfg.num_layers;
    g1_ckpt_close(ck);
    if (a >= 0 && b >= L) {
        fprintf(stderr, "grok1-checksum: --layers %d-%d: %s has %d layers (0-%d)\n", a, b, t.path, L, L - 1);
        return 2;
    }
    /* read-only first: what the file holds decides, before anything is
     * written, whether --add may write (opening for writing changes the
     * file's bytes already) */
    hid_t fapl = g1_h5_read_fapl();
    hid_t file = H5Fopen(t.path, H5F_ACC_RDONLY, fapl);
    if (fapl != H5P_DEFAULT)
        H5Pclose(fapl);
    if (file < 0) {
        char detail[256];
        g1_h5_detail(detail);
        fprintf(stderr, "grok1-checksum: cannot open %s: %s\n", t.path, detail);
        return 1;
    }
    /* the layers the file holds (a part holds some): --layers must be among them */
    int have_layers = H5Lexists(file, "layers", H5P_DEFAULT) > 0, lo = -1, hi = -1, held = 0;
    int *holds = calloc((size_t)L + 1, sizeof *holds);
    if (!holds) { /* without the list no layer would be checked, and the run would say it matched */
        fprintf(stderr, "grok1-checksum: %s: out of memory\n", t.path);
        H5Fclose(file);
        return 1;
    }
    for (int l = 0; have_layers && l < L; l++) {
        char dir[32];
        snprintf(dir, sizeof dir, "layers/%02d", l);
        if ((holds[l] = H5Lexists(file, dir, H5P_DEFAULT) > 0)) {
            lo = lo < 0 ? l : lo;
            hi = l;
            held++;
        }
    }
    for (int l = a; a >= 0 && l <= b; l++)
        if (!holds[l]) {
            char range[64] = "no layer";
            if (held == hi - lo + 1)
                snprintf(range, sizeof range, "layers %d-%d", lo, hi);
            else if (held)
                snprintf(range, sizeof range, "%d layers from %d to %d", held, lo, hi);
            fprintf(stderr, "grok1-checksum: --layers %d-%d: %s holds %s (a part of a checkpoint: check the part "
                            "that holds layer %d, or the checkpoint grok1-link joined)\n",
                    a, b, t.path, range, l);
            H5Fclose(file);
            free(holds);
            return 2;
        }
    /* --add without --layers on a file without every layer (a part) would
     * write its checksums and then call it INCOMPLETE: refused, untouched,
     * as a check of a part is done, with its layers */
    if (t.add && a < 0 && held < L) {
        char ranges[160] = "";
        g1_layer_ranges(holds, L, 1, ranges, sizeof ranges);
        if (!held)
            fprintf(stderr, "grok1-checksum: --add: %s holds no layer of the model (num_layers %d): neither a "
                            "checkpoint nor a part of one; nothing was written\n", t.path, L);
        else if (held == hi - lo + 1)
            fprintf(stderr, "grok1-checksum: --add: %s holds layer%s %s of the model's %d (num_layers): a part of a "
                            "checkpoint? Add its checksums with --add --layers %d-%d (or through the checkpoint "
                            "grok1-link joined); nothing was written\n",
                    t.path, held == 1 ? "" : "s", ranges, L, lo, hi);
        else
            fprintf(stderr, "grok1-checksum: --add: %s holds layers %s of the model's %d (num_layers), not every "
                            "one: add the checksums of one range at a time with --add --layers A-B (or through "
                            "the checkpoint grok1-link joined); nothing was written\n",
                    t.path, ranges, L);
        H5Fclose(file);
        free(holds);
        return 2;
    }
    if (t.add) {
        H5Fclose(file);
        file = H5Fopen(t.path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (file < 0) {
            char detail[256];
            g1_h5_detail(detail);
            fprintf(stderr, "grok1-checksum: cannot open %s for writing (--add): %s\n", t.path, detail);
            free(holds);
            return 1;
        }
    }
    t.num_layers = L;
    check_extra(file, &t);
    if (a < 0)
        check_complete(holds, L, &t);
    double t0 = now_s();
    check_params(file, &cfg, &t);
    t.joined = H5Aexists(file, G1_H5_PART_FP_ATTR) > 0;
    int with_embedding = a <= 0 && H5Lexists(file, "embedding", H5P_DEFAULT) > 0, layers = 0;
    if (with_embedding && unreachable(file, "embedding", -1, &t))
        with_embedding = 0;
    if (with_embedding)
        check_dataset(file, "embedding", &t);
    if (a <= 0 && !unreachable(file, "final_norm", -2, &t)) {
        check_dataset(file, "final_norm", &t);
        holds[L] = 2; /* reached: its fingerprint is checked below */
    }
    for (int l = a < 0 ? 0 : a; l <= (a < 0 ? L - 1 : b); l++) {
        char dir[32];
        snprintf(dir, sizeof dir, "layers/%02d", l);
        if (!holds[l] || unreachable(file, dir, l, &t))
            continue;
        check_layer(file, l, &t);
        holds[l] = 2;
        layers++;
    }
    tell_lost(&t);
    free(t.lost);
    if (g1_h5_close(file) < 0 && t.add) {
        fprintf(stderr, "grok1-checksum: closing %s failed: the checksums added may not be in it\n", t.path);
        t.failed++;
    }
    /* a joined checkpoint: the parts reached are the ones linked (the
     * reader's check of the fingerprints grok1-link took) */
    g1_status open_st = t.joined ? g1_ckpt_open(t.path, &ck) : G1_OK;
    if (open_st != G1_OK) { /* the parts not checked: not a success */
        fprintf(stderr, "grok1-checksum: %s\n", g1_last_error());
        t.failed++;
        t.nomem += open_st == G1_ERR_NOMEM;
    } else if (t.joined) {
        for (int l = 0; l <= L; l++) {
            g1_status st = holds[l] == 2 ? g1_ckpt_check_part(ck, l) : G1_OK;
            if (st != G1_OK)
                fprintf(stderr, "grok1-checksum: %s\n", g1_last_error());
            if (st == G1_ERR_NOMEM) { /* says nothing of the part */
                t.failed++;
                t.nomem++;
            } else if (st != G1_OK) {
                t.foreign++;
            }
        }
        g1_ckpt_close(ck);
    }
    free(holds);
    char what[64];
    snprintf(what, sizeof what, "%d layer%s%s", layers, layers == 1 ? "" : "s", with_embedding ? ", embedding" : "");
    return summary(&t, what, now_s() - t0);
}

/* A file that failed to close (a full disk) must not reach HDF5's shutdown
 * (g1_h5_end). */
int main(int argc, char **argv)
{
    int code = tool_main(argc, argv);
    g1_h5_end(code);
    return code;
}
