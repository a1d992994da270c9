/* grok1-convert's small helpers: exact reads, bf16 to float32, piece sizes
 * and the progress display (stderr: a live line on a terminal, a plain line
 * every few seconds otherwise). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"

#define PLAIN_EVERY_S 5.0
#define TTY_EVERY_S 0.25
#define EMBED_SLAB_BYTES (8u << 20)

double cv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

g1_status cv_open(const char *path, int *fd)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return G1_FAIL(G1_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return G1_OK;
}

g1_status cv_pread(int fd, const char *path, uint64_t off, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return G1_FAIL(G1_ERR_IO, "%s: read failed at offset %llu: %s", path, (unsigned long long)off,
                           strerror(errno));
        if (k == 0)
            return G1_FAIL(G1_ERR_IO, "%s: file ended at offset %llu (changed while converting?)", path,
                           (unsigned long long)off);
        p += k;
        off += (uint64_t)k;
        n -= (size_t)k;
    }
    return G1_OK;
}

void cv_bf16_to_f32(const uint16_t *in, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)in[i] << 16;
        memcpy(&out[i], &u, sizeof u);
    }
}

int64_t cv_embed_slab_rows(const g1_config *cfg)
{
    int64_t r = EMBED_SLAB_BYTES / ((int64_t)cfg->emb_size * 4);
    return r < 1 ? 1 : r;
}

size_t cv_max_matrix_bytes(const g1_config *cfg)
{
    size_t m = 0;
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(cfg, (g1_qmat_id)i, &rows, &cols);
        if ((size_t)rows * (size_t)cols > m)
            m = (size_t)rows * (size_t)cols;
    }
    return m;
}

/* ---- progress ---- */

static void fmt_time(double s, char *buf, size_t n)
{
    if (s < 0 || s > 1e7)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s / 60 % 60);
}

static void print_line(cv_progress *p, int final)
{
    double t = cv_now() - p->t0;
    double mbs = t > 0 ? (double)p->done / 1e6 / t : 0;
    char eta[32];
    fmt_time(mbs > 0 ? (double)(p->total - p->done) / 1e6 / mbs : -1, eta, sizeof eta);
    fprintf(stderr, "%s%s: %d/%d files, %.1f/%.1f MB, %.0f MB/s, %s %s%s", p->tty ? "\r" : "", p->phase,
            p->files_done, p->files_total, (double)p->done / 1e6, (double)p->total / 1e6, mbs,
            final ? "took" : "ETA", final ? "" : eta, p->tty && !final ? "   " : "");
    if (final) {
        char el[32];
        fmt_time(t, el, sizeof el);
        fprintf(stderr, "%s\n", el);
    } else if (!p->tty)
        fputc('\n', stderr);
    fflush(stderr);
    p->last_print = cv_now();
}

void cv_progress_start(cv_progress *p, const char *phase, uint64_t total, int files, volatile sig_atomic_t *intr)
{
    *p = (cv_progress){.phase = phase, .total = total, .files_total = files, .t0 = cv_now(),
                       .tty = isatty(2), .interrupted = intr};
    p->last_print = p->t0;
}

g1_status cv_progress_add(cv_progress *p, uint64_t bytes)
{
    p->done += bytes;
    if (p->interrupted && *p->interrupted)
        return G1_FAIL(G1_ERR_IO, "interrupted");
    if (cv_now() - p->last_print >= (p->tty ? TTY_EVERY_S : PLAIN_EVERY_S))
        print_line(p, 0);
    return G1_OK;
}

void cv_progress_file_done(cv_progress *p) { p->files_done++; }

void cv_progress_end(cv_progress *p) { print_line(p, 1); }
