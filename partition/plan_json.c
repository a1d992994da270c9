/* A plan as JSON (jansson): written by grok1-plan, read by grok1-run. The
 * reader checks everything the runtime relies on (format, version, the
 * model, cuts contiguous and covering, one rank entry per stage and slot)
 * and names the field it refuses. Format: docs/PLAN.md. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "durable.h"
#include "plan.h"

/* ---- write ---- */

static json_t *jbytes(double b) { return json_integer((json_int_t)llround(b)); }

static json_t *model_json(const g1_config *c)
{
    json_t *m = json_object();
    for (int i = 0; m && i < g1_num_params; i++) {
        const g1_param_desc *d = &g1_params[i];
        const char *at = (const char *)c + d->offset;
        json_object_set_new(m, d->name, d->type == G1_PARAM_INT ? json_integer(*(const int *)at)
                                                                : json_real(*(const double *)at));
    }
    return m;
}

static json_t *plan_json(const g1_plan *p)
{
    json_t *cuts = json_array(), *lps = json_array(), *ranks = json_array(), *costs = json_array();
    for (int s = 0; s <= p->stages; s++)
        json_array_append_new(cuts, json_integer(p->cut[s]));
    for (int s = 0; s < p->stages; s++) {
        json_array_append_new(lps, json_integer(p->cut[s + 1] - p->cut[s]));
        json_array_append_new(costs, jbytes(p->stage_cost[s]));
    }
    for (int r = 0; r < p->stages * p->ep; r++) {
        int s = r / p->ep, e = r % p->ep, first, count;
        g1_plan_experts(p, e, &first, &count);
        const g1_plan_mem *m = &p->mem[r];
        json_array_append_new(
            ranks, json_pack("{s:i, s:i, s:i, s:[i,i], s:[i,i], s:o, s:o, s:o, s:o, s:o}", "rank", r, "stage", s,
                             "slot", e, "layers", p->cut[s], p->cut[s + 1], "experts", first, count, "weights_bytes",
                             jbytes(m->weights), "kv_cache_bytes", jbytes(m->kv_cache), "buffer_bytes",
                             jbytes(m->buffers), "message_bytes", jbytes(m->messages), "total_bytes",
                             jbytes(m->total)));
    }
    return json_pack("{s:s, s:i, s:o, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:i, s:i, s:i, s:i}", "format",
                     G1_PLAN_FORMAT, "format_version", G1_PLAN_VERSION, "model", model_json(&p->cfg), "stages",
                     p->stages, "ep", p->ep, "cuts", cuts, "layers_per_stage", lps, "ranks", ranks, "stage_cost",
                     costs, "layer_cost", jbytes(p->layer_cost), "rank0_cost", jbytes(p->rank0_cost), "slots",
                     p->slots, "context", p->context, "max_batch_tokens", p->max_batch_tokens, "kv_bytes",
                     p->kv_bytes ? p->kv_bytes : 4);
}

/* Every byte figure fits JSON's integers (a plan for millions of slots of a
 * long context does not: llround would write a negative number). */
static int figures_fit(const g1_plan *p)
{
    const double lim = 9.2e18; /* below 2^63 */
    int ok = p->mem_per_rank < lim && p->layer_cost < lim && p->rank0_cost < lim && p->dump_buffer < lim;
    for (int s = 0; s < p->stages; s++)
        ok = ok && p->stage_cost[s] < lim;
    for (int r = 0; r < p->stages * p->ep; r++)
        ok = ok && p->mem[r].total < lim && p->mem[r].weights < lim && p->mem[r].kv_cache < lim &&
             p->mem[r].buffers < lim && p->mem[r].messages < lim;
    return ok;
}

