/* Keeping finished work: the sidecar OUT.meta.json records what made OUT
 * (mode, model, settings) so a resume with other settings is refused; and
 * resuming reads OUT.partial, keeps its complete lines (a torn last line is
 * cut off) and says which requests are done. No MPI here. */
#ifndef G1_RESUME_H
#define G1_RESUME_H

#include <jansson.h>

#include "status.h"

/* 1 and the first difference between JSON values a and b in msg ("where.key
 * is 1 in NAME_A but 2 in NAME_B", or set in one only), 0 when equal.
 * Objects are compared key by key, anything else with json_equal. */
int g1_json_differ(const char *where, json_t *a, json_t *b, const char *name_a, const char *name_b, char *msg,
                   size_t n);

/* What a logits dump records of the run that wrote it (its root attribute
 * "run", docs/RUN.md): the meta file's content without the input record
 * and without settings.shard and settings.dump_logits (with its _path and
 * _from_output), as compact JSON with
 * sorted keys (malloc'd; NULL: no memory). The shards of one input, their
 * merge and the unsharded run record the same. */
char *g1_dump_run_record(json_t *meta);
/* 0 when a dump's record (the text of its attribute "run"; NULL, from a
 * grok1-run before it existed, is accepted) is meta's; else 1 and the first
 * difference in msg, the record named "the dump's record" and meta `name`. */
int g1_dump_run_differs(const char *record, json_t *meta, const char *name, char *msg, size_t n);

/* Sidecar name for an output file: "<out>.meta.json" (malloc'd). */
char *g1_meta_path(const char *out);
/* Write `meta` (an object) to path atomically (temp + rename). */
g1_status g1_meta_write(const char *path, json_t *meta);
/* G1_ERR_ARG unless the sidecar at path has exactly `meta`'s fields and
 * values (the message names the first difference and both values), the
 * "input" record aside: that one is returned in *old_input (a new
 * reference, NULL when absent) for g1_input_check. The logits dump is
 * compared as a file when both record settings.dump_logits_path: the
 * recorded file, or the one at the recorded place relative to the output
 * (settings.dump_logits_from_output: the output's folder moved or copied
 * whole); else refused naming both (resume.c, dump_place). A sidecar
 * without that record compares settings.dump_logits, the name as given. */
g1_status g1_meta_check(const char *path, json_t *meta, json_t **old_input);

/* The requests a run read, recorded in the sidecar under "input" as
 * {"bytes": N, "fnv1a64": "16 hex digits"} (FNV-1a over the file's N
 * bytes): a resume checks that the input still begins with those bytes,
 * so results kept from OUT.partial answer the same requests, while
 * requests appended since are allowed. */
g1_status g1_input_record(const char *path, json_t **record);
/* The same record of the file's first `bytes` bytes only (what the results
 * a stopped run kept were made from). */
g1_status g1_input_record_prefix(const char *path, long long bytes, json_t **record);
/* A shard's record (--shard K/N): only its own requests, so that editing
 * another shard's request (fixing the line that stopped that shard) leaves
 * this shard's results valid. {"requests": R, "shard_fnv1a64": "16 hex
 * digits"}: the first R requests (non-blank lines) of the input are
 * covered, and the hash is FNV-1a over shard K's among them (request m,
 * 0-based, is shard m % N's), each as "m:l:" (m and its 0-based line
 * number l in decimal), the line without its newline, and a newline: all
 * a shard's results and their dump depend on. `upto`: cover the first
 * upto requests (G1_ERR_IO when the input has fewer), or all of them when
 * upto < 0. */
g1_status g1_shard_record(const char *path, int k, int n, long long upto, json_t **record);
/* The input at path against the records of all n shards (records[k] for
 * shard k), in one pass: verdict[k] is G1_SHARD_SAME when the input's
 * requests of shard k are exactly the recorded ones, G1_SHARD_APPENDED
 * when those among the first R are and more followed (a resume answers
 * them), G1_SHARD_EDITED otherwise (or for a malformed record). */
enum { G1_SHARD_SAME, G1_SHARD_APPENDED, G1_SHARD_EDITED };
g1_status g1_shard_verdicts(const char *path, int n, json_t *const *records, int *verdict);
/* G1_ERR_ARG unless the file at path still holds the requests `record`
 * describes: for a whole-input record, it begins with the recorded bytes;
 * for a shard's record (k of n), shard k's requests among the first R are
 * the recorded ones. A missing or malformed record passes (older sidecars). */
g1_status g1_input_check(const char *path, json_t *record, const char *sidecar, int k, int n);

/* Read `partial`, cut it after its last complete line, and return the ids of
 * its results in order (a new JSON array). A line that is complete but not
 * a JSON object with an "id" is an error naming the line. */
g1_status g1_resume_scan(const char *partial, json_t **done_ids);

#endif
