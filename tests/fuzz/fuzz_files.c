/* libFuzzer target: the files the programs read back besides requests and
 * models, which a user may have edited, truncated or mixed up:
 *   byte 0 % 4 == 0: a --config JSON of hyper-parameters (g1_config_from_json);
 *                 1: a plan from grok1-plan --out (g1_plan_read_json);
 *                 2: an OUT.partial being resumed (g1_resume_scan);
 *                 3: an OUT.meta.json against this run's settings
 *                    (g1_meta_check), then its input record against a fixed
 *                    input (g1_input_check): (byte 0 >> 2) % 4 = k < 3 is
 *                    shard k of 3, 3 the whole input.
 * The rest is the file. Beyond "no crash, no leak" it checks what the
 * callers rely on: a valid config has sizes whose products fit; a plan
 * read is one grok1-run can use (cuts cover the layers, every stage has a
 * layer, ep divides the experts, each rank's total is its parts) and reads
 * back the same once written again; a resume scan keeps exactly the
 * complete lines, one id each, accepts a file of complete results, and a
 * refused one leaves the file as it was; a meta file is accepted exactly
 * when it holds this run's settings, and the record this run would write
 * for the input passes; every refusal has a message. Also built without
 * libFuzzer by replay.c: the seed corpus is a unit test. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_json.h"
#include "plan.h"
#include "resume.h"

#define FUZZ_NAME "fuzz_files"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(const char *what)
{
    CHECK(g1_last_error()[0], "%s refused without a message", what);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static void check_plan(const g1_plan *p)
{
    const g1_config *c = &p->cfg;
    CHECK(g1_config_validate(c) == G1_OK, "a plan for an invalid model: %s", g1_last_error());
    CHECK(p->stages >= 1 && p->stages <= c->num_layers, "%d stages for %d layers", p->stages, c->num_layers);
    CHECK(p->ep >= 1 && c->num_experts % p->ep == 0, "ep %d for %d experts", p->ep, c->num_experts);
    CHECK(p->cut[0] == 0 && p->cut[p->stages] == c->num_layers, "cuts from %d to %d", p->cut[0],
          p->cut[p->stages]);
    for (int s = 0; s < p->stages; s++)
        CHECK(p->cut[s] < p->cut[s + 1], "stage %d has no layer", s);
    CHECK(p->slots >= 1 && p->context >= 1 && p->context <= c->max_seq_len && p->max_batch_tokens >= 1,
          "slots %d, context %d, max_batch_tokens %d", p->slots, p->context, p->max_batch_tokens);
    CHECK(p->kv_bytes == 2 || p->kv_bytes == 4, "kv_bytes %d", p->kv_bytes);
    CHECK(p->mem_per_rank >= 0, "mem_per_rank %g", p->mem_per_rank);
    for (int r = 0; r < p->stages * p->ep; r++) {
        const g1_plan_mem *m = &p->mem[r];
        CHECK(m->weights >= 0 && m->kv_cache >= 0 && m->buffers >= 0, "rank %d: negative bytes", r);
        CHECK(m->total - (m->weights + m->kv_cache + m->buffers) <= 2 &&
                  m->weights + m->kv_cache + m->buffers - m->total <= 2,
              "rank %d: total is not its parts", r);
    }
    for (int e = 0; e < p->ep; e++) {
        int first, count;
        g1_plan_experts(p, e, &first, &count);
        CHECK(count >= 1 && first == e * count && first + count <= c->num_experts, "slot %d: experts %d+%d", e,
              first, count);
    }
}

/* the complete lines of a resumed .partial: n bytes up to and with the last
 * newline, and how many lines that is */
static size_t complete_lines(const uint8_t *p, size_t n, size_t *lines)
{
    size_t keep = 0;
    *lines = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\n') {
            keep = i + 1;
            ++*lines;
        }
    return keep;
}

/* the ids of the complete lines when each is a JSON object with an "id"
 * (what a resume keeps), else NULL */
static json_t *results(const uint8_t *p, size_t n)
{
    json_t *ids = json_array();
    size_t start = 0;
    for (size_t i = 0; ids && i < n; i++) {
        if (p[i] != '\n')
            continue;
        json_t *o = json_loadb((const char *)p + start, i + 1 - start, 0, NULL);
        json_t *id = json_object_get(o, "id");
        if (json_is_object(o) && id)
            json_array_append(ids, id);
        else {
            json_decref(ids);
            ids = NULL;
        }
        json_decref(o);
        start = i + 1;
    }
    return ids;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (long long)st.st_size;
}

/* this run's settings as grok1-run records them: the tiny synthetic model
 * scoring, as a whole or as shard k of 3 (the seeds hold the files such
 * runs wrote for the fixed input below) */
static json_t *this_run(int k, int shards)
{
    static const char base[] =
        "{\"format\": \"grok1-run-meta\", \"mode\": \"score\", \"version\": 1,"
        " \"model\": {\"attn_logit_cap\": 30.0, \"attn_output_multiplier\": 0.25, \"bos_id\": 1,"
        " \"emb_size\": 64, \"embedding_multiplier\": 78.383671769061692, \"eos_id\": 2, \"ffn_size\": 96,"
        " \"key_size\": 16, \"max_seq_len\": 256, \"num_experts\": 8, \"num_kv_heads\": 2, \"num_layers\": 4,"
        " \"num_q_heads\": 4, \"num_selected_experts\": 2, \"output_multiplier\": 0.57735026918962573,"
        " \"pad_id\": 0, \"rms_eps\": 1.0000000000000001e-5, \"rope_base\": 10000.0, \"vocab_size\": 512},"
        " \"settings\": {\"backend\": \"cpu\", \"max_new_tokens\": 100, \"seed\": 42, \"temperature\": 0.0,"
        " \"top_k\": 0, \"top_logprobs\": 0, \"top_p\": 1.0, \"truncate\": \"none\"},"
        " \"source\": {\"seed\": 0, \"synthetic\": \"tiny\"}}";
    json_t *m = json_loads(base, 0, NULL);
    if (m && shards > 1) {
        char s[16];
        snprintf(s, sizeof s, "%d/%d", k, shards);
        json_object_set_new(json_object_get(m, "settings"), "shard", json_string(s));
    }
    return m;
}

