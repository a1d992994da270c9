/* HDF5 checkpoint format v1: reader and streaming writer, and the logits
 * dump file. Built only with the hdf5 feature (library g1_h5); nothing in
 * the engine core includes this. See docs/CHECKPOINT.md for the layout. */
#ifndef G1_CKPT_H
#define G1_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "status.h"
#include "weights.h"

/* ---- reader ---- */
typedef struct g1_ckpt g1_ckpt;

/* Open and check format name, version and every hyper-parameter attribute.
 * Attributes may be any integer / float width; strings fixed or variable. */
g1_status g1_ckpt_open(const char *path, g1_ckpt **out);
const g1_config *g1_ckpt_config(const g1_ckpt *ck);
/* Allocate `w` and read layers [l0,l1), experts [e0,e1) of each, and the
 * embedding (rounded to bf16) and final norm when with_embedding. Checks the
 * shape and dtype of every dataset it reads; reads nothing else. */
g1_status g1_ckpt_load(g1_ckpt *ck, int l0, int l1, int e0, int e1, int with_embedding, g1_weights *w);
/* The same into a `w` that is zeroed or holds an earlier load, whose memory
 * is reused when the shapes match (g1_weights_realloc). On failure w is
 * freed (zeroed). */
g1_status g1_ckpt_load_reuse(g1_ckpt *ck, int l0, int l1, int e0, int e1, int with_embedding, g1_weights *w);
/* A fingerprint of the model's contents from what rank 0 owns anyway:
 * FNV-1a 64 over the final norm and 64 embedding rows spread over the
 * vocabulary (float32 as stored), as 16 hex digits. The same for a one-file
 * checkpoint and its parts (grok1-link); another seed, release or fine-tune
 * that changes the embedding or final norm gives another. Not counted in
 * g1_ckpt_bytes_read. */
g1_status g1_ckpt_fingerprint(g1_ckpt *ck, char hex[17]);
/* Payload bytes read from the file so far (weights, scales, norms...). */
uint64_t g1_ckpt_bytes_read(const g1_ckpt *ck);
/* Checksums (docs/CHECKPOINT.md): a dataset that has them (our writers put
 * a CRC-32 on every dataset, one per expert on the moe ones) is compared as
 * it is read, and a load fails with G1_ERR_FORMAT naming the dataset (and
 * expert) that does not match. Datasets without checksums (files written
 * by other tools or before checksums) are read unchecked. on = 0 skips the
 * comparison (the attributes are not even read). bytes_checked: of
 * g1_ckpt_bytes_read, those compared. */
void g1_ckpt_set_checksums(g1_ckpt *ck, int on);
/* G1_ERR_FORMAT when the hyper-parameters do not match the checksum the
 * file records for them (root attribute params_crc32), unless checksums
 * are off; a file without one passes. g1_ckpt_load checks it too. */
g1_status g1_ckpt_check_header(const g1_ckpt *ck);
uint64_t g1_ckpt_bytes_checked(const g1_ckpt *ck);
/* A checkpoint joined by grok1-link: G1_ERR_FORMAT (naming the part file)
 * unless the norm of layer i (i = num_layers: the final norm) is what the
 * linker fingerprinted, as a load checks it; G1_OK for a one-file
 * checkpoint. grok1-checksum's check of the parts. */
g1_status g1_ckpt_check_part(g1_ckpt *ck, int i);
void g1_ckpt_close(g1_ckpt *ck);

/* ---- a checkpoint in parts (grok1-link; docs/CHECKPOINT.md) ---- */
/* "6-7, 9": the layers l < L with v[l] == who, in buf (n bytes; "..." at
 * the end when they do not fit). */
void g1_layer_ranges(const int *v, int L, int who, char *buf, size_t n);