g1_status g1_plan_write_json(const g1_plan *p, const char *path)
{
    if (!figures_fit(p))
        return G1_FAIL(G1_ERR_ARG, "the plan's memory figures pass 2^63 bytes (--slots x --context too large): "
                                   "no plan written");
    json_t *root = plan_json(p);
    if (!root)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory writing the plan");
    json_object_set_new(root, "mem_per_rank", jbytes(p->mem_per_rank));
    json_object_set_new(root, "micro_batches", json_integer(p->micro_batches));
    /* what the memory was counted for (informational; read back if there) */
    json_object_set_new(root, "backend", json_string(p->cuda_sms > 0 ? "cuda" : "cpu"));
    if (p->cuda_sms > 0)
        json_object_set_new(root, "gpu_sms", json_integer(p->cuda_sms));
    if (p->threads > 0) /* the cpu backend's per-thread buffers were counted for this many */
        json_object_set_new(root, "threads", json_integer(p->threads));
    if (p->dump_logits) {
        json_object_set_new(root, "dump_logits", json_true());
        json_object_set_new(root, "dump_buffer", jbytes(p->dump_buffer));
    }
    size_t flags = JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17);
    g1_status st = G1_OK;
    if (!strcmp(path, "-")) {
        if (json_dumpf(root, stdout, flags) || fputc('\n', stdout) == EOF || fflush(stdout))
            st = G1_FAIL(G1_ERR_IO, "cannot write the plan to stdout");
    } else if (g1_path_is_stream(path)) {
        /* written directly, as grok1-run writes such an output */
        FILE *f = fopen(path, "w");
        int bad = !f || json_dumpf(root, f, flags) || fputc('\n', f) == EOF;
        if (f && fclose(f))
            bad = 1;
        if (bad)
            st = G1_FAIL(G1_ERR_IO, "cannot write the plan to %s (%s)", path, strerror(errno));
    } else {
        /* under a temporary name, renamed when complete; through a symbolic
         * link to the file it names, which stays a link */
        char *real = NULL;
        if (g1_path_through_link(path, &real) != G1_OK) { /* a dangling one: the file it would make, as grok1-run */
            char why[1024];
            snprintf(why, sizeof why, "%s", g1_last_error());
            json_decref(root);
            return G1_FAIL(G1_ERR_IO, "cannot write the plan: %s", why);
        }
        const char *final = real ? real : path;
        size_t n = strlen(final) + 16;
        char *tmp = malloc(n);
        if (!tmp) {
            free(real);
            json_decref(root);
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        }
        snprintf(tmp, n, "%s.partial", final);
        FILE *f = g1_fopen_fresh(tmp); /* made anew: never written through a link found at the name */
        int bad = !f || json_dumpf(root, f, flags) || fputc('\n', f) == EOF;
        if (f && fclose(f))
            bad = 1;
        if (bad) {
            st = G1_FAIL(G1_ERR_IO, "cannot write the plan to %s (%s)", path, strerror(errno));
            remove(tmp);
        } else if ((st = g1_rename_durable(tmp, final)) != G1_OK) { /* on the disk before it has its name */
            remove(tmp);
        }
        free(tmp);
        free(real);
    }
    json_decref(root);
    return st;
}

/* ---- read ---- */

typedef struct rd {
    const char *path;
    json_t *root;
} rd;

#define BAD(...) G1_FAIL(G1_ERR_FORMAT, __VA_ARGS__)

static g1_status get_int(const rd *d, json_t *obj, const char *where, const char *key, long lo, long hi, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return BAD("plan %s: %s%s is missing", d->path, where, key);
    if (!json_is_integer(v))
        return BAD("plan %s: %s%s must be an integer", d->path, where, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return BAD("plan %s: %s%s = %" JSON_INTEGER_FORMAT " outside %ld..%ld", d->path, where, key, x, lo, hi);
    *out = (int)x;
    return G1_OK;
}

static g1_status get_bytes(const rd *d, json_t *obj, const char *where, const char *key, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return BAD("plan %s: %s%s is missing", d->path, where, key);
    if (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v)))
        return BAD("plan %s: %s%s must be a non-negative number of bytes", d->path, where, key);
    *out = json_number_value(v);
    return G1_OK;
}

