/* grok1-run's files: the input; OUT, written as OUT.partial beside its
 * meta file OUT.meta.json and lock OUT.lock, and renamed when complete; the
 * logits dump (--dump-logits) and its writer's thread; all of them checked
 * and continued by --resume (run_files.c; docs/RUN.md, "Files and
 * failures" and "Losing nothing"). Rank 0 alone opens them. */
#ifndef G1_RUN_FILES_H
#define G1_RUN_FILES_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"
#include "driver.h"
#include "engine.h"
#include "paths.h"
#include "run_cli.h"
#include "status.h"
#if G1_HAVE_HDF5
#include "ckpt.h"
#include "dump_writer.h"
#endif

typedef struct files {
    FILE *in, *out;
    char *partial; /* OUT.partial, NULL for stdout or a stream (is_stream) */
    g1_out_lock lock; /* OUT.lock, held for the run's life */
    int meta_ok;   /* OUT.meta.json describes this run (written, or checked and rewritten by a resume) */
    int fresh;     /* OUT.partial and OUT.meta.json were made by this run, not a resume (an earlier OUT removed) */
    int dump_made; /* DUMP.partial was created by this run */
    json_t *done_ids; /* --resume: ids of the results already in OUT.partial */
    int left_known;   /* a resume from a regular file checked the kept results against the input before
                       * changing anything: nothing_left says whether any request follows them */
    int nothing_left;
    int dump_kept_checked; /* and every kept result's logits are in the dump (g1_driver_opts) */
    /* the requests OUT.meta.json's record of the input covers, which are
     * all the run reads (g1_driver_opts) */
    int input_bounded;
    long long input_bytes;
    int64_t input_requests;
#if G1_HAVE_HDF5
    g1_logits_file *logits;
    g1_dump_writer *dw; /* writes it on a thread of its own during the run */
    char *dump_run; /* --dump-logits: what the dump records of this run (g1_dump_run_record) */
    g1_out_lock dump_lock; /* DUMP.lock, held for the run's life */
    char dump_unfit[1024]; /* a resume: why the dump's datasets do not fit the kept results ("": they do) */
    /* the kept results' requests (ascending) whose datasets the look before
     * anything was renamed found there and, where the prune would, read
     * against their checksums (dump_read_back of them, in dump_look_s
     * seconds): the prune does not open them again (NULL: it opens each) */
    int64_t *dump_known;
    size_t n_dump_known;
    int64_t dump_read_back;
    double dump_look_s;
#endif
} files;

/* The input, or stdin for "-"; a directory is refused by name (Linux
 * opens one for reading, and only the first read fails). */
g1_status files_open_path(const char *path, FILE **in);

/* --input into f->in. */
g1_status files_open_input(const cli *c, files *f);

/* OUT (.partial, .meta.json, .lock) and the dump, made afresh or, with
 * --resume, checked against this run and the input (check: the driver's
 * options, to read the input as the run will) and continued; the dump's
 * room against the free space is warned about. */
g1_status files_open_outputs(const cli *c, const g1_config *cfg, const g1_engine_opts *eo, const char *ckpt_fp,
                             const char *tok_fp, const g1_driver_opts *check, files *f);

/* The driver's logits sink for the dump (in *sink); *dump is sink when the
 * run writes one, else NULL. */
void files_dump_sink(files *f, g1_logits_sink *sink, const g1_logits_sink **dump);

/* Success (ok): the dump completed, then OUT given its final name, the
 * input checked unchanged first. Failure: OUT.partial left for --resume
 * (an empty one of a fresh run taken back), its input record narrowed to
 * the kept results. The locks are let go either way. */
g1_status files_close(const cli *c, files *f, int ok);

/* About the bytes a logits dump of `rows` rows in `requests` datasets of
 * `vocab` columns takes. */
double files_dump_bytes(int64_t rows, int64_t requests, int vocab);

/* The bytes free to this user on the file system of `path`'s folder (its
 * name into dir); -1 when statvfs cannot tell. */
double files_room_for(const char *path, char *dir, size_t n);

/* The bytes DUMP.partial holds (0: none); the room it holds reserved past
 * its end is added to *room when that is known (>= 0). */
double files_partial_dump_held(const char *dump, double *room);

#endif