/* Write `out`: the root attributes and HDF5 external links to the layers,
 * embedding and final norm of the parts (files written with a layer range:
 * grok1-convert --layers, grok1-mkckpt --part), so the reader sees one
 * checkpoint. Checks that every part is a checkpoint of the same
 * hyper-parameters, that each layer is in exactly one part, and that the
 * parts' final norms and embeddings (in sampled rows) are the same; the
 * embedding and final norm are linked from the part with layer 0, or when
 * it has no embedding (made with --no-embedding) the first that has. The
 * norms' fingerprints are recorded for the reader to check. Link
 * targets are relative to out's folder when a part is in it or below, else
 * absolute; every link is opened before `out` gets its name (written as
 * out.tmp.<pid>, then renamed). An existing `out` is refused unless
 * `replace`. `summary` (may be NULL) says which part gives what. */
g1_status g1_ckpt_link(const char *out, int n_parts, const char *const *parts, int replace, char *summary,
                       size_t n_summary);

/* ---- writer: streams tensor by tensor (one expert at a time) ---- */
typedef struct g1_ckpt_writer g1_ckpt_writer;

/* Create `path` (written under a temporary name until g1_ckpt_writer_finish)
 * with the root attributes and all datasets of layers [l0,l1) (normally all),
 * the final norm, and the embedding unless !with_embedding (a part of a
 * checkpoint in parts that leaves it to another); `blocks` gives the scale
 * row blocks of each matrix kind. */
g1_status g1_ckpt_writer_create(const char *path, const g1_config *cfg, const int blocks[G1_NUM_QMAT],
                                int l0, int l1, int with_embedding, g1_ckpt_writer **out);
g1_status g1_ckpt_write_embedding_rows(g1_ckpt_writer *wr, int64_t row0, int64_t nrows, const float *rows);
g1_status g1_ckpt_write_final_norm(g1_ckpt_writer *wr, const float *v);
g1_status g1_ckpt_write_norm(g1_ckpt_writer *wr, int layer, g1_norm_id n, const float *v);
g1_status g1_ckpt_write_router(g1_ckpt_writer *wr, int layer, const float *v);
/* expert ignored for attention matrices */
g1_status g1_ckpt_write_qmat(g1_ckpt_writer *wr, int layer, g1_qmat_id id, int expert, const int8_t *w,
                             const float *scale);
/* Check that every tensor was written, fsync, close and rename to the final
 * name. Frees `wr` whether it succeeds or not (on failure the temporary file
 * is removed): never call abort after finish. */
g1_status g1_ckpt_writer_finish(g1_ckpt_writer *wr);
/* Close and remove the temporary file (after a failure). */
void g1_ckpt_writer_abort(g1_ckpt_writer *wr);

/* ---- logits dump: dataset /logits/<k> float32 (n, V) per request ---- */
typedef struct g1_logits_file g1_logits_file;
/* The attributes of a request's dataset: its token ids (int32, one per
 * row: row i holds the logits after token i) and its id (a string: the
 * JSON text of the request's "id", as the result line gives it). */
#define G1_DUMP_TOKENS_ATTR "tokens"
#define G1_DUMP_ID_ATTR "id"
/* A dataset of an unfinished dump (scalar int64): every dataset
 * logits/<k> with k <= it was on disk (fsync'ed) when it was written, so a
 * resume need not read those back against their checksums. */
#define G1_DUMP_SYNCED "synced_through"
/* The most bytes of logits rows grok1-run's dump writer holds on rank 0
 * (mpi/dump_writer.h), or one step's rows when they are more; counted by
 * the planner (g1_plan_request.dump_logits). */
#define G1_DUMP_WRITER_BYTES ((uint64_t)1 << 30)
/* A new dump, written as PATH.partial (an old one is replaced); `run`
 * (NULL: none) is kept as its root attribute "run": what grok1-run records
 * of the run (docs/RUN.md), compared by a resume and by grok1-merge. */
g1_status g1_logits_file_create(const char *path, int vocab_size, const char *run, g1_logits_file **out);
/* The attribute "run" of a dump opened by g1_logits_file_resume or
 * g1_logits_file_open_read (NULL: it has none). */
const char *g1_logits_file_run(const g1_logits_file *f);
/* Continue PATH.partial (or a finished PATH, renamed back to PATH.partial)
 * that an interrupted run left; *out NULL when neither exists. Datasets
 * already there stay; a request's dataset is rewritten when it runs. */
