/* Event buffer and the trace-event JSON writer (jansson). */
#include "trace.h"

#include "durable.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

g1_status g1_trace_init(g1_trace *t, int cap)
{
    memset(t, 0, sizeof *t);
    t->ev = malloc((size_t)cap * sizeof *t->ev);
    if (!t->ev)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the trace (%d events)", cap);
    t->cap = cap;
    return G1_OK;
}

void g1_trace_free(g1_trace *t)
{
    if (t)
        free(t->ev);
}

double g1_trace_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void g1_trace_span(g1_trace *t, const char *cat, const char *name, double t0, double t1, int mb, int arg)
{
    if (!t || !t->ev)
        return;
    if (t->n == t->cap) {
        t->dropped++;
        return;
    }
    g1_trace_event *e = &t->ev[t->n++];
    e->t0 = t0;
    e->t1 = t1;
    e->mb = mb;
    e->arg = arg;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->cat, sizeof e->cat, "%s", cat);
}

g1_status g1_trace_write_json(const char *path, int nranks, g1_trace_event *const *ev, const int *n,
                              const double *offset, char *const *label)
{
    /* times relative to the earliest event, in microseconds */
    double t_min = 1e300;
    for (int r = 0; r < nranks; r++)
        for (int i = 0; i < n[r]; i++)
            if (ev[r][i].t0 + offset[r] < t_min)
                t_min = ev[r][i].t0 + offset[r];
    /* written beside its name and renamed when complete: a job killed while
     * writing leaves no torn trace under the final name */
    size_t tn = strlen(path) + 16;
    char *tmp = malloc(tn);
    if (!tmp)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(tmp, tn, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        g1_status st = G1_FAIL(G1_ERR_IO, "cannot create trace %s: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
    int first = 1;
    for (int r = 0; r < nranks; r++) {
        json_t *m = json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "process_name", "ph", "M", "pid", r, "tid", 0,
                              "args", "name", label[r]);
        char *s = json_dumps(m, JSON_COMPACT);
        fprintf(f, "%s%s", first ? "" : ",\n", s ? s : "{}");
        first = 0;
        free(s);
        json_decref(m);
        json_t *so = json_pack("{s:s, s:s, s:i, s:i, s:{s:i}}", "name", "process_sort_index", "ph", "M", "pid", r,
                               "tid", 0, "args", "sort_index", r);
        s = json_dumps(so, JSON_COMPACT);
        fprintf(f, ",\n%s", s ? s : "{}");
        free(s);
        json_decref(so);
        for (int i = 0; i < n[r]; i++) {
            const g1_trace_event *e = &ev[r][i];
            json_t *args = json_object();
            if (e->mb >= 0)
                json_object_set_new(args, "micro_batch", json_integer(e->mb));
            if (e->arg >= 0)
                json_object_set_new(args, strcmp(e->cat, "a2a") ? "tokens" : "layer", json_integer(e->arg));
            json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:o}", "name", e->name, "cat", e->cat, "ph",
                                  "X", "ts", (e->t0 + offset[r] - t_min) * 1e6, "dur", (e->t1 - e->t0) * 1e6, "pid",
                                  r, "tid", 0, "args", args);
            s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
            fprintf(f, ",\n%s", s ? s : "{}");
            free(s);
            json_decref(o);
        }
    }
    fprintf(f, "\n]}\n");
    g1_status st = G1_OK;
    if (ferror(f) | (fclose(f) != 0)) { /* not ||: the file is closed either way */
        st = G1_FAIL(G1_ERR_IO, "writing trace %s failed: %s", tmp, strerror(errno));
        remove(tmp);
    } else if ((st = g1_rename_durable(tmp, path)) != G1_OK) {
        remove(tmp);
    }
    free(tmp);
    return st;
}
