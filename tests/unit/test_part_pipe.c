/* g1_part_pipe_run (src/part_pipe.c), the CUDA engine's overlap of reading
 * a layer with copying the one before to the GPU, with stand-ins for both:
 * make fills a buffer with its part's pattern, use checks it. Checked:
 * every part used once, in order, with its own contents, while nothing
 * writes its buffer (a part made early into a buffer still in use shows
 * in use's second look); part i made only after part i - 2 was used;
 * make and use overlapping (each use but the last waits until the next
 * part is being made: a pipe that did not overlap would never let that
 * happen, and the wait gives up after 10 s, once); a failing use (its message,
 * from its thread) and a failing make stopping the pipe. Built also with
 * ThreadSanitizer where the compiler has it (test_part_pipe_tsan), which
 * sees any access the pipe's locking does not order. */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "part_pipe.h"
#include "testutil.h"

enum { MAXN = 64, WORDS = 4096 };

typedef struct run_state {
    int n;
    int fail_make, fail_use; /* the part that fails, or -1 */
    int overlap;             /* use(i) waits for make(i + 1) to start */
    atomic_int making;       /* the part make last began, -1 before */
    atomic_int used_upto;    /* parts used so far */
    atomic_int made_calls, use_calls;
    atomic_int bad;          /* a broken rule: its count */
    char why[200];           /* the first, said by whichever thread saw it */
    atomic_flag why_set;
} run_state;

static void broke(run_state *r, const char *fmt, int i)
{
    atomic_fetch_add(&r->bad, 1);
    if (!atomic_flag_test_and_set(&r->why_set))
        snprintf(r->why, sizeof r->why, fmt, i);
}

static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, us % 1000000 * 1000};
    nanosleep(&ts, NULL);
}

static unsigned word(int i, int j) { return (unsigned)i * 2654435761u + (unsigned)j; }

static g1_status make(void *ctx, int i, void *buf)
{
    run_state *r = ctx;
    atomic_fetch_add(&r->made_calls, 1);
    atomic_store(&r->making, i);
    if (i >= 2 && atomic_load(&r->used_upto) < i - 1)
        broke(r, "part %d made before part i - 2 was used", i);
    if (i == r->fail_make)
        return G1_FAIL(G1_ERR_IO, "make failed at part %d", i);
    unsigned *w = buf;
    for (int j = 0; j < WORDS; j++)
        w[j] = word(i, j);
    pause_us(50 * (i % 3));
    return G1_OK;
}

static int holds(const unsigned *w, int i)
{
    for (int j = 0; j < WORDS; j++)
        if (w[j] != word(i, j))
            return 0;
    return 1;
}

static g1_status use(void *ctx, int i, void *buf)
{
    run_state *r = ctx;
    atomic_fetch_add(&r->use_calls, 1);
    if (atomic_load(&r->used_upto) != i)
        broke(r, "part %d used out of order", i);
    if (!holds(buf, i))
        broke(r, "part %d: its buffer does not hold it when used", i);
    if (i == r->fail_use)
        return G1_FAIL(G1_ERR_CUDA, "use failed at part %d", i);
    if (r->overlap && i + 1 < r->n) {
        int waited = 0, most = atomic_load(&r->bad) ? 0 : 10000000; /* 10 s, once */
        while (atomic_load(&r->making) < i + 1 && waited < most)
            pause_us(200), waited += 200;
        if (atomic_load(&r->making) < i + 1)
            broke(r, "part %d: the next part was not made while this one was used", i);
        pause_us(100); /* make(i + 1) now writes the other buffer */
    }
    if (!holds(buf, i))
        broke(r, "part %d: its buffer changed while it was used", i);
    atomic_store(&r->used_upto, i + 1);
    return G1_OK;
}

static g1_status run(run_state *r, int n, int fail_make, int fail_use, int overlap)
{
    static unsigned a[WORDS], b[WORDS];
    memset(r, 0, sizeof *r);
    r->n = n;
    r->fail_make = fail_make;
    r->fail_use = fail_use;
    r->overlap = overlap;
    atomic_init(&r->making, -1);
    atomic_init(&r->used_upto, 0);
    atomic_init(&r->made_calls, 0);
    atomic_init(&r->use_calls, 0);
    atomic_init(&r->bad, 0);
    atomic_flag_clear(&r->why_set);
    void *const bufs[2] = {a, b};
    return g1_part_pipe_run(n, bufs, make, use, r);
}

int main(void)
{
    char name[512];
    run_state r;
    static const int ns[] = {0, 1, 2, 3, 17, MAXN};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        g1_status st = run(&r, n, -1, -1, 1);
        snprintf(name, sizeof name, "%d parts: each made and used once, in order, overlapping%s%s", n,
                 r.bad ? ": " : "", r.bad ? r.why : "");
        tu_check(st == G1_OK && !r.bad && r.made_calls == n && r.use_calls == n && r.used_upto == n, name);
    }
    /* a use that fails: its message and where, on this thread; nothing used
     * after it, at most the next part made */
    g1_clear_error();
    g1_status st = run(&r, 20, -1, 6, 0);
    snprintf(name, sizeof name, "a failing use: its failure (%s at %s), uses stop at it (%d), makes soon after (%d)",
             g1_last_error(), g1_last_error_where(), (int)r.use_calls, (int)r.made_calls);
    tu_check(st == G1_ERR_CUDA && !strcmp(g1_last_error(), "use failed at part 6") &&
                 strstr(g1_last_error_where(), "test_part_pipe.c") && r.use_calls == 7 && r.made_calls >= 7 &&
                 r.made_calls <= 8 && !r.bad,
             name);
    /* a make that fails: its failure; the parts before it used, none after */
    g1_clear_error();
    st = run(&r, 20, 9, -1, 0);
    snprintf(name, sizeof name, "a failing make: its failure (%s), parts made %d, used %d", g1_last_error(),
             (int)r.made_calls, (int)r.use_calls);
    tu_check(st == G1_ERR_IO && !strcmp(g1_last_error(), "make failed at part 9") && r.made_calls == 10 &&
                 r.use_calls >= 8 && r.use_calls <= 9 && !r.bad,
             name);
    /* the first part failing either way */
    st = run(&r, 5, 0, -1, 0);
    tu_check(st == G1_ERR_IO && r.made_calls == 1 && r.use_calls == 0, "the first make failing: nothing used");
    st = run(&r, 5, -1, 0, 0);
    tu_check(st == G1_ERR_CUDA && r.use_calls == 1 && r.made_calls <= 2, "the first use failing: at most 2 made");
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