g1_status g1_logits_file_resume(const char *path, int vocab_size, g1_logits_file **out);
/* Before a resume writes: keep the datasets of requests 0..k_last (the
 * kept results: each must open with V columns, and with `check` match its
 * checksum when it has one, unless the dump's G1_DUMP_SYNCED says it
 * was on disk; *n_kept says how many open, *n_checked how many were read
 * against their checksums) and delete every later one. A job killed without warning can leave
 * datasets of unfinished requests whose metadata reached the disk and whose
 * storage did not (HDF5 flushes are not atomic); made afresh, they cannot
 * reach into space the continued file allocates again. known (n_known,
 * ascending; NULL, 0: none): requests whose datasets the caller found
 * there with their rows, and read against their checksums where this
 * would (g1_logits_file_look with the same `check`, before): counted as
 * kept without being opened again (a million kept results cost a million
 * object headers read from the file). Errors: the dump's metadata is
 * damaged (the caller starts the dump afresh). */
g1_status g1_logits_file_prune(g1_logits_file *f, int64_t k_last, int check, const int64_t *known, size_t n_known,
                               int64_t *n_kept, int64_t *n_checked);
/* PATH.partial (or a finished PATH when there is none) read-only, for
 * g1_logits_file_has and g1_logits_file_look only (a resume's check of the
 * kept results before it changes anything); close with g1_logits_file_abort. Errors: unreadable,
 * or not a dump of vocab_size. */
g1_status g1_logits_file_open_read(const char *path, int vocab_size, g1_logits_file **out);
/* Move PATH.partial aside to PATH.partial.damaged (.damaged.2, .3, ...
 * when that exists: one set aside earlier stays) and free `f` (NULL: no
 * file open): a dump that cannot be continued, kept for inspection. */
g1_status g1_logits_file_set_aside(const char *path, g1_logits_file *f, char *aside, size_t n);
/* Rows [row0, row0+nrows) of request k's logits; the dataset (n, V) is
 * created on first use with n = n_rows_total, and with the attributes
 * G1_DUMP_TOKENS_ATTR (tokens: n ids) and G1_DUMP_ID_ATTR (id_json), each
 * left out when NULL. With its last rows (row0 +
 * nrows == n_rows_total) the dataset gets its checksum (G1_H5_CRC_ATTR,
 * of the rows as they came in order, else read back) and the file is
 * flushed (unless g1_logits_file_defer_flush). */
g1_status g1_logits_file_write(g1_logits_file *f, int64_t k, int n_rows_total, int row0, int nrows,
                               const float *logits, const int *tokens, const char *id_json);
/* on: g1_logits_file_write does not flush after a request's last rows;
 * the caller flushes with g1_logits_file_flush, after several requests at
 * once. Each H5Fflush costs a scan of HDF5's whole metadata cache (in
 * HDF5 1.10.7 and later), which grows with the datasets written, to tens
 * of thousands of entries: one per request made a dump of 100k short
 * requests spend most of its time there (docs/PERFORMANCE.md). */
void g1_logits_file_defer_flush(g1_logits_file *f, int on);
/* Flush what g1_logits_file_write left in HDF5's caches to the file. */
g1_status g1_logits_file_flush(g1_logits_file *f);
/* The flushes of finished requests' datasets so far (a test's count). */
int64_t g1_logits_file_flushes(const g1_logits_file *f);
/* Request k's result line is written (after its logits were flushed):
 * every GROK1_DUMP_SYNC_S seconds (default 30) the file is fsync'ed on a
 * thread of its own, and when that returns G1_DUMP_SYNCED is set to
 * the last k out when it began. A finished dump has no such dataset. */
void g1_logits_file_result_out(g1_logits_file *f, int64_t k);
/* 1 when a dump to continue exists: PATH.partial or a finished PATH; 0
 * when neither does; -1 when it could not be looked for (out of memory,
 * the message recorded) */
