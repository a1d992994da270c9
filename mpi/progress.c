/* Progress lines: see progress.h. */
#include "progress.h"

#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void g1_progress_init(g1_progress *p, g1_progress_mode mode, FILE *f, double interval, int64_t total)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->enabled = mode != G1_PROGRESS_OFF;
    p->live = mode == G1_PROGRESS_AUTO && isatty(fileno(f));
    p->interval = p->live ? 0.25 : interval;
    p->total = total;
    p->t0 = p->last = now();
}

static void fmt_eta(double s, char *buf, size_t n)
{
    if (s < 0)
        snprintf(buf, n, "?");
    else if (s < 120)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 7200)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%.0fh%02dm", (double)(int)(s / 3600), (int)(s / 60) % 60);
}

void g1_progress_update(void *ctx, const g1_driver_stats *s)
{
    g1_progress *p = ctx;
    double t = now();
    if (!p->enabled || t - p->last < p->interval)
        return;
    p->last = t;
    double el = t - p->t0;
    int64_t done = s->skipped + s->written;
    char eta[32] = "?";
    if (p->total > 0 && s->written > 0)
        fmt_eta(el / (double)s->written * (double)(p->total - done), eta, sizeof eta);
    char tot[32] = "?";
    if (p->total >= 0)
        snprintf(tot, sizeof tot, "%lld", (long long)p->total);
    fprintf(p->f, "%sgrok1-run: %lld/%s requests, %.1f prompt tokens/s, %.1f generated tokens/s, ETA %s%s",
            p->live ? "\r" : "", (long long)done, tot, el > 0 ? (double)s->prompt_tokens / el : 0.0,
            el > 0 ? (double)s->generated_tokens / el : 0.0, eta, p->live ? "\033[K" : "\n");
    fflush(p->f);
    p->printed_live |= p->live;
}

void g1_progress_done(g1_progress *p)
{
    if (p->printed_live)
        fputc('\n', p->f);
}

int g1_input_rereadable(const char *path)
{
    struct stat sb;
    return strcmp(path, "-") && !stat(path, &sb) && S_ISREG(sb.st_mode);
}

/* Non-blank lines of a regular file, counting up to `upto` (0: all);
 * *last: the 0-based line number of the last one counted; *end (may be
 * NULL): the bytes up to and including that line. -1 for stdin, a pipe
 * (read once, by the run) or a file that cannot be read. */
static int64_t scan_requests(const char *path, int64_t upto, int64_t *last, int64_t *end)
{
    *last = -1;
    if (!g1_input_rereadable(path))
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int64_t n = 0, line = 0, at = 0;
    int c, blank = 1;
    while ((!upto || n < upto) && (c = getc(f)) != EOF) {
        at++;
        if (c == '\n') {
            if (!blank)
                n++, *last = line;
            blank = 1;
            line++;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            blank = 0;
        }
    }
    if (!blank && (!upto || n < upto))
        n++, *last = line;
    int bad = ferror(f);
    fclose(f);
    if (end)
        *end = at;
    return bad ? -1 : n;
}

int64_t g1_count_requests(const char *path)
{
    int64_t last;
    return scan_requests(path, 0, &last, NULL);
}

int64_t g1_request_end(const char *path, int64_t n)
{
    int64_t last, end;
    if (n == 0)
        return 0;
    return n > 0 && scan_requests(path, n, &last, &end) == n ? end : -1;
}

int64_t g1_request_line(const char *path, int64_t n)
{
    int64_t last;
    return n >= 1 && scan_requests(path, n, &last, NULL) == n ? last : -1;
}
