/* The logits dump written on a thread of its own: see dump_writer.h. Only
 * in builds with HDF5 (the dump's). */
#if G1_HAVE_HDF5
#include "dump_writer.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { JOB_ROWS, JOB_OUT };

typedef struct job {
    int kind;
    int64_t k;
    int n_total, row0, nrows;
    size_t off;      /* its rows: ring[off, off + nrows * vocab_size) */
    int *tokens;
    size_t tokens_cap;
    char *id;
    struct job *next;
} job;

/* The rows queued live in one ring buffer of the writer's, taken in order
 * and given back in the same order as they are written: what the writer
 * holds is the ring, at most max(most, the largest write). Growing it waits
 * until it is empty (a few times a run), so nothing in it moves. */
struct g1_dump_writer {
    g1_logits_file *f;
    int vocab_size;
    pthread_mutex_t mu;
    pthread_cond_t more; /* a job queued, or the end: for the thread */
    pthread_cond_t less; /* a job done, or an error: for the caller */
    job *head, *tail;    /* queued, oldest first */
    job *spare;          /* done: their buffers are used again */
    float *ring;
    size_t ring_cap, most;  /* floats: the ring's, and what it may grow to */
    size_t peak;            /* floats: the most allocated for rows at once (g1_dump_writer_peak_bytes) */
    size_t lo, hi;          /* rows in use: [lo, hi), or [lo, end) and [0, hi) when wrapped */
    size_t end;             /* wrapped: where the rows before the wrap end */
    int wrapped, in_ring;   /* in_ring: jobs whose rows are in the ring */
    int starved;            /* a write waited for room: grow when empty */
    int busy;               /* the thread is on a job, outside the lock */
    int started, ending;
    int held;               /* g1_dump_writer_test_hold: start no job */
    double flush_after_s;   /* FLUSH_AFTER_S, or a test's (g1_dump_writer_test_flush_after) */
    pthread_t thread;
    g1_status err;          /* the first failure; the jobs after it are dropped */
    char msg[1024];
    int64_t *done;          /* requests whose datasets are complete and flushed, not yet asked about */
    size_t n_done, cap_done;
    /* the thread's own: requests whose datasets are complete, not yet
     * flushed (flush_due), and when the first of them was done */
    int64_t *unflushed;
    size_t n_unflushed, cap_unflushed;
    double unflushed_since;
};

/* The thread flushes the file (one H5Fflush for the datasets finished
 * since the last) when it has nothing else queued, or when this many are
 * waiting, or the oldest has waited this long: a writer that keeps up
 * flushes after every request as before; one that is behind flushes once
 * for many (each flush scans HDF5's whole metadata cache: ckpt.h). */
enum { FLUSH_EVERY = G1_DUMP_FLUSH_EVERY };
#define FLUSH_AFTER_S 0.5

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Append k to a list of int64 (v, n, cap); 0 when there is no memory. */
static int push_k(int64_t **v, size_t *n, size_t *cap, int64_t k)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        int64_t *nv = realloc(*v, c * sizeof *nv);
        if (!nv)
            return 0;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = k;
    return 1;
}

/* With the lock: keep the thread's first failure (st != G1_OK) for the
 * caller; the jobs after it are dropped. */
static void keep_failure(g1_dump_writer *w, g1_status st, const char *msg)
{
    if (st != G1_OK && w->err == G1_OK) {
        w->err = st;
        snprintf(w->msg, sizeof w->msg, "%s", msg);
    }
}

/* With the lock: whether the datasets finished since the last flush are
 * to be flushed now (see FLUSH_EVERY). */
static int flush_due(const g1_dump_writer *w)
{
    return w->n_unflushed &&
           (!w->head || w->n_unflushed >= FLUSH_EVERY || mono_s() - w->unflushed_since >= w->flush_after_s);
}

static size_t job_floats(const g1_dump_writer *w, const job *j)
{
    return j->kind == JOB_ROWS && j->nrows > 0 ? (size_t)j->nrows * (size_t)w->vocab_size : 0;
}

static void job_free(job *j)
{
    free(j->tokens);
    free(j->id);
    free(j);
}

/* With the lock: j done, its rows given back to the ring (the oldest
 * there), its buffers kept for another job. */
