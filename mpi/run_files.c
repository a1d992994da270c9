/* grok1-run's files (run_files.h): the input, OUT with its .partial,
 * .meta.json and .lock, the logits dump and its writer; made, checked and
 * continued by --resume, and completed by renames. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "durable.h"
#include "progress.h"
#include "requests.h"
#include "resume.h"
#include "run_files.h"
#include "status.h"
#include "trace.h"

#if G1_HAVE_HDF5
/* The dump's sink (ctx: the files): rows go to the writer's thread
 * (dump_writer.h), which makes every HDF5 call of the dump while the run
 * goes on. */
static g1_status dump_write(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits,
                            const int *tokens, const char *id_json)
{
    files *f = ctx;
    return g1_dump_writer_write(f->dw, k, n_rows_total, row0, nrows, logits, tokens, id_json);
}

static int dump_has(void *ctx, int64_t k, int n_rows_total, const int *tokens, const char *id_json)
{
    files *f = ctx;
    /* HDF5 on this thread: only once the writer's is idle */
    if (g1_dump_writer_drain(f->dw) != G1_OK)
        return G1_DUMP_ABSENT;
    return g1_logits_file_has(f->logits, k, n_rows_total, tokens, id_json);
}

static void dump_out(void *ctx, int64_t k)
{
    files *f = ctx;
    g1_dump_writer_result_out(f->dw, k);
}

static int dump_ready(void *ctx, int64_t k, int wait)
{
    files *f = ctx;
    return g1_dump_writer_ready(f->dw, k, wait);
}

/* the resume's look (kept_look) writes nothing */
static g1_status no_write(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits,
                          const int *tokens, const char *id_json)
{
    (void)ctx, (void)n_rows_total, (void)row0, (void)nrows, (void)logits, (void)tokens, (void)id_json;
    return G1_FAIL(G1_ERR_INTERNAL, "the check of a resume wrote the logits of request %lld", (long long)k);
}

/* A resume's look at the dump before anything is renamed: every kept
 * result's dataset, with its rows, tokens and id, and (check) its values
 * against its checksum where the prune would read them; the first that is
 * not there (or not that request's) noted, and the first damaged. The
 * requests found whole are listed for the prune (known), which then need
 * not open their datasets again. */
typedef struct kept_look {
    g1_logits_file *f;
    int check;
    long missing;
    int nomem; /* a look failed for want of memory (its message recorded): the run fails, the dump kept as it is */
    int64_t first_k;
    int first_rows, first_why;
    char damaged[1024]; /* the first damaged one's message ("": none) */
    int64_t read_back;
    double secs; /* in g1_logits_file_look */
    int64_t *known;
    size_t n_known, cap;
    int known_lost; /* the list could not be kept whole (no memory, or not ascending) */
} kept_look;

static int kept_has(void *ctx, int64_t k, int n_rows_total, const int *tokens, const char *id_json)
{
    kept_look *kl = ctx;
    int rb = 0;
    double t0 = g1_trace_now();
    int has = kl->nomem ? G1_DUMP_NOMEM
                        : g1_logits_file_look(kl->f, k, n_rows_total, tokens, id_json, kl->check && !kl->damaged[0], &rb);
    kl->secs += g1_trace_now() - t0;
    kl->read_back += rb;
    if (has == G1_DUMP_NOMEM) {
        kl->nomem = 1;
        return G1_DUMP_THERE;
    }
    if (has == G1_DUMP_DAMAGED) {
        snprintf(kl->damaged, sizeof kl->damaged, "%s", g1_last_error());
    } else if (has != G1_DUMP_THERE) {
        if (!kl->missing++) {
            kl->first_k = k;
            kl->first_rows = n_rows_total;
            kl->first_why = has;
        }
    } else if (!kl->known_lost) {
        if (kl->n_known == kl->cap) {
            size_t cap = kl->cap ? 2 * kl->cap : 1024;
            int64_t *v = realloc(kl->known, cap * sizeof *v);
            if (v) {
                kl->known = v;
                kl->cap = cap;
            }
        }
        if (kl->n_known == kl->cap || (kl->n_known && kl->known[kl->n_known - 1] >= k))
            kl->known_lost = 1; /* the prune opens every one, as without the list */
        else
            kl->known[kl->n_known++] = k;
    }
    return G1_DUMP_THERE;
}
#endif

void files_dump_sink(files *f, g1_logits_sink *sink, const g1_logits_sink **dump)
{
#if G1_HAVE_HDF5
    *sink = (g1_logits_sink){.write = dump_write, .has = dump_has, .out = dump_out, .ready = dump_ready, .ctx = f};
    *dump = f->logits ? sink : NULL;
#else
    (void)f, (void)sink;
    *dump = NULL;
#endif
}

/* The input, or stdin for "-"; a directory is refused by name (Linux
 * opens one for reading, and only the first read fails). */
