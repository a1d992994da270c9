/* Internal to grok1-convert: the plan (which release file becomes which
 * HDF5 tensor, with the payloads found by the pickle scanner), the copy and
 * the verification passes, and the progress display. */
#ifndef G1_CONVERT_H
#define G1_CONVERT_H

#include <signal.h>
#include <stdint.h>

#include "ckpt.h"
#include "pickle_scan.h"

#define CV_PER_LAYER 12 /* release files per layer */

typedef enum cv_kind { CV_EMBEDDING, CV_FINAL_NORM, CV_NORM, CV_ROUTER, CV_QMAT } cv_kind;

/* One release file and where it goes. */
typedef struct cv_file {
    int index;        /* NNNNN of tensorNNNNN_000 */
    char *path;
    uint64_t size;    /* bytes */
    cv_kind kind;
    int layer;        /* CV_NORM, CV_ROUTER, CV_QMAT */
    g1_norm_id norm;  /* CV_NORM */
    g1_qmat_id qmat;  /* CV_QMAT */
    g1_pickle_content pc;
} cv_file;

/* Progress over a number of bytes: live on a terminal, periodic lines otherwise. */
typedef struct cv_progress {
    const char *phase;
    uint64_t total, done;
    int files_total, files_done;
    double t0, last_print;
    int tty;
    volatile sig_atomic_t *interrupted; /* set by main's signal handler */
} cv_progress;

typedef struct cv_job {
    g1_config cfg;
    int l0, l1;                 /* converted layers [l0, l1) */
    int with_embedding;         /* 0: --no-embedding (file 0 neither read nor written) */
    int blocks[G1_NUM_QMAT];    /* scale row blocks of each matrix kind, from the files */
    cv_file *files;             /* in file order: 0 (unless --no-embedding), 1, then the layers' files */
    int n_files;
    uint64_t total_bytes;
    volatile sig_atomic_t *interrupted;
} cv_job;

/* Release name of a layer file's item j (0..11), and the item it maps to. */
const char *cv_item_name(int j);

/* List CKPT_DIR, check it against the config (missing, extra files), scan
 * every needed file's pickle and check the arrays' dtypes and shapes. */
g1_status cv_plan(const char *dir, const g1_config *cfg, int l0, int l1, int with_embedding, cv_job *job);
void cv_job_free(cv_job *job);

/* Stream every planned file into the writer (one expert at a time). */
g1_status cv_copy(const cv_job *job, g1_ckpt_writer *wr, cv_progress *p);
/* Re-read `h5path` and compare every tensor with the release files, bit for bit. */
g1_status cv_verify(const cv_job *job, const char *h5path, cv_progress *p);

/* ---- pieces: what is read and written at once (convert_copy.c) ---- */
typedef struct cv_bufs {
    int8_t *w;      /* one matrix (one expert) */
    uint16_t *s16;  /* its bf16 scales */
    float *f;       /* float32: scales, a vector, the router or an embedding slab */
} cv_bufs;
g1_status cv_bufs_alloc(const g1_config *cfg, const int blocks[G1_NUM_QMAT], cv_bufs *b);
void cv_bufs_free(cv_bufs *b);
/* Pieces of a file: embedding slabs, experts, or 1. */
int cv_piece_count(const cv_job *job, const cv_file *f);
/* Read piece k of f from fd into b (bf16 scales converted into b->f);
 * *bytes: the source bytes it covers. */
g1_status cv_read_piece(const cv_job *job, const cv_file *f, int fd, int k, cv_bufs *b, uint64_t *bytes);

/* ---- shared helpers (convert_io.c) ---- */
/* Read exactly n bytes at off of fd (file name for messages). */
g1_status cv_pread(int fd, const char *path, uint64_t off, void *buf, size_t n);
g1_status cv_open(const char *path, int *fd);
/* bf16 bit patterns to float32, exactly. */
void cv_bf16_to_f32(const uint16_t *in, float *out, size_t n);
/* Bytes of the largest int8 matrix (one expert). */
size_t cv_max_matrix_bytes(const g1_config *cfg);
/* Rows of the embedding read at a time. */
int64_t cv_embed_slab_rows(const g1_config *cfg);

void cv_progress_start(cv_progress *p, const char *phase, uint64_t total, int files, volatile sig_atomic_t *intr);
/* Count bytes; fails (G1_ERR_IO "interrupted") once the user pressed Ctrl-C. */
g1_status cv_progress_add(cv_progress *p, uint64_t bytes);
void cv_progress_file_done(cv_progress *p);
void cv_progress_end(cv_progress *p);
double cv_now(void);

#endif