static void recycle(g1_dump_writer *w, job *j)
{
    size_t n = job_floats(w, j);
    if (n && --w->in_ring == 0) {
        w->lo = w->hi = 0;
        w->wrapped = 0;
    } else if (n) {
        w->lo = j->off + n;
        if (w->wrapped && w->lo == w->end) { /* the next rows start at 0 */
            w->lo = 0;
            w->wrapped = 0;
        }
    }
    free(j->id);
    j->id = NULL;
    if (j->tokens_cap > ((size_t)1 << 18)) { /* a long request's tokens: not kept */
        free(j->tokens);
        j->tokens = NULL;
        j->tokens_cap = 0;
    }
    j->next = w->spare;
    w->spare = j;
}

/* With the lock: room for n floats in the ring, at *off; 0: none until
 * rows are given back. An empty ring starts over at 0, grown first when n
 * does not fit or a write waited for room. */
static int ring_take(g1_dump_writer *w, size_t n, size_t *off)
{
    if (w->in_ring == 0) {
        if (n > w->ring_cap || (w->starved && w->ring_cap < w->most)) {
            size_t want = w->ring_cap * 2 > ((size_t)16 << 20) ? w->ring_cap * 2 : (size_t)16 << 20;
            want = want < w->most ? want : w->most;
            want = want > n ? want : n;
            /* the old ring goes first (it is empty): never both at once,
             * so the writer holds at most max(most, the largest write) */
            free(w->ring);
            w->ring = NULL;
            w->ring_cap = 0;
            float *r = malloc(want * sizeof *r);
            if (!r)
                return -1;
            /* rows allocated at once: any ring still held and this one */
            size_t both = (w->ring ? w->ring_cap : 0) + want;
            w->peak = both > w->peak ? both : w->peak;
            w->ring = r;
            w->ring_cap = want;
        }
        w->starved = 0;
        w->lo = w->wrapped = 0;
        *off = 0;
        w->hi = n;
    } else if (!w->wrapped && w->hi + n <= w->ring_cap) {
        *off = w->hi;
        w->hi += n;
    } else if (!w->wrapped && n <= w->lo) {
        w->end = w->hi;
        w->wrapped = 1;
        *off = 0;
        w->hi = n;
    } else if (w->wrapped && w->hi + n <= w->lo) {
        *off = w->hi;
        w->hi += n;
    } else {
        w->starved = 1;
        return 0;
    }
    w->in_ring++;
    return 1;
}

static void *writer_main(void *arg)
{
    g1_dump_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while ((!w->head || w->held) && !w->ending)
            pthread_cond_wait(&w->more, &w->mu);
        job *j = w->head;
        if (!j)
            break;
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        if (w->err != G1_OK) { /* the dump stops at its first failure */
            recycle(w, j);
            pthread_cond_broadcast(&w->less);
            continue;
        }
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        g1_status st = G1_OK;
        if (j->kind == JOB_ROWS)
            st = g1_logits_file_write(w->f, j->k, j->n_total, j->row0, j->nrows, w->ring + j->off, j->tokens,
                                      j->id);
        else
            g1_logits_file_result_out(w->f, j->k);
        int complete = st == G1_OK && j->kind == JOB_ROWS && j->row0 + j->nrows == j->n_total;
        char msg[sizeof w->msg] = "";
        if (st != G1_OK)
            snprintf(msg, sizeof msg, "%s", g1_last_error());
        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        keep_failure(w, st, msg);
        if (complete) {
            if (!w->n_unflushed)
                w->unflushed_since = mono_s();
            if (!push_k(&w->unflushed, &w->n_unflushed, &w->cap_unflushed, j->k))
                keep_failure(w, G1_ERR_NOMEM, "out of memory");
        }
        if (w->err == G1_OK && flush_due(w)) {
            /* still busy: a caller waiting for a request sees it ready
             * only once it is flushed, and never sees the thread idle
             * with datasets unflushed */
            w->busy = 1;
            pthread_mutex_unlock(&w->mu);
            st = g1_logits_file_flush(w->f);
            if (st != G1_OK)
                snprintf(msg, sizeof msg, "%s", g1_last_error());
            pthread_mutex_lock(&w->mu);
            w->busy = 0;
            keep_failure(w, st, msg);
            for (size_t i = 0; w->err == G1_OK && i < w->n_unflushed; i++)
                if (!push_k(&w->done, &w->n_done, &w->cap_done, w->unflushed[i]))
                    keep_failure(w, G1_ERR_NOMEM, "out of memory");
            w->n_unflushed = 0;
        }
        recycle(w, j);
        pthread_cond_broadcast(&w->less);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

g1_status g1_dump_writer_new(g1_logits_file *f, int vocab_size, uint64_t most_bytes, g1_dump_writer **out)
{
    *out = NULL;
    g1_dump_writer *w = calloc(1, sizeof *w);
    if (!w)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    w->f = f;
    w->vocab_size = vocab_size;
    w->most = (size_t)((most_bytes ? most_bytes : G1_DUMP_WRITER_BYTES) / sizeof(float));
    w->err = G1_OK;
    w->flush_after_s = FLUSH_AFTER_S;
    g1_logits_file_defer_flush(f, 1); /* the thread flushes (flush_due) */
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->more, NULL);
    pthread_cond_init(&w->less, NULL);
    *out = w;
    return G1_OK;
}