int g1_logits_file_present(const char *path);
/* What g1_logits_file_has finds of a request's dataset. */
enum {
    G1_DUMP_THERE = 1,         /* there, with its rows, and of this request (as far as it records) */
    G1_DUMP_ABSENT = 0,        /* not there, or of other rows */
    G1_DUMP_OTHER_TOKENS = -1, /* its tokens attribute is not `tokens` (or is malformed) */
    G1_DUMP_OTHER_ID = -2,     /* its id attribute is not id_json (or not a string) */
    G1_DUMP_DAMAGED = -3,      /* g1_logits_file_look: its values do not match its checksum, or cannot be read */
    G1_DUMP_NOMEM = -4,        /* not known: out of memory to look (the message recorded) */
};
/* Request k's dataset: there with n_rows_total rows, and, where it has the
 * attributes (a dump written before them has none), of these tokens (NULL:
 * not compared) and this id (NULL: not compared). */
int g1_logits_file_has(g1_logits_file *f, int64_t k, int n_rows_total, const int *tokens, const char *id_json);
/* g1_logits_file_has, and with `check` a dataset found there read against
 * its checksum as g1_logits_file_prune reads it (when it has one and the
 * dump's G1_DUMP_SYNCED does not vouch for it; *read_back says whether it
 * was read): G1_DUMP_DAMAGED when it does not match or cannot be read, the
 * message recorded (g1_last_error), as the prune's. */
int g1_logits_file_look(g1_logits_file *f, int64_t k, int n_rows_total, const int *tokens, const char *id_json,
                        int check, int *read_back);
/* Close and rename; frees `f` either way (like g1_ckpt_writer_finish). */
g1_status g1_logits_file_finish(g1_logits_file *f);
/* Close, keeping PATH.partial (an interrupted or failed run: for --resume
 * and inspection, like OUT.partial); frees `f`. */
void g1_logits_file_abort(g1_logits_file *f);
/* grok1-merge: open the finished dump at path read-only and list it. It must
 * have the attributes of a dump (format "grok1-logits", vocab_size: into
 * *vocab_size) and hold only datasets logits/<k> named as grok1-run names
 * them, each float32 of shape (n >= 1, vocab_size). *ks: the k, ascending
 * (malloc'd; NULL when *n is 0); *run: its attribute "run" (malloc'd; NULL
 * when it has none); *ids (ids may be NULL: not wanted): each one's id
 * attribute in the order of *ks (malloc'd, each malloc'd or NULL when that
 * dataset has none). A tokens attribute must hold n ids below vocab_size,
 * an id attribute must be a string. Errors name the file and the dataset. */
g1_status g1_logits_file_list(const char *path, int *vocab_size, int64_t **ks, size_t *n, char **run, char ***ids);
/* What g1_logits_file_list_tokens gives of each dataset: its rows, and
 * whether it has a tokens attribute (a dump before them has none) and its
 * hash (g1_tokens_fnv1a64). */
typedef struct g1_dump_tokens {
    int64_t rows;
    int has;
    uint64_t fnv1a64;
} g1_dump_tokens;
/* g1_logits_file_list, and *toks (toks may be NULL: not wanted): each
 * dataset's rows and tokens in the order of *ks (malloc'd). */
g1_status g1_logits_file_list_tokens(const char *path, int *vocab_size, int64_t **ks, size_t *n, char **run,
                                     char ***ids, g1_dump_tokens **toks);
/* FNV-1a, 64 bits, of n token ids as int32 little-endian: a dump's tokens
 * attribute against a request's ids. */
uint64_t g1_tokens_fnv1a64(const int *tokens, size_t n);
/* grok1-merge: write tmp (replaced when it exists) as a dump of vocab_size
 * holding every dataset of the n finished dumps srcs[] (their names must
 * not meet), copied as stored (H5Ocopy: no decoding), each read back and
 * compared with its checksum (a mismatch is an error naming the file and
 * the dataset); *unchecked: datasets that had none (given one computed
 * from what was copied); `run` as g1_logits_file_create's.
 * Flushed and closed, to be renamed by
 * the caller. On failure tmp is removed. */
g1_status g1_logits_file_join(const char *tmp, int vocab_size, const char *run, const char *const *srcs, int n,
                              long *unchecked);

#endif