static g1_status read_model(const rd *d, g1_config *c)
{
    json_t *m = json_object_get(d->root, "model");
    if (!json_is_object(m))
        return BAD("plan %s: \"model\" (the hyper-parameters) is missing or not an object", d->path);
    memset(c, 0, sizeof *c);
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *pd = &g1_params[i];
        char *at = (char *)c + pd->offset;
        json_t *v = json_object_get(m, pd->name);
        if (pd->type == G1_PARAM_INT)
            G1_TRY(get_int(d, m, "model.", pd->name, -2147483647L, 2147483647L, (int *)at));
        else if (!json_is_number(v))
            return BAD("plan %s: model.%s is %s", d->path, pd->name, v ? "not a number" : "missing");
        else
            *(double *)at = json_number_value(v);
    }
    if (g1_config_validate(c) != G1_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", g1_last_error());
        return BAD("plan %s: model: %s", d->path, msg);
    }
    return G1_OK;
}

/* [a, b] pair of integers */
static g1_status get_pair(const rd *d, json_t *obj, int r, const char *key, int want0, int want1)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(json_array_get(v, 0)) ||
        !json_is_integer(json_array_get(v, 1)))
        return BAD("plan %s: ranks[%d].%s must be a pair of integers", d->path, r, key);
    json_int_t a = json_integer_value(json_array_get(v, 0)), b = json_integer_value(json_array_get(v, 1));
    if (a != want0 || b != want1)
        return BAD("plan %s: ranks[%d].%s is [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
                   "] but the cuts and ep give [%d, %d]",
                   d->path, r, key, a, b, want0, want1);
    return G1_OK;
}