/* With the lock held: the writer's failure as this thread's error. */
static g1_status failed(g1_dump_writer *w)
{
    g1_status st = w->err;
    char msg[sizeof w->msg];
    memcpy(msg, w->msg, sizeof msg);
    pthread_mutex_unlock(&w->mu);
    return G1_FAIL(st, "%s", msg);
}

/* With the lock held: a job to fill (a spare one, or new); NULL: no memory. */
static job *take_job(g1_dump_writer *w)
{
    job *j = w->spare;
    if (!j)
        return calloc(1, sizeof(job));
    w->spare = j->next;
    /* nothing of its last use but the tokens buffer */
    *j = (job){.kind = JOB_OUT, .tokens = j->tokens, .tokens_cap = j->tokens_cap};
    return j;
}

static g1_status enqueue(g1_dump_writer *w, job *j)
{
    pthread_mutex_lock(&w->mu);
    if (!w->started) {
        /* signals (SIGTERM, ^C) go to the run's thread, not this one */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&w->thread, NULL, writer_main, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0) {
            job_free(j);
            pthread_mutex_unlock(&w->mu);
            return G1_FAIL(G1_ERR_INTERNAL, "cannot start the thread that writes the logits dump");
        }
        w->started = 1;
    }
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->more);
    pthread_mutex_unlock(&w->mu);
    return G1_OK;
}

g1_status g1_dump_writer_write(g1_dump_writer *w, int64_t k, int n_rows_total, int row0, int nrows,
                               const float *logits, const int *tokens, const char *id_json)
{
    size_t nf = (size_t)(nrows > 0 ? nrows : 0) * (size_t)w->vocab_size;
    size_t nt = tokens && n_rows_total > 0 ? (size_t)n_rows_total : 0;
    pthread_mutex_lock(&w->mu);
    if (w->err != G1_OK)
        return failed(w);
    job *j = take_job(w);
    pthread_mutex_unlock(&w->mu);
    if (!j)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    int ok = 1;
    if (nt > j->tokens_cap) {
        int *t = realloc(j->tokens, nt * sizeof *t);
        ok = t != NULL;
        if (t) {
            j->tokens = t;
            j->tokens_cap = nt;
        }
    }
    char *id = ok && id_json ? strdup(id_json) : NULL;
    if (!ok || (id_json && !id)) {
        job_free(j);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory holding the tokens of request %lld for the dump", (long long)k);
    }
    /* room in the ring: the thread gives rows back as it writes them */
    size_t off = 0;
    int room = 0;
    pthread_mutex_lock(&w->mu);
    while (w->err == G1_OK && nf && (room = ring_take(w, nf, &off)) == 0)
        pthread_cond_wait(&w->less, &w->mu);
    if (w->err != G1_OK) {
        free(id);
        recycle(w, j); /* no rows taken: only its buffers kept */
        return failed(w);
    }
    pthread_mutex_unlock(&w->mu);
    if (room < 0) {
        free(id);
        job_free(j);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory holding %d logits rows for the dump (%zu MiB)", nrows,
                       nf * sizeof(float) >> 20);
    }
    *j = (job){.kind = JOB_ROWS, .k = k, .n_total = n_rows_total, .row0 = row0, .nrows = nrows, .off = off,
               .tokens = j->tokens, .tokens_cap = j->tokens_cap, .id = id, .next = NULL};
    /* the copy runs outside the lock: the thread does not touch these rows
     * until the job is queued */
    if (nf)
        memcpy(w->ring + off, logits, nf * sizeof *w->ring);
    if (nt)
        memcpy(j->tokens, tokens, nt * sizeof *j->tokens);
    if (!tokens) { /* NULL: not recorded */
        free(j->tokens);
        j->tokens = NULL;
        j->tokens_cap = 0;
    }
    return enqueue(w, j);
}

