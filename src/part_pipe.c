/* g1_part_pipe_run: see part_pipe.h. One mutex and one condition variable
 * order everything: the caller hands part i over (made = i + 1) after
 * making it, the pipe's thread hands it back (used = i + 1) after using it,
 * and the caller makes part i only once used >= i - 1 (made - used <= 1). */
#include "part_pipe.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct pipe_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *const *buf;
    g1_part_fn use;
    void *ctx;
    int made, used; /* parts handed over; parts used */
    int stop;       /* end after the part being used */
    g1_status st;   /* use's first failure, its message and where */
    char msg[1024], where[256];
} pipe_state;

static void *use_main(void *arg)
{
    pipe_state *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->used == p->made && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        int i = p->used;
        pthread_mutex_unlock(&p->mu);
        g1_status st = p->use(p->ctx, i, p->buf[i % 2]);
        pthread_mutex_lock(&p->mu);
        if (st != G1_OK) {
            p->st = st;
            snprintf(p->msg, sizeof p->msg, "%s", g1_last_error());
            snprintf(p->where, sizeof p->where, "%s", g1_last_error_where());
            break;
        }
        p->used++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Wait until at most `ahead` parts handed over are unused, or a use failed
 * (then 0). */
static int wait_used(pipe_state *p, int ahead)
{
    pthread_mutex_lock(&p->mu);
    while (p->st == G1_OK && p->made - p->used > ahead)
        pthread_cond_wait(&p->cv, &p->mu);
    int ok = p->st == G1_OK;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

g1_status g1_part_pipe_run(int n, void *const buf[2], g1_part_fn make, g1_part_fn use, void *ctx)
{
    if (n <= 0)
        return G1_OK;
    pipe_state p;
    memset(&p, 0, sizeof p);
    p.buf = buf;
    p.use = use;
    p.ctx = ctx;
    pthread_t th;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    int err = pthread_create(&th, NULL, use_main, &p);
    if (err) {
        pthread_cond_destroy(&p.cv);
        pthread_mutex_destroy(&p.mu);
        return G1_FAIL(G1_ERR_NOMEM, "cannot start a thread: %s", strerror(err));
    }
    g1_status st = G1_OK;
    for (int i = 0; i < n; i++) {
        if (!wait_used(&p, 1)) /* part i - 2, in buf[i % 2], is used */
            break;
        st = make(ctx, i, buf[i % 2]);
        if (st != G1_OK)
            break;
        pthread_mutex_lock(&p.mu);
        p.made++;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
    }
    if (st == G1_OK)
        wait_used(&p, 0); /* every part used, or a use failed */
    pthread_mutex_lock(&p.mu);
    p.stop = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    pthread_join(th, NULL);
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    if (st == G1_OK && p.st != G1_OK)
        st = g1_fail_copy(p.st, p.msg, p.where);
    return st;
}
