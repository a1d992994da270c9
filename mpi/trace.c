/* Event buffer and the trace-event JSON writer (jansson). */
#include "trace.h"

#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

g1_status g1_trace_init(g1_trace *t, int cap)
{
    memset(t, 0, sizeof *t);
    t->ev = malloc((size_t)cap * sizeof *t->ev);
    if (!t->ev)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the trace (%d events)", cap);
    t->cap = cap;
    return G1_OK;
}

g1_status g1_trace_cap(int *cap)
{
    const char *v = getenv("GROK1_TRACE_SPANS");
    char *end = NULL;
    errno = 0;
    long long n = v ? strtoll(v, &end, 10) : 0;
    *cap = 1 << 19;
    if (!v)
        return G1_OK;
    if (!*v || *end || errno || n < 1 || n > (1 << 24))
        return G1_FAIL(G1_ERR_ARG, "GROK1_TRACE_SPANS=%s: the spans a rank's trace keeps must be an integer from 1 "
                                   "to %d", v, 1 << 24);
    *cap = (int)n;
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

/* What a span's number is: the layer of an all-to-all span, the rank a
 * micro-batch's results came from, the tokens of the others. */
static const char *g1_trace_arg_name(const char *cat, const char *name)
{
    if (!strcmp(cat, "a2a"))
        return "layer";
    if (!strcmp(cat, "recv") && !strcmp(name, "results"))
        return "from_rank";
    return "tokens";
}

/* One line of the trace, built in a buffer: printf's number formatting
 * was most of the time of writing millions of spans. */
typedef struct line {
    char b[1024]; /* a line is at most ~600 bytes: names of 40 and 12 bytes, each escaped 6 to 1, and numbers */
    size_t n;
} line;

static void put_raw(line *l, const char *s)
{
    while (*s && l->n < sizeof l->b - 8)
        l->b[l->n++] = *s++;
}

/* s as a JSON string: the names are ours, but a rank's label or a span's
 * name must never make the file invalid */
static void put_string(line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    l->b[l->n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && l->n < sizeof l->b - 16; p++) {
        if (*p == '"' || *p == '\\') {
            l->b[l->n++] = '\\';
            l->b[l->n++] = (char)*p;
        } else if (*p < 0x20) {
            memcpy(l->b + l->n, "\\u00", 4);
            l->n += 4;
            l->b[l->n++] = hex[*p >> 4];
            l->b[l->n++] = hex[*p & 15];
        } else {
            l->b[l->n++] = (char)*p;
        }
    }
    l->b[l->n++] = '"';
}

static void put_int(line *l, long long v)
{
    char d[24];
    int k = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (v < 0)
        l->b[l->n++] = '-';
    do
        d[k++] = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    while (k > 0)
        l->b[l->n++] = d[--k];
}

/* microseconds with three decimals (nanoseconds), as %.3f would */
static void put_us(line *l, double us)
{
    long long ns = llround(us * 1000);
    if (ns < 0) {
        l->b[l->n++] = '-';
        ns = -ns;
    }
    put_int(l, ns / 1000);
    long long frac = ns % 1000;
    l->b[l->n++] = '.';
    l->b[l->n++] = (char)('0' + frac / 100);
    l->b[l->n++] = (char)('0' + frac / 10 % 10);
    l->b[l->n++] = (char)('0' + frac % 10);
}

g1_status g1_trace_write_json(const char *path, int nranks, g1_trace_event *const *ev, const int *n,
                              const long long *dropped, const double *offset, char *const *label)
{
    /* times relative to the earliest event, in microseconds */
    double t_min = 1e300;
    for (int r = 0; r < nranks; r++)
        for (int i = 0; i < n[r]; i++)
            if (ev[r][i].t0 + offset[r] < t_min)
                t_min = ev[r][i].t0 + offset[r];
    /* written beside its name and renamed when complete: a job killed while
     * writing leaves no torn trace under the final name; the temporary name
     * is this run's own (two runs given one --trace wrote one PATH.tmp at
     * once, and one renamed the other's half-written file). A device, FIFO
     * or name of a descriptor (/dev/null, /dev/stdout) is written directly,
     * as grok1-run's --output: a rename replaced it with a regular file. */
    char *tmp = NULL;
    int stream = g1_path_is_stream(path);
    int fd = stream ? open(path, O_WRONLY | O_CLOEXEC) : g1_create_temp(path, &tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        g1_status st = stream ? G1_FAIL(G1_ERR_IO, "cannot write the trace to %s: %s", path, strerror(errno))
                              : G1_FAIL(G1_ERR_IO, "cannot create a temporary file beside the trace %s: %s", path,
                                        strerror(errno));
        if (fd >= 0) {
            close(fd);
            if (tmp)
                remove(tmp);
        }
        free(tmp);
        return st;
    }
    /* written by hand, not through a JSON library: a long job's trace has
     * millions of spans, and the job may have seconds left (a signal) */
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
    for (int r = 0; r < nranks; r++) {
        line l = {.n = 0};
        put_raw(&l, r ? ",\n" : "");
        put_raw(&l, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":");
        put_int(&l, r);
        put_raw(&l, ",\"tid\":0,\"args\":{\"name\":");
        put_string(&l, label[r]);
        put_raw(&l, "}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":");
        put_int(&l, r);
        put_raw(&l, ",\"tid\":0,\"args\":{\"sort_index\":");
        put_int(&l, r);
        put_raw(&l, "}}");
        fwrite(l.b, 1, l.n, f);
        double t_end = 0;
        for (int i = 0; i < n[r]; i++) {
            const g1_trace_event *e = &ev[r][i];
            double ts = (e->t0 + offset[r] - t_min) * 1e6, dur = (e->t1 - e->t0) * 1e6;
            if (ts + dur > t_end)
                t_end = ts + dur;
            l.n = 0;
            put_raw(&l, ",\n{\"name\":");
            put_string(&l, e->name);
            put_raw(&l, ",\"cat\":");
            put_string(&l, e->cat);
            put_raw(&l, ",\"ph\":\"X\",\"ts\":");
            put_us(&l, ts);
            put_raw(&l, ",\"dur\":");
            put_us(&l, dur);
            put_raw(&l, ",\"pid\":");
            put_int(&l, r);
            put_raw(&l, ",\"tid\":0,\"args\":{");
            if (e->mb >= 0) {
                put_raw(&l, "\"micro_batch\":");
                put_int(&l, e->mb);
            }
            if (e->arg >= 0) {
                put_raw(&l, e->mb >= 0 ? ",\"" : "\"");
                put_raw(&l, g1_trace_arg_name(e->cat, e->name));
                put_raw(&l, "\":");
                put_int(&l, e->arg);
            }
            put_raw(&l, "}}");
            fwrite(l.b, 1, l.n, f);
        }
        /* where the rank's spans stop because its buffer was full */
        if (dropped && dropped[r] > 0)
            fprintf(f, ",\n{\"name\":\"trace cut: %lld later spans left out\",\"cat\":\"trace\",\"ph\":\"i\","
                       "\"s\":\"p\",\"ts\":%.3f,\"pid\":%d,\"tid\":0,\"args\":{\"dropped_spans\":%lld}}",
                    dropped[r], t_end, r, dropped[r]);
    }
    fprintf(f, "\n]}\n");
    g1_status st = G1_OK;
    if (ferror(f) | (fclose(f) != 0)) { /* not ||: the file is closed either way */
        st = G1_FAIL(G1_ERR_IO, "writing trace %s failed: %s", tmp ? tmp : path, strerror(errno));
        if (tmp)
            remove(tmp);
    } else if (tmp && (st = g1_rename_durable(tmp, path)) != G1_OK) {
        remove(tmp);
    }
    free(tmp);
    return st;
}