static g1_status read_body(const rd *d, g1_plan *p)
{
    json_t *root = d->root;
    if (!json_is_object(root))
        return BAD("plan %s: expected a JSON object", d->path);
    json_t *fmt = json_object_get(root, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), G1_PLAN_FORMAT))
        return BAD("plan %s: format is %s%s%s, expected \"%s\" (is it a plan from grok1-plan?)", d->path,
                   json_is_string(fmt) ? "\"" : "", json_is_string(fmt) ? json_string_value(fmt) : "missing",
                   json_is_string(fmt) ? "\"" : "", G1_PLAN_FORMAT);
    int ver;
    G1_TRY(get_int(d, root, "", "format_version", 0, 1000000, &ver));
    if (ver != G1_PLAN_VERSION)
        return BAD("plan %s: format_version %d, this build reads version %d: make the plan again with this "
                   "grok1-plan", d->path, ver, G1_PLAN_VERSION);
    G1_TRY(read_model(d, &p->cfg));
    const g1_config *c = &p->cfg;
    int L = c->num_layers;
    G1_TRY(get_int(d, root, "", "stages", 1, L, &p->stages));
    G1_TRY(get_int(d, root, "", "ep", 1, c->num_experts, &p->ep));
    if (c->num_experts % p->ep)
        return BAD("plan %s: ep = %d does not divide model.num_experts = %d", d->path, p->ep, c->num_experts);
    G1_TRY(get_int(d, root, "", "slots", 1, 2147483647L, &p->slots));
    G1_TRY(get_int(d, root, "", "context", 1, c->max_seq_len, &p->context));
    G1_TRY(get_int(d, root, "", "max_batch_tokens", 1, 2147483647L, &p->max_batch_tokens));
    p->micro_batches = p->stages; /* optional: what grok1-run takes by default */
    if (json_object_get(root, "micro_batches"))
        G1_TRY(get_int(d, root, "", "micro_batches", 1, 65536, &p->micro_batches));
    p->kv_bytes = 4; /* optional: plans written before bf16 caches counted float32 */
    if (json_object_get(root, "kv_bytes"))
        G1_TRY(get_int(d, root, "", "kv_bytes", 2, 4, &p->kv_bytes));
    if (p->kv_bytes == 3)
        return BAD("plan %s: kv_bytes = 3: 4 (float32) or 2 (bf16)", d->path);
    G1_TRY(get_bytes(d, root, "", "mem_per_rank", &p->mem_per_rank));
    if (json_object_get(root, "gpu_sms")) /* optional: memory counted for the cuda backend */
        G1_TRY(get_int(d, root, "", "gpu_sms", 1, 65536, &p->cuda_sms));
    json_t *dl = json_object_get(root, "dump_logits"); /* optional, as the memory was counted */
    if (dl && !json_is_boolean(dl))
        return BAD("plan %s: dump_logits: expected true or false", d->path);
    p->dump_logits = dl && json_is_true(dl);
    p->dump_buffer = (double)G1_DUMP_WRITER_BYTES; /* optional: plans before --dump-buffer counted 1 GiB */
    if (json_object_get(root, "dump_buffer"))
        G1_TRY(get_bytes(d, root, "", "dump_buffer", &p->dump_buffer));
    p->threads = 0; /* optional: plans written before the per-thread buffers were counted have none */
    if (json_object_get(root, "threads"))
        G1_TRY(get_int(d, root, "", "threads", 1, 1 << 20, &p->threads));
    int P = p->stages, N = P * p->ep;
    p->cut = malloc((size_t)(P + 1) * sizeof *p->cut);
    p->mem = calloc((size_t)N, sizeof *p->mem);
    p->stage_cost = calloc((size_t)P, sizeof *p->stage_cost);
    if (!p->cut || !p->mem || !p->stage_cost)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory reading plan %s", d->path);

    json_t *cuts = json_object_get(root, "cuts");
    if (!json_is_array(cuts) || json_array_size(cuts) != (size_t)P + 1)
        return BAD("plan %s: cuts must be an array of stages + 1 = %d layer indices", d->path, P + 1);
    for (int s = 0; s <= P; s++) {
        json_t *v = json_array_get(cuts, (size_t)s);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > L)
            return BAD("plan %s: cuts[%d] must be a layer index in 0..%d", d->path, s, L);
        p->cut[s] = (int)json_integer_value(v);
        if (s > 0 && p->cut[s] <= p->cut[s - 1])
            return BAD("plan %s: cuts[%d] = %d is not above cuts[%d] = %d: every stage needs at least one layer",
                       d->path, s, p->cut[s], s - 1, p->cut[s - 1]);
    }
    if (p->cut[0] != 0 || p->cut[P] != L)
        return BAD("plan %s: cuts run from %d to %d, but must cover the model's layers 0 to %d", d->path, p->cut[0],
                   p->cut[P], L);
    json_t *lps = json_object_get(root, "layers_per_stage");
    if (lps) {
        if (!json_is_array(lps) || json_array_size(lps) != (size_t)P)
            return BAD("plan %s: layers_per_stage must be an array of %d counts", d->path, P);
        for (int s = 0; s < P; s++)
            if (!json_is_integer(json_array_get(lps, (size_t)s)) ||
                json_integer_value(json_array_get(lps, (size_t)s)) != p->cut[s + 1] - p->cut[s])
                return BAD("plan %s: layers_per_stage[%d] does not match the cuts (%d layers)", d->path, s,
                           p->cut[s + 1] - p->cut[s]);
    }
    json_t *ranks = json_object_get(root, "ranks");
    if (!json_is_array(ranks) || json_array_size(ranks) != (size_t)N)
        return BAD("plan %s: ranks must be an array of stages * ep = %d entries", d->path, N);
    for (int r = 0; r < N; r++) {
        json_t *o = json_array_get(ranks, (size_t)r);
        char where[32];
        snprintf(where, sizeof where, "ranks[%d].", r);
        if (!json_is_object(o))
            return BAD("plan %s: ranks[%d] must be an object", d->path, r);
        int v, s = r / p->ep, e = r % p->ep, first, count;
        G1_TRY(get_int(d, o, where, "rank", 0, N - 1, &v));
        if (v != r)
            return BAD("plan %s: ranks[%d].rank is %d: list the ranks in order, 0..%d (ranks[i] is rank i)",
                       d->path, r, v, N - 1);
        G1_TRY(get_int(d, o, where, "stage", s, s, &v));
        G1_TRY(get_int(d, o, where, "slot", e, e, &v));
        G1_TRY(get_pair(d, o, r, "layers", p->cut[s], p->cut[s + 1]));
        g1_plan_experts(p, e, &first, &count);
        G1_TRY(get_pair(d, o, r, "experts", first, count));
        g1_plan_mem *m = &p->mem[r];
        G1_TRY(get_bytes(d, o, where, "weights_bytes", &m->weights));
        G1_TRY(get_bytes(d, o, where, "kv_cache_bytes", &m->kv_cache));
        G1_TRY(get_bytes(d, o, where, "buffer_bytes", &m->buffers));
        if (json_object_get(o, "message_bytes")) /* optional: plans before it was counted apart */
            G1_TRY(get_bytes(d, o, where, "message_bytes", &m->messages));
        G1_TRY(get_bytes(d, o, where, "total_bytes", &m->total));
        if (fabs(m->weights + m->kv_cache + m->buffers - m->total) > 2)
            return BAD("plan %s: ranks[%d].total_bytes is not weights + kv_cache + buffer bytes", d->path, r);
    }
    /* costs: informational, optional */
    json_t *sc = json_object_get(root, "stage_cost");
    if (sc && (!json_is_array(sc) || json_array_size(sc) != (size_t)P))
        return BAD("plan %s: stage_cost must be an array of %d numbers", d->path, P);
    for (int s = 0; sc && s < P; s++) {
        json_t *v = json_array_get(sc, (size_t)s);
        if (!json_is_number(v))
            return BAD("plan %s: stage_cost[%d] must be a number", d->path, s);
        p->stage_cost[s] = json_number_value(v);
    }
    if (json_object_get(root, "layer_cost"))
        G1_TRY(get_bytes(d, root, "", "layer_cost", &p->layer_cost));
    if (json_object_get(root, "rank0_cost"))
        G1_TRY(get_bytes(d, root, "", "rank0_cost", &p->rank0_cost));
    return G1_OK;
}