g1_status files_open_path(const char *path, FILE **in)
{
    if (!strcmp(path, "-")) {
        *in = stdin;
        return G1_OK;
    }
    struct stat sb;
    if (!(*in = fopen(path, "r")))
        return G1_FAIL(G1_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
    if (fstat(fileno(*in), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(*in);
        *in = NULL;
        return G1_FAIL(G1_ERR_IO, "cannot read input %s: %s", path, strerror(EISDIR));
    }
    return G1_OK;
}

g1_status files_open_input(const cli *c, files *f)
{
    return files_open_path(c->input, &f->in);
}

/* What made the output: checked by --resume (resume.h). Layout and
 * performance options are left out: they do not change results. */
static json_t *run_meta(const cli *c, const g1_config *cfg, const g1_engine_opts *eo, const char *ckpt_fp,
                        const char *tok_fp)
{
    json_t *model = json_object();
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *v = (const char *)cfg + p->offset;
        json_object_set_new(model, p->name, p->type == G1_PARAM_INT ? json_integer(*(const int *)(const void *)v)
                                                                    : json_real(*(const double *)(const void *)v));
    }
    json_t *source = json_object();
    if (c->synthetic) {
        json_object_set_new(source, "synthetic", json_string(c->synthetic));
        json_object_set_new(source, "seed", json_integer((json_int_t)c->seed));
    } else {
        /* the contents (g1_ckpt_fingerprint): the same for a checkpoint and
         * its parts, another for another model of the same shape */
        json_object_set_new(source, "checkpoint_fnv1a64", json_string(ckpt_fp));
    }
    json_t *settings = json_object();
    json_object_set_new(settings, "max_new_tokens", json_integer(c->max_new_tokens));
    json_object_set_new(settings, "temperature", json_real(c->sample.temperature));
    json_object_set_new(settings, "top_p", json_real(c->sample.top_p));
    json_object_set_new(settings, "top_k", json_integer(c->sample.top_k));
    json_object_set_new(settings, "seed", json_integer((json_int_t)c->sample.seed));
    json_object_set_new(settings, "top_logprobs", json_integer(c->top_logprobs));
    json_object_set_new(settings, "truncate", json_string(c->truncate_left ? "left" : "none"));
    /* only when it bounds the model's context: a run without it records none */
    if (c->max_context && c->max_context < cfg->max_seq_len)
        json_object_set_new(settings, "max_context", json_integer(c->max_context));
    /* a resume continues the dump only where the first run made one */
    if (c->dump_logits)
        json_object_set_new(settings, "dump_logits", json_string(c->dump_logits));
    /* and the file it is, wherever the run was started from: a resume
     * from another folder, where the name is another file, is refused
     * (g1_meta_check); a merge finds the dump by it */
    if (c->dump_logits && c->dump_path)
        json_object_set_new(settings, "dump_logits_path", json_string(c->dump_path));
    if (c->dump_logits && c->dump_path && c->dump_from_output)
        json_object_set_new(settings, "dump_logits_from_output", json_string(c->dump_from_output));
    /* the backends agree only within a tolerance (docs/CUDA.md) */
    json_object_set_new(settings, "backend", json_string(eo->backend == G1_BACKEND_CUDA ? "cuda" : "cpu"));
    /* only when bf16: outputs made before the option resume as they were */
    if (eo->kv_cache == G1_KV_BF16)
        json_object_set_new(settings, "kv_cache", json_string("bf16"));
    if (eo->backend == G1_BACKEND_CUDA)
        json_object_set_new(settings, "cuda_gemm", json_string(eo->cuda_gemm == G1_CUDA_GEMM_F32      ? "f32"
                                                               : eo->cuda_gemm == G1_CUDA_GEMM_BF16X2 ? "bf16x2"
                                                                                                      : "bf16"));
    /* only when sharded: the output of one shard is no other run's output;
     * grok1-merge joins the N of them */
    if (c->shards > 1)
        json_object_set_new(settings, "shard", json_sprintf("%d/%d", c->shard, c->shards));
    /* the contents of the file loaded (g1_tok_fingerprint): another of the
     * same size tokenizes text otherwise */
    if (c->tokenizer)
        json_object_set_new(settings, "tokenizer_fnv1a64", json_string(tok_fp));
    return json_pack("{s:s, s:i, s:s, s:o, s:o, s:o}", "format", "grok1-run-meta", "version", 1, "mode",
                     g1_run_mode_name(c->mode), "model", model, "source", source, "settings", settings);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ---- the room a logits dump needs ---- */

/* About the bytes a logits dump of `rows` rows in `requests` datasets of
 * `vocab` columns takes: the float32 logits, each row's token id, and
 * HDF5's objects (about 400 bytes a dataset measured; 1 KiB counted). */
double files_dump_bytes(int64_t rows, int64_t requests, int vocab)
{
    return (double)rows * (4.0 * vocab + 4.0) + 1024.0 * (double)requests + 65536.0;
}

/* The bytes free to this user on the file system of `path`'s folder (its
 * name into dir); -1 when statvfs cannot tell. */
double files_room_for(const char *path, char *dir, size_t n)
{
    g1_dir_of(path, dir, n);
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return -1;
    return (double)sv.f_bavail * (double)sv.f_frsize;
}

/* The bytes DUMP.partial holds (0: none); the room it holds reserved past
 * its end (g1_h5_reserve) is added to *room when that is known (>= 0). */
double files_partial_dump_held(const char *dump, double *room)
{
    char partial[4200];
    snprintf(partial, sizeof partial, "%s.partial", dump);
    struct stat sb;
    if (stat(partial, &sb) != 0)
        return 0;
    double held = (double)sb.st_size;
    if (*room >= 0 && (double)sb.st_blocks * 512.0 > held)
        *room += (double)sb.st_blocks * 512.0 - held;
    return held;
}

#if G1_HAVE_HDF5
/* --resume with --dump-logits and `kept` results in OUT.partial: continue
 * the dump, its datasets after the kept results' removed (g1_logits_file_
 * prune). A dump that cannot be continued (unreadable, or metadata a job
 * killed mid-flush left inconsistent) is set aside as DUMP.partial.damaged
 * and the run starts over, every request again (the results come out the
 * same); with the input on stdin (which cannot be read twice) it is refused. */
static g1_status continue_dump(const cli *c, const g1_config *cfg, files *f, size_t kept)
{
    /* the input line of the last kept result: this shard's kept-th request */
    int64_t nth = c->shards > 1 ? (int64_t)(kept - 1) * c->shards + c->shard + 1 : (int64_t)kept;
    int64_t k_last = g1_request_line(c->input, nth), found = 0;
    char why[1536], aside[4096];
    g1_status st = g1_logits_file_resume(c->dump_logits, cfg->vocab_size, &f->logits);
    if (st != G1_OK)
        snprintf(why, sizeof why, "%s", g1_last_error());
    /* another run's (checked before anything was renamed when the input is
     * a file; here for stdin) */
    const char *run = st == G1_OK && f->logits ? g1_logits_file_run(f->logits) : NULL;
    if (run && strcmp(run, f->dump_run))
        return G1_FAIL(G1_ERR_ARG, "cannot resume: the logits dump %s was written by another run (its record: %s; "
                                   "this run's: %s): give this run's dump, or start afresh without --resume",
                       c->dump_logits, run, f->dump_run);
    if (st == G1_OK && f->logits && f->dump_unfit[0]) {
        st = G1_ERR_FORMAT;
        snprintf(why, sizeof why, "the logits dump %s.partial cannot be continued: %s", c->dump_logits, f->dump_unfit);
    } else if (st == G1_OK && f->logits && k_last >= 0) {
        int64_t checked = 0;
        double t0 = g1_trace_now();
        st = g1_logits_file_prune(f->logits, k_last, !c->skip_checksums, f->dump_known, f->n_dump_known, &found,
                                  &checked);
        /* with those the look before read back */
        double dt = g1_trace_now() - t0 + f->dump_look_s;
        checked += f->dump_read_back;
        if (st == G1_OK && found != (int64_t)kept)
            st = G1_FAIL(G1_ERR_FORMAT, "it holds the logits of %lld of the %zu results kept in %s",
                         (long long)found, kept, f->partial);
        if (st == G1_OK && c->verbose)
            fprintf(stderr, "grok1-run: logits dump: the %zu results kept have their logits there; %lld read back "
                            "against their checksums%s (%.2f s)\n",
                    kept, (long long)checked,
                    c->skip_checksums ? " (--skip-checksums)"
                    : checked < found ? ", the others were on disk (synced) before the interruption"
                                      : "",
                    dt);
        if (st != G1_OK)
            snprintf(why, sizeof why, "the logits dump %s.partial cannot be continued: %s", c->dump_logits,
                     g1_last_error());
    }
    if (st == G1_OK || st == G1_ERR_IO)
        return st;
    /* no memory to check it says nothing of the dump: the run fails, the dump left for a resume */
    if (st == G1_ERR_NOMEM) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", g1_last_error());
        return G1_FAIL(st, "cannot resume: the logits dump %s.partial could not be checked: %s (it is left as it is)",
                       c->dump_logits, msg);
    }
    if (k_last < 0)
        return G1_FAIL(st, "%s; with the input on stdin or a pipe the run cannot start over by itself: move the dump "
                           "away (and the output beside it) to start afresh",
                       why);
    /* the results first (on the disk), then the dump set aside: a kill
     * between the two leaves no results and a dump a resume sets aside in
     * turn; the other order left results without their dump, which every
     * later resume refuses */
    if (fflush(f->out) != 0 || ftruncate(fileno(f->out), 0) != 0 || fsync(fileno(f->out)) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot empty %s to start over: %s", f->partial, strerror(errno));
    json_array_clear(f->done_ids);
    G1_TRY(g1_logits_file_set_aside(c->dump_logits, f->logits, aside, sizeof aside));
    f->logits = NULL;
    fprintf(stderr, "grok1-run: warning: %s; it is kept as %s, and the %zu results already in %s are computed "
                    "again with the rest (they come out the same)\n",
            why, aside, kept, f->partial);
    return G1_OK;
}
#endif

/* The file at `path` recorded in old[group] by its size (WHAT_bytes), as
 * before its fingerprint (WHAT_fnv1a64): meta[group] records it so too. */
static void legacy_size(const char *path, json_t *old, json_t *meta, const char *group, const char *what)
{
    char bytes[64], fp[64];
    snprintf(bytes, sizeof bytes, "%s_bytes", what);
    snprintf(fp, sizeof fp, "%s_fnv1a64", what);
    json_t *rec = json_object_get(old, group), *mine = json_object_get(meta, group);
    if (!path || !json_object_get(rec, bytes) || json_object_get(rec, fp) || !json_object_get(mine, fp))
        return;
    struct stat sb;
    json_object_del(mine, fp);
    json_object_set_new(mine, bytes, json_integer(stat(path, &sb) == 0 ? (json_int_t)sb.st_size : -1));
}

/* An output recorded before the checkpoint's or the tokenizer's fingerprint
 * (their sizes only): resumed by the same rule, and kept so. */
static void legacy_records(const cli *c, const char *meta_path, json_t *meta)
{
    json_t *old = json_load_file(meta_path, 0, NULL);
    legacy_size(c->checkpoint, old, meta, "source", "checkpoint");
    legacy_size(c->tokenizer, old, meta, "settings", "tokenizer");
    json_decref(old);
}

#if G1_HAVE_HDF5
/* Rank 0, the dump made or continued and the input a file: a warning when
 * the rows of this run's requests (a pass over the input, as --check-input
 * makes it), less what a continued dump holds already, will not fit in the
 * free space of the dump's file system; with --verbose the estimate. */
static g1_status dump_room(const cli *c, const g1_config *cfg, const g1_driver_opts *check, files *f)
{
    g1_logits_sink any = {0}; /* as with the dump: every position goes through the model */
    g1_driver_opts o = *check;
    o.dump = &any;
    o.done_ids = NULL;
    g1_input_stats s;
    G1_TRY(g1_driver_check_input(cfg, &o, f->in, NULL, "", 0, &s));
    if (fseek(f->in, 0, SEEK_SET) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot read the input %s again: %s", c->input, strerror(errno));
    char dir[4096], a[32], b[32], h[32];
    double room = files_room_for(c->dump_logits, dir, sizeof dir);
    double held = files_partial_dump_held(c->dump_logits, &room);
    double need = files_dump_bytes(s.prompt_tokens, s.requests - s.refused, cfg->vocab_size) - held;
    if (c->verbose)
        fprintf(stderr, "grok1-run: logits dump: %lld rows of %d float32 logits, about %s (%s written); %s has %s "
                        "free\n",
                (long long)s.prompt_tokens, cfg->vocab_size, g1_bytes_text(a, sizeof a, need + held),
                g1_bytes_text(h, sizeof h, held), dir,
                room >= 0 ? g1_bytes_text(b, sizeof b, room) : "an unknown amount");
    if (room >= 0 && need > room)
        fprintf(stderr, "grok1-run: warning: the logits dump %s needs about %s more (%lld rows of %d float32 logits "
                        "in all), but %s has %s free: the run will stop when the disk is full, keeping the results "
                        "and logits written (--resume continues once there is room)\n",
                c->dump_logits, g1_bytes_text(a, sizeof a, need), (long long)s.prompt_tokens, cfg->vocab_size, dir,
                g1_bytes_text(b, sizeof b, room));
    return G1_OK;
}
#endif

g1_status files_open_outputs(const cli *c, const g1_config *cfg, const g1_engine_opts *eo,
                             const char *ckpt_fp, const char *tok_fp, const g1_driver_opts *check, files *f)
{
#if G1_HAVE_HDF5
    if (c->dump_logits) {
        json_t *m = run_meta(c, cfg, eo, ckpt_fp, tok_fp);
        f->dump_run = m ? g1_dump_run_record(m) : NULL;
        json_decref(m);
        if (!f->dump_run)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        /* one writer per dump, as per output: two runs naming one dump (two
         * shards, say) would write over each other's datasets */
        G1_TRY(g1_lock_output(c->dump_logits, "grok1-run", "run again with --resume", &f->dump_lock));
    }
#endif
    if (!strcmp(c->output, "-")) {
        f->out = stdout;
    } else if (g1_path_is_stream(c->output)) {
        if (!(f->out = fopen(c->output, "w")))
            return G1_FAIL(G1_ERR_IO, "cannot open %s for writing: %s", c->output, strerror(errno));
    } else {
        G1_TRY(g1_lock_output(c->output, "grok1-run", "run again with --resume", &f->lock));
        size_t n = strlen(c->output) + sizeof ".partial";
        f->partial = malloc(n);
        char *meta_path = g1_meta_path(c->output);
        json_t *meta = run_meta(c, cfg, eo, ckpt_fp, tok_fp);
        if (!f->partial || !meta_path || !meta) {
            free(meta_path);
            json_decref(meta);
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        }
        snprintf(f->partial, n, "%s.partial", c->output);
        g1_status st = G1_OK;
        /* which requests the results answer: the input's bytes (a regular
         * file; stdin or a pipe cannot be read twice), or a shard's own
         * requests */
        int input_file = g1_input_rereadable(c->input);
        if (input_file) {
            json_t *rec = NULL;
            st = c->shards > 1 ? g1_shard_record(c->input, c->shard, c->shards, -1, &rec)
                               : g1_input_record(c->input, &rec);
            if (st == G1_OK) {
                /* requests appended during the run are not read: the
                 * record could not vouch for them (a --resume does them) */
                json_t *ext = json_object_get(rec, c->shards > 1 ? "requests" : "bytes");
                f->input_bounded = json_is_integer(ext);
                f->input_bytes = c->shards > 1 ? -1 : (long long)json_integer_value(ext);
                f->input_requests = c->shards > 1 ? (int64_t)json_integer_value(ext) : -1;
                json_object_set_new(meta, "input", rec);
            }
        }
        /* an empty OUT.partial keeps no result: a run killed after making
         * it, before (or while) writing its meta file, left it so; the
         * resume starts afresh, as the run did, instead of refusing for the
         * missing meta file (a requeued job would fail there) */
        struct stat pb;
        int kept_any = stat(f->partial, &pb) == 0 && pb.st_size > 0;
        int resuming = c->resume && (kept_any || exists(c->output));
        if (st == G1_OK && resuming) {
            /* check before touching anything; a finished OUT becomes the
             * partial file it was, and is renamed back at the end */
            json_t *old_input = NULL;
            legacy_records(c, meta_path, meta);
#if G1_HAVE_HDF5
            /* a dump made afresh by this resume records the run as its meta
             * file does (a legacy size record kept) */
            if (c->dump_logits) {
                char *r = g1_dump_run_record(meta);
                if (r) {
                    free(f->dump_run);
                    f->dump_run = r;
                }
            }
#endif
            st = g1_meta_check(meta_path, meta, &old_input);
            if (st == G1_OK && old_input && input_file)
                st = g1_input_check(c->input, old_input, meta_path, c->shard, c->shards);
            /* an input read once (stdin, a pipe) cannot be checked: the
             * record of the file the output was made from stays, so a later
             * resume from a file is still checked against it */
            if (st == G1_OK && !input_file) {
                if (old_input)
                    json_object_set(meta, "input", old_input);
                fprintf(stderr, "grok1-run: warning: the input is read once (stdin or a pipe), so it cannot be "
                                "checked against the requests the kept results answer%s%s%s: only their ids are "
                                "matched; give the same requests in the same order\n",
                        old_input ? " (" : "", old_input ? meta_path : "", old_input ? " records them" : "");
            }
            json_decref(old_input);
            /* the kept results, read where they are (a finished OUT keeps
             * its name until nothing can refuse the resume) */
            int finished = !exists(f->partial);
            if (st == G1_OK)
                st = g1_resume_scan(finished ? c->output : f->partial, &f->done_ids);
#if G1_HAVE_HDF5
            int dump_there = st == G1_OK && c->dump_logits && json_array_size(f->done_ids) > 0
                                 ? g1_logits_file_present(c->dump_logits)
                                 : 1;
            if (dump_there < 0)
                st = G1_ERR_NOMEM; /* its message recorded */
            else if (!dump_there)
                st = G1_FAIL(G1_ERR_ARG, "cannot resume: the %zu results already in %s have no logits dump to "
                                         "continue (neither %s.partial nor %s exists): start afresh without --resume",
                             json_array_size(f->done_ids), finished ? c->output : f->partial, c->dump_logits,
                             c->dump_logits);
#endif
            /* the kept results against the input, as the run checks them
             * (ids; the request after them parsed), before anything is
             * renamed or rewritten; a dump's datasets are checked as it is
             * continued, below */
            if (st == G1_OK && input_file) {
                g1_driver_opts o = *check;
                o.done_ids = f->done_ids;
                o.dump = NULL;
#if G1_HAVE_HDF5
                /* and each one's logits in the dump (there, with its rows),
                 * read-only: the dump of another run is refused here, not
                 * after OUT was renamed; a dump that cannot be read at all
                 * is continue_dump's to set aside */
                kept_look kl = {.check = !c->skip_checksums};
                g1_logits_sink kept_sink;
                char why[600], dump_partial[PATH_MAX + 16];
                snprintf(dump_partial, sizeof dump_partial, "%s.partial", c->dump_logits ? c->dump_logits : "");
                /* a finished DUMP (no DUMP.partial) was whole on the disk
                 * before it took its name: no kill left it short */
                int dump_finished = c->dump_logits && !exists(dump_partial);
                g1_status ro = c->dump_logits && json_array_size(f->done_ids) > 0
                                   ? g1_logits_file_open_read(c->dump_logits, cfg->vocab_size, &kl.f)
                                   : G1_ERR_ARG;
                if (ro == G1_OK) {
                    kept_sink = (g1_logits_sink){.write = no_write, .has = kept_has, .ctx = &kl};
                    o.dump = &kept_sink;
                    if (g1_dump_run_differs(g1_logits_file_run(kl.f), meta, "this run", why, sizeof why))
                        st = G1_FAIL(G1_ERR_ARG, "cannot resume: the logits dump %s was written by another run "
                                                 "(%s): give this run's dump, or start afresh without --resume",
                                     c->dump_logits, why);
                } else if (c->dump_logits && json_array_size(f->done_ids) > 0 && dump_finished) {
                    snprintf(why, sizeof why, "%s", g1_last_error());
                    st = G1_FAIL(G1_ERR_ARG, "cannot resume: %s is a finished file, but %s; it is left as it is "
                                             "(not set aside as a dump a kill damaged): give this run's dump, or "
                                             "start afresh without --resume",
                                 c->dump_logits, why);
                }
#endif
                if (st == G1_OK)
                    st = g1_driver_nothing_left(cfg, &o, f->in, &f->nothing_left);
#if G1_HAVE_HDF5
                if (st == G1_OK && kl.nomem) {
                    snprintf(why, sizeof why, "%s", g1_last_error()); /* the look's message */
                    st = G1_FAIL(G1_ERR_NOMEM, "cannot resume: the logits dump %s could not be checked: %s (it is "
                                               "left as it is)",
                                 c->dump_logits, why);
                }
                /* every kept result looked up, there with its rows, tokens and id */
                f->dump_kept_checked = st == G1_OK && ro == G1_OK && !kl.missing && !kl.damaged[0];
                g1_logits_file_abort(kl.f);
                if (f->dump_kept_checked && !kl.known_lost) {
                    f->dump_known = kl.known;
                    f->n_dump_known = kl.n_known;
                    f->dump_read_back = kl.read_back;
                    f->dump_look_s = kl.secs;
                } else {
                    free(kl.known);
                }
                if (!kl.missing && kl.damaged[0])
                    snprintf(f->dump_unfit, sizeof f->dump_unfit, "%s", kl.damaged);
                /* not there, or of other rows: continue_dump starts over */
                if (kl.missing)
                    snprintf(f->dump_unfit, sizeof f->dump_unfit,
                             "%ld of the results kept have no logits there (the first: %s logits/%lld of %d rows, "
                             "one per token)",
                             kl.missing,
                             kl.first_why == G1_DUMP_OTHER_TOKENS ? "other tokens than its request's in"
                             : kl.first_why == G1_DUMP_OTHER_ID   ? "another request's id on"
                                                                  : "no",
                             (long long)kl.first_k, kl.first_rows);
                /* a finished dump without the kept results' logits is
                 * another output's (a relative --dump-logits resolved in
                 * another folder, or one named by two outputs): setting it
                 * aside took it from the output it belongs to */
                if (st == G1_OK && kl.missing && dump_finished)
                    st = G1_FAIL(G1_ERR_ARG, "cannot resume: %s is a finished logits dump that is not the one of the "
                                             "results kept in %s: %s; it is left as it is (a relative --dump-logits "
                                             "names a file in the current folder): give this run's dump, or start "
                                             "afresh without --resume",
                                 c->dump_logits, finished ? c->output : f->partial, f->dump_unfit);
#endif
                f->left_known = st == G1_OK;
                if (st == G1_OK && fseek(f->in, 0, SEEK_SET) != 0)
                    st = G1_FAIL(G1_ERR_IO, "cannot read the input %s again: %s", c->input, strerror(errno));
            }
            /* the record now describes this input (requests may have been
             * appended): written once nothing above can refuse the resume */
            if (st == G1_OK)
                st = g1_meta_write(meta_path, meta);
            f->meta_ok = st == G1_OK;
            if (st == G1_OK && finished && rename(c->output, f->partial) != 0)
                st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", c->output, f->partial, strerror(errno));
            if (st == G1_OK && !(f->out = g1_fopen_own(f->partial, "a")))
                st = G1_FAIL(G1_ERR_IO, "cannot append to %s: %s", f->partial,
                             errno == ELOOP ? "it is a symbolic link, not the file an interrupted run left"
                                            : strerror(errno));
        } else if (st == G1_OK) {
            /* OUT and its meta file always describe one run, so an OUT of
             * an earlier run goes before the meta file describes this one
             * (a merge or a reader would take it for this run's) */
            /* made anew: a symbolic link found at that name is replaced,
             * not written through (and then renamed to OUT) */
            if (!(f->out = g1_fopen_fresh(f->partial)))
                st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", f->partial, strerror(errno));
            if (st == G1_OK && exists(c->output)) {
                if (unlink(c->output) != 0) {
                    st = G1_FAIL(G1_ERR_IO, "cannot remove %s, an earlier run's output that this run replaces: %s",
                                 c->output, strerror(errno));
                    fclose(f->out); /* nothing of this run stays: OUT and its meta file are as they were */
                    f->out = NULL;
                    unlink(f->partial);
                } else
                    fprintf(stderr, "grok1-run: removed %s, an earlier run's output: this run replaces it "
                                    "(--resume continues one instead)\n", c->output);
            }
            f->fresh = st == G1_OK;
            if (st == G1_OK)
                st = g1_meta_write(meta_path, meta);
            f->meta_ok = st == G1_OK;
        }
        free(meta_path);
        json_decref(meta);
        G1_TRY(st);
    }
#if G1_HAVE_HDF5
    if (c->dump_logits) {
        /* resuming the output: continue the dump an earlier run left
         * (DUMP.partial, or a finished DUMP); otherwise a new one */
        size_t kept = f->done_ids ? json_array_size(f->done_ids) : 0;
        /* with no result kept the dump holds nothing a resume needs: made
         * afresh, so one killed before its first result (perhaps before its
         * first flush: unreadable) is no obstacle */
        if (kept) {
            G1_TRY(continue_dump(c, cfg, f, kept));
            kept = json_array_size(f->done_ids); /* 0: the run starts over */
        }
        if (!f->logits && kept) /* checked above, before anything was renamed */
            return G1_FAIL(G1_ERR_INTERNAL, "the logits dump %s went away", c->dump_logits);
        if (!f->logits) {
            G1_TRY(g1_logits_file_create(c->dump_logits, cfg->vocab_size, f->dump_run, &f->logits));
            f->dump_made = 1;
            /* as OUT: a finished dump of an earlier run goes when this one
             * starts (also a --resume with nothing to resume), not when it
             * ends, or it would pass for this run's (its meta file names it)
             * while this one is unfinished or failed */
            struct stat sb;
            if ((!c->resume || f->fresh) && stat(c->dump_logits, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
                if (unlink(c->dump_logits) != 0)
                    return G1_FAIL(G1_ERR_IO, "cannot remove %s, an earlier run's logits dump that this run "
                                              "replaces: %s", c->dump_logits, strerror(errno));
                fprintf(stderr, "grok1-run: removed %s, an earlier run's logits dump: this run replaces it "
                                "(--resume continues one instead)\n", c->dump_logits);
            }
        }
        G1_TRY(g1_dump_writer_new(f->logits, cfg->vocab_size, (uint64_t)c->dump_buffer, &f->dw));
        if (g1_input_rereadable(c->input))
            G1_TRY(dump_room(c, cfg, check, f));
    }
#else
    (void)cfg;
#endif
    return G1_OK;
}


/* Complete lines of a file (-1 when it cannot be read). */
static long long complete_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : n;
}

/* A run that stops before the end (a failed request, a signal) narrows the
 * meta file's record of the input to the requests its kept results answer
 * (the bytes up to the last of them; with --shard K/N the first K + (kept -
 * 1) N + 1 requests, the last kept one's included), so a resume accepts an
 * input edited after them: the request that failed, fixed. A run killed
 * outright keeps the record of the whole input, and a resume then refuses
 * any edit (of this shard's requests, for a shard). Best effort: on any
 * trouble the record stays as it was (stricter, never wrong). */
static void narrow_input_record(const cli *c, const files *f)
{
    if (!f->meta_ok || !f->partial || !g1_input_rereadable(c->input))
        return;
    long long kept = complete_lines(f->partial);
    int sharded = c->shards > 1;
    int64_t N = sharded ? c->shards : 1, K = sharded ? c->shard : 0;
    /* the requests the record is to cover; its extent: that count for a
     * shard's record, their bytes for a whole-input one */
    int64_t upto = kept < 0 ? -1 : kept == 0 ? 0 : K + (kept - 1) * N + 1;
    int64_t extent = sharded || upto < 0 ? upto : g1_request_end(c->input, upto);
    char *meta_path = g1_meta_path(c->output);
    json_t *meta = meta_path ? json_load_file(meta_path, 0, NULL) : NULL, *rec = NULL;
    json_t *old = json_object_get(meta, "input");
    json_t *ob = json_object_get(old, sharded ? "requests" : "bytes");
    /* only ever narrower, and only when the file still holds what the run
     * started from (a request edited during the run keeps the old record,
     * which a resume then refuses) */
    if (extent >= 0 && json_is_integer(ob) && extent <= json_integer_value(ob) &&
        g1_input_check(c->input, old, meta_path, c->shard, c->shards) == G1_OK &&
        (sharded ? g1_shard_record(c->input, c->shard, c->shards, upto, &rec)
                 : g1_input_record_prefix(c->input, extent, &rec)) == G1_OK) {
        json_object_set_new(meta, "input", rec);
        g1_status st = g1_meta_write(meta_path, meta);
        (void)st; /* best effort: the old record stays on failure */
    }
    json_decref(meta);
    free(meta_path);
}

/* A fresh run that failed or was stopped before its first result (a GPU
 * too small, a signal during the load, a bad first request) takes back
 * what it made, so no empty OUT.partial suggests a run to resume: a later
 * --resume finds nothing and starts afresh, as this run did (an OUT of an
 * earlier run was removed at its start). Not after a resume. 1 when
 * removed. */
static int take_back(const cli *c, files *f)
{
    struct stat sb;
    if (!f->fresh || stat(f->partial, &sb) != 0 || sb.st_size != 0 || exists(c->output))
        return 0;
    char *meta_path = g1_meta_path(c->output);
    if (!meta_path)
        return 0;
    int gone = unlink(f->partial) == 0;
    if (gone)
        unlink(meta_path);
    free(meta_path);
    if (gone && f->dump_made) {
        char dump[PATH_MAX + 16];
        snprintf(dump, sizeof dump, "%s.partial", c->dump_logits);
        unlink(dump);
    }
    return gone;
}

/* Before OUT gets its final name: the input still holds the requests the
 * run started from (its record in OUT.meta.json), or the results may answer
 * a mix of two versions of a file edited in place during the run. Requests
 * appended meanwhile pass (the record covers what was there). */
static g1_status input_unchanged(const cli *c, const files *f)
{
    if (!f->meta_ok || !g1_input_rereadable(c->input))
        return G1_OK;
    char *meta_path = g1_meta_path(c->output);
    json_t *meta = meta_path ? json_load_file(meta_path, 0, NULL) : NULL;
    json_t *rec = json_object_get(meta, "input");
    g1_status st = rec ? g1_input_check(c->input, rec, meta_path, c->shard, c->shards) : G1_OK;
    if (st != G1_OK)
        st = G1_FAIL(G1_ERR_ARG, "the input %s changed while the run read it (it no longer holds the requests "
                                 "%s recorded when the run started): the results, left in %s%s%s%s, may answer "
                                 "either version, so they get no final name; start afresh (move them and the meta "
                                 "file away)",
                     c->input, meta_path ? meta_path : "the meta file", f->partial,
                     c->dump_logits ? " (their logits in " : "", c->dump_logits ? c->dump_logits : "",
                     c->dump_logits ? ".partial)" : "");
    json_decref(meta);
    free(meta_path);
    return st;
}

/* Success, with the input as the run found it: complete the logits file,
 * then give OUT its final name, so OUT exists only when everything is
 * complete. Failure (ok == 0): leave OUT.partial for inspection
 * (take_back: not an empty one of a fresh run), create no final name. */
g1_status files_close(const cli *c, files *f, int ok)
{
    g1_status st = G1_OK;
    if (f->in && f->in != stdin)
        fclose(f->in);
    /* the input first: when it changed under the run, neither OUT nor the
     * dump gets its final name */
    if (ok && f->out && f->out != stdout && f->partial && (st = input_unchanged(c, f)) != G1_OK)
        ok = 0;
#if G1_HAVE_HDF5
    /* the writer's thread ends first: what it had queued is written */
    g1_status wst = g1_dump_writer_free(f->dw);
    f->dw = NULL;
    if (wst != G1_OK && ok) {
        st = wst;
        ok = 0;
    }
    if (f->logits) {
        if (ok)
            st = g1_logits_file_finish(f->logits);
        else
            g1_logits_file_abort(f->logits);
        f->logits = NULL;
        ok = ok && st == G1_OK;
    }
#endif
    if (f->out && f->out != stdout && !f->partial) { /* a device or a pipe */
        if (fclose(f->out) != 0 && ok)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", c->output, strerror(errno));
    } else if (f->out && f->out != stdout) {
        if (fclose(f->out) != 0 && ok)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", f->partial, strerror(errno));
        else if (ok)
            st = g1_rename_durable(f->partial, c->output);
        if (!ok && !take_back(c, f)) {
            /* its checks must not replace this run's message */
            char why[2048];
            snprintf(why, sizeof why, "%s", st != G1_OK ? g1_last_error() : "");
            narrow_input_record(c, f);
            if (st != G1_OK)
                st = G1_FAIL(st, "%s", why);
        }
    } else if (f->out == stdout && fflush(stdout) != 0 && ok) {
        st = G1_FAIL(G1_ERR_IO, "writing stdout failed: %s", strerror(errno));
    }
    g1_unlock_output(&f->lock);
#if G1_HAVE_HDF5
    g1_unlock_output(&f->dump_lock);
#endif
    free(f->partial);
    json_decref(f->done_ids);
    f->done_ids = NULL;
#if G1_HAVE_HDF5
    free(f->dump_run);
    f->dump_run = NULL;
    free(f->dump_known);
    f->dump_known = NULL;
#endif
    return st;
}