void g1_dump_writer_result_out(g1_dump_writer *w, int64_t k)
{
    pthread_mutex_lock(&w->mu);
    job *j = w->err == G1_OK && w->started ? take_job(w) : NULL;
    pthread_mutex_unlock(&w->mu);
    if (!j)
        return; /* no mark then: safe, a resume reads more back */
    j->kind = JOB_OUT;
    j->k = k;
    j->nrows = 0;
    (void)enqueue(w, j);
}

int g1_dump_writer_ready(g1_dump_writer *w, int64_t k, int wait)
{
    pthread_mutex_lock(&w->mu);
    for (;;) {
        for (size_t i = 0; i < w->n_done; i++)
            if (w->done[i] == k) {
                w->done[i] = w->done[--w->n_done];
                pthread_mutex_unlock(&w->mu);
                return 1;
            }
        if (w->err != G1_OK) {
            (void)failed(w);
            return -1;
        }
        if (!wait) {
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
        if (!w->head && !w->busy) {
            pthread_mutex_unlock(&w->mu);
            (void)G1_FAIL(G1_ERR_INTERNAL, "the logits of request %lld were never written to the dump", (long long)k);
            return -1;
        }
        pthread_cond_wait(&w->less, &w->mu);
    }
}

void g1_dump_writer_test_hold(g1_dump_writer *w, int hold)
{
    pthread_mutex_lock(&w->mu);
    w->held = hold;
    pthread_cond_signal(&w->more);
    pthread_mutex_unlock(&w->mu);
}

void g1_dump_writer_test_flush_after(g1_dump_writer *w, double seconds)
{
    pthread_mutex_lock(&w->mu);
    w->flush_after_s = seconds;
    pthread_mutex_unlock(&w->mu);
}

uint64_t g1_dump_writer_held_bytes(g1_dump_writer *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t n = (uint64_t)w->ring_cap * sizeof(float);
    pthread_mutex_unlock(&w->mu);
    return n;
}

uint64_t g1_dump_writer_peak_bytes(g1_dump_writer *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t n = (uint64_t)w->peak * sizeof(float);
    pthread_mutex_unlock(&w->mu);
    return n;
}

g1_status g1_dump_writer_drain(g1_dump_writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->head || w->busy)
        pthread_cond_wait(&w->less, &w->mu);
    if (w->err != G1_OK)
        return failed(w);
    pthread_mutex_unlock(&w->mu);
    return G1_OK;
}

g1_status g1_dump_writer_free(g1_dump_writer *w)
{
    if (!w)
        return G1_OK;
    pthread_mutex_lock(&w->mu);
    w->ending = 1;
    pthread_cond_signal(&w->more);
    pthread_mutex_unlock(&w->mu);
    if (w->started)
        pthread_join(w->thread, NULL); /* it ends once the queue is empty, every dataset flushed */
    g1_logits_file_defer_flush(w->f, 0);
    g1_status st = G1_OK;
    if (w->err != G1_OK)
        st = G1_FAIL(w->err, "%s", w->msg);
    for (job *j = w->spare, *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
    free(w->ring);
    free(w->done);
    free(w->unflushed);
    pthread_cond_destroy(&w->less);
    pthread_cond_destroy(&w->more);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return st;
}
#else
typedef int g1_dump_writer_unused; /* ISO C wants a declaration in every file */
#endif