static char dir[64], path[96], path2[96], input[96];

static void cleanup(void)
{
    unlink(path);
    unlink(path2);
    unlink(input);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_files.XXXXXX");
        CHECK(mkdtemp(dir), "cannot make a folder in /tmp");
        atexit(cleanup);
        snprintf(path, sizeof path, "%s/file", dir);
        snprintf(path2, sizeof path2, "%s/again", dir);
        snprintf(input, sizeof input, "%s/input.jsonl", dir);
        /* the fixed input a meta file's record is checked against: requests 0..4, a blank line */
        static const char in[] = "{\"id\": 0, \"prompt_ids\": [1, 2]}\n{\"id\": 1, \"prompt_ids\": [3]}\n\n"
                                 "{\"id\": 2, \"prompt_ids\": [4, 5]}\n{\"id\": 3, \"prompt_ids\": [6]}\n"
                                 "{\"id\": 4, \"prompt_ids\": [7, 8, 9]}\n";
        write_file(input, in, sizeof in - 1);
    }
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    write_file(path, p, n);
    g1_clear_error();
    switch (sel % 4) {
    case 0: {
        g1_config c;
        if (g1_config_from_json(path, &c) == G1_OK) {
            if (g1_config_validate(&c) != G1_OK)
                check_refusal("an invalid config");
            else /* what the engine's sizes rely on, in 64 bits */
                CHECK(c.emb_size > 0 && (long long)c.num_q_heads * c.key_size == c.emb_size &&
                          c.num_q_heads % c.num_kv_heads == 0 && (long long)c.emb_size * c.ffn_size <= INT_MAX &&
                          c.num_selected_experts <= c.num_experts && c.vocab_size > 0,
                      "a config with impossible sizes passed");
        } else {
            check_refusal("a config");
        }
        break;
    }
    case 1: {
        g1_plan pl, back;
        if (g1_plan_read_json(path, &pl) == G1_OK) {
            check_plan(&pl);
            /* what it writes again reads back the same */
            CHECK(g1_plan_write_json(&pl, path2) == G1_OK, "cannot write the plan again: %s", g1_last_error());
            CHECK(g1_plan_read_json(path2, &back) == G1_OK, "a plan written again is refused: %s", g1_last_error());
            CHECK(back.stages == pl.stages && back.ep == pl.ep && back.slots == pl.slots &&
                      back.context == pl.context && back.max_batch_tokens == pl.max_batch_tokens &&
                      back.kv_bytes == pl.kv_bytes &&
                      !memcmp(back.cut, pl.cut, (size_t)(pl.stages + 1) * sizeof *pl.cut),
                  "a plan written again reads back otherwise");
            g1_plan_free(&back);
            g1_plan_free(&pl);
        } else {
            check_refusal("a plan");
        }
        break;
    }
    case 2: {
        json_t *ids = NULL, *want = results(p, n);
        size_t lines, keep = complete_lines(p, n, &lines);
        if (g1_resume_scan(path, &ids) == G1_OK) {
            CHECK(want, "a line that is not a result was accepted");
            CHECK(json_is_array(ids) && json_array_size(ids) == lines, "%zu ids for %zu complete lines",
                  json_array_size(ids), lines);
            CHECK(json_equal(ids, want), "the ids are not those of the lines");
            CHECK(file_size(path) == (long long)keep, "kept %lld bytes, expected %zu", file_size(path), keep);
        } else {
            CHECK(!want, "complete results refused: %s", g1_last_error());
            check_refusal("a partial output");
            CHECK(!ids, "ids returned with a refusal");
            CHECK(file_size(path) == (long long)n, "a refused resume changed the file: %lld bytes of %zu",
                  file_size(path), n);
        }
        json_decref(want);
        json_decref(ids);
        break;
    }
    case 3: {
        int k = (int)((sel >> 2) % 4), shards = k == 3 ? 1 : 3;
        if (k == 3)
            k = 0;
        json_t *mine = this_run(k, shards), *old_input = NULL;
        CHECK(mine, "out of memory");
        /* the same settings, whatever the input record: must be accepted */
        json_t *file = json_loadb((const char *)p, n, 0, NULL);
        json_object_del(file, "input");
        int same = json_is_object(file) && json_equal(file, mine);
        json_decref(file);
        if (g1_meta_check(path, mine, &old_input) == G1_OK) {
            CHECK(same, "other settings accepted");
            /* the record a run of this input writes (the seeds) must pass */
            json_t *fresh = NULL;
            CHECK((shards > 1 ? g1_shard_record(input, k, shards, -1, &fresh) : g1_input_record(input, &fresh)) ==
                      G1_OK,
                  "%s", g1_last_error());
            g1_status st = g1_input_check(input, old_input, path, k, shards);
            CHECK(st == G1_OK || !json_equal(old_input, fresh), "the input's own record refused: %s",
                  g1_last_error());
            if (st != G1_OK)
                check_refusal("an input record");
            json_decref(fresh);
        } else {
            CHECK(!same, "the same settings refused: %s", g1_last_error());
            check_refusal("a meta file");
            CHECK(!old_input, "an input record returned with a refusal");
        }
        json_decref(old_input);
        json_decref(mine);
        break;
    }
    }
    return 0;
}