g1_status g1_plan_read_json(const char *path, g1_plan *out)
{
    memset(out, 0, sizeof *out);
    json_error_t err;
    /* a regular file only: opened without blocking (a FIFO would wait for a
     * writer for ever), then read as a stream */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return G1_FAIL(G1_ERR_IO, "plan %s: cannot open it (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        int e = errno;
        close(fd);
        return G1_FAIL(G1_ERR_IO, "plan %s: cannot read it (%s)", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return G1_FAIL(G1_ERR_ARG, "plan %s: not a regular file (%s): give --plan the JSON file grok1-plan --out "
                                   "wrote", path, S_ISFIFO(sb.st_mode) ? "a FIFO" : S_ISDIR(sb.st_mode) ? "a directory"
                                   : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device" : "not a file");
    }
    int fl = fcntl(fd, F_GETFL);
    FILE *f = fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) ? NULL : fdopen(fd, "r");
    if (!f) {
        close(fd);
        return G1_FAIL(G1_ERR_IO, "plan %s: cannot read it (%s)", path, strerror(errno));
    }
    rd d = {.path = path, .root = json_loadf(f, 0, &err)};
    fclose(f);
    if (!d.root)
        return BAD("plan %s: not JSON: %s (line %d)", path, err.text, err.line);
    g1_status st = read_body(&d, out);
    json_decref(d.root);
    if (st != G1_OK)
        g1_plan_free(out);
    return st;
}

g1_status g1_plan_check_model(const g1_plan *p, const g1_config *cfg)
{
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *d = &g1_params[i];
        const char *a = (const char *)&p->cfg + d->offset, *b = (const char *)cfg + d->offset;
        if (d->type == G1_PARAM_INT && *(const int *)a != *(const int *)b)
            return G1_FAIL(G1_ERR_ARG, "the plan is for another model: %s is %d in the plan but %d in this model; "
                                       "make a plan for this model with grok1-plan",
                           d->name, *(const int *)a, *(const int *)b);
        if (d->type == G1_PARAM_DOUBLE && *(const double *)a != *(const double *)b)
            return G1_FAIL(G1_ERR_ARG, "the plan is for another model: %s is %.17g in the plan but %.17g in this "
                                       "model; make a plan for this model with grok1-plan",
                           d->name, *(const double *)a, *(const double *)b);
    }
    return G1_OK;
}
