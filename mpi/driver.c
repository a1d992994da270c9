/* The request scheduler of grok1-run (rank 0): continuous batching over
 * sequence slots grouped in micro-batches. Each micro-batch step is a batch
 * of decode tokens (one per decoding slot) and prefill chunks (oldest request
 * first) within max_batch_tokens, embedded here and sent through the
 * pipeline; while it is in flight the other micro-batches are built and
 * sampled. A finished slot takes the next request at once; results are held
 * back until every earlier request's result has been written. */
#include "driver.h"
#include "fault.h"
#include "rowmath.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* One sequence slot: the request it runs and how far it got. */
typedef struct seq {
    int busy;
    g1_request req;
    int64_t k;          /* request index (0-based, input order) */
    int max_new;        /* generate: completion limit for this request */
    int fed;            /* positions already in the KV cache */
    int *gen;           /* generate: (max_new, limited by the context) new tokens */
    int n_gen;
    const char *finish; /* generate: "eos" / "length" / "stop" once done */
    double *lp;         /* score: (n_prompt - 1) log p(token i | < i) at i - 1 */
    unsigned char *ok;  /* score: (n_prompt - 1) token i was the argmax */
    g1_logprob *top;    /* generate: (max_new, top_logprobs) */
    g1_tok_stream ts;   /* generate with a tokenizer: completion text so far */
    g1_str text;
    size_t searched;    /* bytes of text already searched for stop strings */
    /* a fork waiting to be planned into a batch (fork_n > 0): the first
     * fork_n positions of slot fork_src, which ran request fork_k (-1: free)
     * when it was chosen; fed stays 0 until then */
    int fork_src, fork_n;
    int64_t fork_k;
} seq;

/* Finished result lines waiting for their predecessors: a ring indexed by
 * request index, holding requests [next, next + cap). */
typedef struct outq {
    char **line;
    int64_t *dump_k; /* each line's dataset in the logits dump (its input line - 1) */
    int64_t cap;
    int64_t next; /* the next request index to write */
} outq;

/* One micro-batch: slots [m*B, (m+1)*B) and the step in flight. */
typedef struct mbatch {
    int inflight;
    int T;
    int rr;                /* first slot offered a decode token next step */
    int *tok, *slot, *pos; /* (max_batch_tokens) */
    int *need;             /* (max_batch_tokens) rows that need logits */
    float *x;              /* (max_batch_tokens, D) */
    g1_fork *fork;         /* (max_batch_tokens) forks applied before the step's tokens */
    int n_fork;
} mbatch;

/* What a request read ahead waited for (admit, waits): running slot wit,
 * which gives it wit_n positions while it runs request wit_k; and own, no
 * less than the most any free slot's own caches gave when d->n_freed slots
 * had been freed. A free slot's caches change only once it is busy, so only
 * the slots freed since can give more than own. wit < 0: nothing kept. */
typedef struct pend_wait {
    int wit, wit_n, own;
    int64_t wit_k, freed;
} pend_wait;

typedef struct driver {
    g1_engine *e;          /* embeds and un-embeds (holds the embedding) */
    g1_pipe_ops pipe;
    int M, B;              /* micro-batches, slots per micro-batch */
    int n_slots;           /* M * B */
    mbatch *mbs;           /* (M) */
    long long *order;      /* (M) submission counter of each in-flight micro-batch */
    const g1_config *cfg;
    int context;           /* positions per sequence: --max-context, else max_seq_len */
    g1_driver_opts o;
    FILE *out;
    g1_driver_stats *st;
    g1_request_reader rd;
    int eof;
    int64_t n_read;
    seq *seqs;    /* (n_slots) */
    outq q;
    float *logits;         /* (lrows, V) */
    g1_sampler **samplers; /* (n_samplers) one per thread of use_logits */
    int n_samplers;
    int lrows;             /* logits rows computed at once */
    int32_t *row_tok;      /* (max(lrows, max_batch_tokens)) use_logits: each row's new token;
                            * score_on_device: each row's argmax */
    double *row_lp;        /* (max_batch_tokens) score_on_device: the rows' log-probs; NULL:
                            * the logits come to the host */
    int *row_target;       /* (max_batch_tokens) score_on_device: the rows' targets */
    g1_status *row_st;     /* (lrows) and its status */
    /* prefix reuse (NULL when off): the tokens whose keys and values slot s's
     * caches hold, positions [0, n_held[s]); a request put into the slot
     * starts after the prefix it shares with them */
    int **held;            /* (n_slots, context) */
    int *n_held;           /* (n_slots) */
    int E;                 /* forks stay within slots of one owner (g % E) */
    int *cls_n, *cls_c;    /* (E) best_free: the best fork source of each owner */
    int *fork_need;        /* (n_slots) the most positions a fork not yet planned wants from
                            * each slot: counted at the start of admit, raised as it gives
                            * out forks (fork_need_count, seq_start), read by best_free */
    /* score mode: the log-probs (and greedy flags) of the slot's positions
     * [0, n_lp[s]): the log-prob of held token p + 1 after held[0..p], kept
     * from the plain score request that computed them, so a plain score
     * request (which needs every position's) can start after a shared
     * prefix too */
    double **held_lp;      /* (n_slots, context) */
    char **held_ok;        /* (n_slots, context) */
    int *n_lp;             /* (n_slots) */
    /* requests read but not started, oldest first (n_pend of at most W): with
     * prefix reuse in score mode a request may wait there for a slot running
     * a request it shares a longer prefix with (W = 1 without reuse) */
    g1_request *pend;
    int64_t *pend_k;       /* their request indices */
    pend_wait *pend_w;     /* why each waited, if it did */
    int n_pend, W;
    /* slots freed by a finished request, the last n_slots of them: slot
     * freed_ring[e % n_slots] was the e-th freed, for e < n_freed */
    int *freed_ring;
    int64_t n_freed;
    /* a request refused while reading ahead (G1_ERR_FORMAT or G1_ERR_RANGE):
     * nothing more is read or started, and the run stops with this once
     * every request before it has finished and its result is written, so
     * that a resume after the line is fixed goes on from there */
    g1_status bad;
    char bad_msg[512];
    long long route_n;     /* steps submitted (the route log's N) */
} driver;

static double now_s(void) { return g1_trace_now(); }

/* ---- ordered output ---- */

static g1_status out_write(driver *d, const char *line)
{
    if (fputs(line, d->out) < 0 || fputc('\n', d->out) == EOF || fflush(d->out) != 0)
        return G1_FAIL(G1_ERR_IO, "writing results failed: %s", strerror(errno));
    return G1_OK;
}

static g1_status out_flush(driver *d, int wait);

/* Takes ownership of `line`, the result of request k whose logits dump
 * dataset is logits/<dump_k>. */
static g1_status out_push(driver *d, int64_t k, char *line, int64_t dump_k)
{
    outq *q = &d->q;
    if (k - q->next >= q->cap) {
        int64_t cap = q->cap ? 2 * q->cap : 64;
        while (k - q->next >= cap)
            cap *= 2;
        char **nl = calloc((size_t)cap, sizeof *nl);
        int64_t *nk = calloc((size_t)cap, sizeof *nk);
        if (!nl || !nk) {
            free(nl);
            free(nk);
            free(line);
            return G1_FAIL(G1_ERR_NOMEM, "out of memory holding results back for input order");
        }
        for (int64_t i = q->next; i < q->next + q->cap; i++) {
            nl[i % cap] = q->line[i % q->cap];
            nk[i % cap] = q->dump_k[i % q->cap];
        }
        free(q->line);
        free(q->dump_k);
        q->line = nl;
        q->dump_k = nk;
        q->cap = cap;
    }
    q->line[k % q->cap] = line;
    q->dump_k[k % q->cap] = dump_k;
    return out_flush(d, 0);
}

/* The results that can go out, in input order: each once its logits are in
 * the dump (a writer behind holds it back; `wait`: wait for it). */
static g1_status out_flush(driver *d, int wait)
{
    outq *q = &d->q;
    while (q->cap && q->line[q->next % q->cap]) {
        char **slot = &q->line[q->next % q->cap];
        if (d->o.dump && d->o.dump->ready) {
            int r = d->o.dump->ready(d->o.dump->ctx, q->dump_k[q->next % q->cap], wait);
            if (r < 0)
                return G1_ERR_IO; /* its message is recorded */
            if (r == 0)
                break;
        }
        g1_status st = out_write(d, *slot);
        free(*slot);
        *slot = NULL;
        G1_TRY(st);
        /* its logits went to the dump before it (flushed there): the dump
         * may now vouch for them (g1_logits_file_result_out) */
        if (d->o.dump && d->o.dump->out)
            d->o.dump->out(d->o.dump->ctx, q->dump_k[q->next % q->cap]);
        q->next++;
        d->st->written++;
    }
    return G1_OK;
}

/* ---- sequences ---- */

static void seq_clear(seq *q)
{
    g1_request_free(&q->req);
    free(q->gen);
    free(q->lp);
    free(q->ok);
    free(q->top);
    g1_str_free(&q->text);
    memset(q, 0, sizeof *q);
}

/* A score request that needs every position's log-prob: no continuation
 * and no dump (the dump needs every position's logits, which are not kept). */
static int plain_score(const driver *d, const g1_request *r)
{
    return d->o.mode == G1_MODE_SCORE && !d->o.dump && !r->n_context;
}

static g1_status seq_finish(driver *d, int s)
{
    seq *q = &d->seqs[s];
    char *line = NULL;
    g1_status st = G1_OK;
    if (d->o.mode == G1_MODE_GENERATE && d->o.tok && strcmp(q->finish, "stop"))
        st = g1_tok_stream_finish(&q->ts, &q->text); /* bytes held back by the stream */
    if (st == G1_OK)
        st = d->o.mode == G1_MODE_SCORE
                 ? g1_result_score(&q->req, q->lp, q->ok, &line)
                 : g1_result_generate(&q->req, q->gen, q->n_gen, d->o.tok ? (q->text.s ? q->text.s : "") : NULL,
                                      q->text.n, q->finish, q->top, &line);
    int64_t k = q->k, dump_k = (int64_t)q->req.line - 1;
    d->st->generated_tokens += q->n_gen;
    if (st == G1_OK && d->held_lp && plain_score(d, &q->req) && q->req.n_prompt > 1) {
        int n = q->req.n_prompt - 1;
        memcpy(d->held_lp[s], q->lp, (size_t)n * sizeof *q->lp);
        memcpy(d->held_ok[s], q->ok, (size_t)n);
        d->n_lp[s] = n;
    }
    seq_clear(q); /* the slot's next request starts at position 0, or after the prefix it shares with
                     the slot's caches (prefix reuse): a smaller position rewinds them */
    if (d->freed_ring)
        d->freed_ring[d->n_freed++ % d->n_slots] = s;
    G1_TRY(st);
    return out_push(d, k, line, dump_k);
}

/* The prompt tokens of request r that go through the model: all of them,
 * but in score mode without the dump not the last one, which is only
 * predicted (its own logits predict nothing asked for); so a score request
 * may have one token more than the context has positions, as an HF model
 * scores max_length + 1 tokens. A one-token score request feeds nothing. */
static int feed_end(const driver *d, const g1_request *r)
{
    return d->o.mode == G1_MODE_SCORE && !d->o.dump ? r->n_prompt - 1 : r->n_prompt;
}

/* The first position whose logits request r needs: every one for a plain
 * score (or with the dump), the last of the prompt part for a continuation
 * or a generation. */
static int first_needed(const driver *d, const g1_request *r)
{
    if (d->o.mode == G1_MODE_GENERATE)
        return r->n_prompt - 1;
    return d->o.dump || !r->n_context ? 0 : r->n_context - 1;
}

/* The length of the prefix a[0..n) and b[0..n) share (blocks first: memcmp is fast). */
static int common_prefix(const int *a, const int *b, int n)
{
    int i = 0;
    while (i + 16 <= n && !memcmp(a + i, b + i, 16 * sizeof *a))
        i += 16;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Positions of request r a slot can skip when its caches hold the tokens
 * h[0..nh) and it has the log-probs of its first nlp positions: the prefix
 * r shares with them, up to the first position whose logits r needs (those
 * must be computed), or for a plain score request up to the first position
 * whose log-prob is not kept (its logits are computed again). The engine is
 * batch-invariant, so keys, values and logits computed for another request
 * are the ones this one would compute. */
static int usable(const driver *d, const g1_request *r, const int *h, int nh, int nlp)
{
    int plain = plain_score(d, r), n = plain ? r->n_prompt : first_needed(d, r);
    if (n > nh)
        n = nh;
    int i = n > 0 ? common_prefix(h, r->prompt_ids, n) : 0;
    if (plain) /* log-prob p is that of token p + 1: both must be shared */
        i = i - 1 < nlp ? i - 1 : nlp;
    return i > 0 ? i : 0;
}

/* Positions of request r that slot s holds (see usable). */
static int reusable(const driver *d, int s, const g1_request *r)
{
    if (!d->held)
        return 0;
    return usable(d, r, d->held[s], d->n_held[s], d->n_lp ? d->n_lp[s] : 0);
}

/* Where a request goes (best_free): free slot s, the positions its own
 * caches give it (own), and a fork of the first n positions of slot src
 * (which ran request k, -1 when free) when n > own. */
typedef struct slot_pick {
    int s, own, src, n;
    int64_t k;
    int own_best; /* the most any free slot's own caches give */
    int guard;    /* every free slot is kept for forks not yet planned (best_free) */
} slot_pick;

/* Put request `r` (ownership taken), request index k, into free slot s
 * (with the fork `pick` proposes, if any). A generate request with no room
 * for new tokens finishes at once and leaves the slot free. */
static g1_status seq_start(driver *d, int s, g1_request *r, int64_t k, const slot_pick *pick)
{
    seq *q = &d->seqs[s];
    memset(q, 0, sizeof *q);
    q->req = *r;
    q->k = k;
    d->st->requests++;
    d->st->prompt_tokens += r->n_prompt;
    int n = r->n_prompt;
    if (d->o.mode == G1_MODE_SCORE) {
        q->lp = malloc((size_t)(n > 1 ? n - 1 : 1) * sizeof *q->lp);
        q->ok = malloc((size_t)(n > 1 ? n - 1 : 1));
        if (!q->lp || !q->ok)
            return seq_clear(q), G1_FAIL(G1_ERR_NOMEM, "out of memory for request on line %ld", r->line);
    } else {
        q->max_new = r->max_new_tokens >= 0 ? r->max_new_tokens : d->o.max_new_tokens;
        if (q->max_new > d->context - n)
            q->max_new = d->context - n;
        if (q->max_new == 0) {
            q->finish = "length";
            return seq_finish(d, s);
        }
        q->gen = malloc((size_t)q->max_new * sizeof *q->gen);
        if (r->top_logprobs)
            q->top = malloc((size_t)q->max_new * (size_t)r->top_logprobs * sizeof *q->top);
        if (!q->gen || (r->top_logprobs && !q->top))
            return seq_clear(q), G1_FAIL(G1_ERR_NOMEM, "out of memory for request on line %ld", r->line);
        if (d->o.tok)
            g1_tok_stream_init(&q->ts, d->o.tok);
    }
    q->busy = 1;
    if (pick && pick->n > pick->own) { /* a fork, planned when a batch of this slot is built */
        q->fork_src = pick->src;
        q->fork_n = pick->n;
        q->fork_k = pick->k;
        if (d->fork_need && q->fork_n > d->fork_need[q->fork_src])
            d->fork_need[q->fork_src] = q->fork_n; /* admit's count stays whole (fork_need_count) */
        return G1_OK;
    }
    q->fed = reusable(d, s, &q->req); /* a smaller position rewinds the slot's caches there */
    if (q->fed && plain_score(d, &q->req)) { /* the log-probs of the shared positions */
        memcpy(q->lp, d->held_lp[s], (size_t)q->fed * sizeof *q->lp);
        memcpy(q->ok, d->held_ok[s], (size_t)q->fed);
    }
    d->st->reused_tokens += q->fed;
    if (d->o.mode == G1_MODE_SCORE && q->fed >= feed_end(d, &q->req))
        return seq_finish(d, s); /* nothing to compute: one token, or every log-prob was kept */
    return G1_OK;
}

/* Whether request r may start from a prefix forked from another slot: with
 * prefix reuse, and not a plain score (whose kept log-probs stay with
 * their slot). */
static int forkable(const driver *d, const g1_request *r) { return d->held && !plain_score(d, r); }

/* The positions of request r slot c can give by a fork: what its caches
 * hold (or will, once the prompt it is submitting is in: a fork waits for
 * that).
 *
 * What they hold is the driver's record, held[c] and n_held[c]. When c is
 * busy, that may include stale positions: a request started at a position
 * below n_held[c] (or waiting for its own fork) leaves the record as it was
 * until c's next batch is built, which writes over it from there. They are
 * offered all the same, and that is safe: the offer is only a guess for
 * the choice of a slot. plan_fork copies nothing but what the record says
 * when the fork goes into a batch (usable on held[src] then, at most the
 * offer), the record is what src's caches hold when the fork runs (a batch
 * is recorded as it is built, add_row and plan_fork, and submitted at once;
 * every rank runs the micro-batches in the order submitted, a batch's forks
 * in order before its tokens: docs/DISTRIBUTED.md), and the engine refuses
 * a fork longer than the source's length (g1_batch_admit). So a stale
 * position is copied only while src's caches still hold it: when the fork
 * is planned before src's next batch is built, or in the same batch (forks
 * first). Built after, the record has lost them and the fork gets fewer, or
 * waits for src's prompt when its prompt was offered too (plan_fork). Not
 * offering them would lose forks: on docs/PERFORMANCE.md's cont input at
 * 8 slots, 67 of the 146 forks were chosen for such positions ("A fork
 * from a busy slot's stale positions" there). */
static int fork_share(const driver *d, int c, const g1_request *r)
{
    int n = usable(d, r, d->held[c], d->n_held[c], 0);
    const seq *q = &d->seqs[c];
    if (q->busy && q->fed < feed_end(d, &q->req)) {
        int f = usable(d, r, q->req.prompt_ids, feed_end(d, &q->req), 0);
        n = f > n ? f : n;
    }
    return n;
}

/* The number of free slots. */
static int n_free(const driver *d)
{
    int n = 0;
    for (int c = 0; c < d->n_slots; c++)
        n += !d->seqs[c].busy;
    return n;
}

/* A score request waits (in the read-ahead) for a running request when they
 * share at least this many more positions than any free slot holds: the
 * contexts of one question's lm-eval continuations, read one after the other.
 * And a free slot is kept for the forks that copy from it (best_free) when
 * starting a request there would lose them at least this many positions. */
#define WAIT_GAIN 16

/* The free slot for request r: the one that starts it furthest along, by
 * the prefix its own caches hold or by a fork from a slot of its owner
 * (pick; pick->n > pick->own for a fork). On ties a slot whose own caches
 * give it that much goes before a fork (a fork would overwrite what its
 * slot holds, which later requests may want), then the first in the order
 * that spreads requests over the micro-batches (slot j of every micro-batch
 * before slot j + 1 of any). A free slot that forks not yet planned will
 * copy from comes after every other (pick->guard when it is the only kind
 * left), unless r keeps what they want of it but for fewer than WAIT_GAIN
 * positions (its own caches give r that much): starting r there would
 * overwrite that prefix before they copy it, and they would compute it
 * again. *reuse: the positions it skips. -1 when no slot is free. */
static int best_free(driver *d, const g1_request *r, int *reuse, slot_pick *pick)
{
    int s = -1, fork = forkable(d, r), E = d->E, s_guard = 1; /* 1 until a slot is found */
    *reuse = -1;
    *pick = (slot_pick){.s = -1, .src = -1, .k = -1};
    if (!n_free(d))
        return -1; /* no fork source is needed */
    if (fork) { /* d->cls_n, d->cls_c: scratch, this call's */
        for (int e = 0; e < E; e++)
            d->cls_n[e] = 0, d->cls_c[e] = -1;
        for (int c = 0; c < d->n_slots; c++) {
            int n = fork_share(d, c, r);
            if (n > d->cls_n[c % E])
                d->cls_n[c % E] = n, d->cls_c[c % E] = c;
        }
    }
    int own_best = 0;
    for (int i = 0; i < d->n_slots; i++) {
        int c = (i % d->M) * d->B + i / d->M;
        if (d->seqs[c].busy)
            continue;
        int own = reusable(d, c, r), n = own, src = -1;
        own_best = own > own_best ? own : own_best;
        if (fork && d->cls_c[c % E] != c && d->cls_n[c % E] > own)
            n = d->cls_n[c % E], src = d->cls_c[c % E];
        int guard = d->fork_need && d->fork_need[c] >= own + WAIT_GAIN; /* r there loses forks that much */
        if (guard < s_guard || (guard == s_guard && (n > *reuse || (n == *reuse && src < 0 && pick->src >= 0)))) {
            *reuse = n;
            s = c;
            s_guard = guard;
            *pick = (slot_pick){.s = c, .own = own, .src = src, .n = src >= 0 ? n : own,
                                .k = src >= 0 && d->seqs[src].busy ? d->seqs[src].k : -1};
        }
    }
    pick->own_best = own_best;
    pick->guard = s_guard;
    return s;
}

/* The positions request r could skip in the slot of the request running in
 * slot c (whose caches will hold its whole prompt once it is done, with
 * every log-prob when it is a plain score request). */
static int running_usable(const driver *d, int c, const g1_request *r)
{
    const seq *q = &d->seqs[c];
    return usable(d, r, q->req.prompt_ids, feed_end(d, &q->req), plain_score(d, &q->req) ? q->req.n_prompt - 1 : 0);
}

/* Whether pending request i waits for a running request: when the most a
 * running slot gives it (running_usable) is at least WAIT_GAIN more than
 * the most a free slot's own caches give (best_free's own_best). Without
 * going over every free slot while what it waited for last time (pend_wait)
 * bounds own_best: that bound, raised by the slots freed since, and a
 * running slot that gives WAIT_GAIN more (the one it waited for first) make
 * it wait too; only when none does is own_best computed again. */
static int waits(driver *d, int i)
{
    const g1_request *r = &d->pend[i];
    pend_wait *w = &d->pend_w[i];
    if (w->wit >= 0 && d->n_freed - w->freed <= d->n_slots) {
        int own = w->own;
        for (int64_t e = w->freed; e < d->n_freed; e++) {
            int c = d->freed_ring[e % d->n_slots];
            if (!d->seqs[c].busy) {
                int n = reusable(d, c, r);
                own = n > own ? n : own;
            }
        }
        w->own = own;
        w->freed = d->n_freed;
        const seq *q = &d->seqs[w->wit];
        if (q->busy && q->k != w->wit_k)
            w->wit_n = running_usable(d, w->wit, r), w->wit_k = q->k;
        if (q->busy && w->wit_n >= own + WAIT_GAIN)
            return 1;
        for (int c = 0; c < d->n_slots; c++) {
            if (!d->seqs[c].busy || c == w->wit)
                continue;
            int n = running_usable(d, c, r);
            if (n >= own + WAIT_GAIN) {
                w->wit = c, w->wit_n = n, w->wit_k = d->seqs[c].k;
                return 1;
            }
        }
    }
    w->wit = -1;
    int own = 0;
    for (int c = 0; c < d->n_slots; c++)
        if (!d->seqs[c].busy) {
            int n = reusable(d, c, r);
            own = n > own ? n : own;
        }
    for (int c = 0; c < d->n_slots; c++) {
        if (!d->seqs[c].busy)
            continue;
        int n = running_usable(d, c, r);
        if (n >= own + WAIT_GAIN) {
            *w = (pend_wait){.wit = c, .wit_n = n, .own = own, .wit_k = d->seqs[c].k, .freed = d->n_freed};
            return 1;
        }
    }
    return 0;
}

static g1_status start_pending(driver *d, int i, const slot_pick *pick)
{
    g1_request r = d->pend[i];
    int64_t k = d->pend_k[i];
    d->n_pend--;
    memmove(d->pend + i, d->pend + i + 1, (size_t)(d->n_pend - i) * sizeof *d->pend);
    memmove(d->pend_k + i, d->pend_k + i + 1, (size_t)(d->n_pend - i) * sizeof *d->pend_k);
    memmove(d->pend_w + i, d->pend_w + i + 1, (size_t)(d->n_pend - i) * sizeof *d->pend_w);
    return seq_start(d, pick->s, &r, k, pick);
}

/* d->fork_need from the forks not yet planned (for admit, which plans none:
 * only build_batch does, and seq_start raises it for each fork it records). */
static void fork_need_count(driver *d)
{
    if (!d->fork_need)
        return;
    memset(d->fork_need, 0, (size_t)d->n_slots * sizeof *d->fork_need);
    for (int c = 0; c < d->n_slots; c++) {
        const seq *q = &d->seqs[c];
        if (q->busy && q->fork_n && q->fork_n > d->fork_need[q->fork_src])
            d->fork_need[q->fork_src] = q->fork_n;
    }
}

/* Fill free slots from the input, oldest request first, each into the free
 * slot best_free picks. With prefix reuse in score mode, a request that
 * shares a long prefix with a running one waits for its slot (while later
 * requests go ahead), unless the read-ahead is full and nothing else could
 * start. */
static g1_status admit(driver *d)
{
    if (d->o.stop && *d->o.stop)
        d->eof = 1; /* interrupted: take no new requests */
    fork_need_count(d);
    for (;;) {
        while (!d->eof && d->n_pend < d->W && !(d->o.stop && *d->o.stop)) {
            int got = 0;
            g1_status st = g1_request_next(&d->rd, &d->pend[d->n_pend], &got);
            if (st != G1_OK && st != G1_ERR_FORMAT && st != G1_ERR_RANGE)
                return st; /* a read error or no memory (not a refused request): stop now */
            if (st != G1_OK) {
                d->bad = st;
                snprintf(d->bad_msg, sizeof d->bad_msg, "%s", g1_last_error());
                d->eof = 1;
            } else if (!got) {
                d->eof = 1;
            } else {
                d->pend_w[d->n_pend] = (pend_wait){.wit = -1};
                d->pend_k[d->n_pend++] = d->n_read++;
            }
        }
        if (d->o.stop && *d->o.stop)
            return G1_OK;
        int started = 0, free_left = 0, reuse, nfree = n_free(d);
        slot_pick pick;
        for (int i = 0; i < d->n_pend; i++) {
            if (!nfree)
                break; /* nothing more starts this pass */
            free_left = 1;
            /* against what free slots hold themselves: a fork would start it now, but
             * piling the continuations of one context into its slot keeps the
             * other slots' caches for the requests they suit */
            if (d->held && d->o.mode == G1_MODE_SCORE && waits(d, i))
                continue;
            best_free(d, &d->pend[i], &reuse, &pick);
            if (pick.guard)
                continue; /* it starts once those forks are planned (its slots' next batch) */
            G1_TRY(start_pending(d, i--, &pick));
            nfree = n_free(d); /* one less, or as many when it finished at once */
            started = 1;
        }
        if (!started && free_left && d->n_pend == d->W) { /* the read-ahead is full of waiting requests */
            best_free(d, &d->pend[0], &reuse, &pick);
            if (!pick.guard) {
                G1_TRY(start_pending(d, 0, &pick));
                started = 1;
            }
        }
        if (!started)
            return G1_OK; /* every slot busy, or what is read waits; else read on and fill more */
    }
}

/* ---- one step ---- */

static void add_row(driver *d, mbatch *b, int t, int s, int token, int pos, int need)
{
    b->tok[t] = token;
    b->slot[t] = s;
    b->pos[t] = pos;
    b->need[t] = need;
    if (d->held) {
        d->held[s][pos] = token;
        d->n_held[s] = pos + 1;
        if (d->n_lp && d->n_lp[s] > pos - 1) /* log-prob pos - 1 is of the token at pos */
            d->n_lp[s] = pos > 0 ? pos - 1 : 0;
    }
}

/* Slot s's fork, planned into batch b before any of b's tokens are added
 * (the fork runs first on every rank, after every batch submitted before
 * b: so it copies what the driver's record of the source holds now). It
 * waits (fork_n stays) while its source still runs the request it was
 * chosen for and has not submitted the prefix yet, or b has no room for
 * another fork; a source that moved on gives what it still holds, and when
 * that is no more than s's own caches hold, s starts from those. */
static void plan_fork(driver *d, mbatch *b, int s)
{
    seq *q = &d->seqs[s];
    const seq *src = &d->seqs[q->fork_src];
    int have = usable(d, &q->req, d->held[q->fork_src], d->n_held[q->fork_src], 0);
    if (have < q->fork_n && src->busy && src->k == q->fork_k && src->fed < feed_end(d, &src->req))
        return; /* the source's prefix is not submitted yet */
    int n = have < q->fork_n ? have : q->fork_n, own = reusable(d, s, &q->req);
    if (n > own && b->n_fork == d->o.max_batch_tokens)
        return; /* no room in this batch */
    q->fork_n = 0;
    if (n <= own) {
        q->fed = own;
        d->st->reused_tokens += own;
        return;
    }
    b->fork[b->n_fork++] = (g1_fork){.src = q->fork_src, .dst = s, .n = n};
    memcpy(d->held[s], d->held[q->fork_src], (size_t)n * sizeof **d->held);
    d->n_held[s] = n;
    if (d->n_lp)
        d->n_lp[s] = 0;
    q->fed = n;
    d->st->reused_tokens += n;
    d->st->forked_tokens += n;
}

/* Micro-batch m's next step: decode tokens first (they are cheap and keep
 * latency low), then prefill chunks of the oldest requests with what is left
 * of the token budget. */
static int build_batch(driver *d, int m)
{
    mbatch *b = &d->mbs[m];
    int T = 0, budget = d->o.max_batch_tokens, n = d->B, s0 = m * d->B;
    b->n_fork = 0;
    for (int s = s0; s < s0 + n; s++)
        if (d->seqs[s].busy && d->seqs[s].fork_n)
            plan_fork(d, b, s);
    for (int i = 0; i < n && T < budget; i++) {
        int s = s0 + (b->rr + i) % n;
        seq *q = &d->seqs[s];
        if (!q->busy || !q->gen || q->fed < q->req.n_prompt)
            continue;
        add_row(d, b, T++, s, q->gen[q->n_gen - 1], q->fed, 1);
        q->fed++;
    }
    b->rr = (b->rr + 1) % n; /* no slot waits for ever when slots > budget */
    while (T < budget) {
        int best = -1;
        for (int s = s0; s < s0 + n; s++) {
            seq *q = &d->seqs[s];
            if (q->busy && !q->fork_n && q->fed < feed_end(d, &q->req) && (best < 0 || q->k < d->seqs[best].k))
                best = s;
        }
        if (best < 0)
            break;
        seq *q = &d->seqs[best];
        int c = feed_end(d, &q->req) - q->fed, first = first_needed(d, &q->req);
        if (c > budget - T)
            c = budget - T;
        for (int j = 0; j < c; j++) {
            int p = q->fed + j;
            add_row(d, b, T++, best, q->req.prompt_ids[p], p, p >= first);
        }
        q->fed += c;
    }
    return T;
}

/* A new token for a generating sequence: eos, limits and stop strings. */
static g1_status take_token(driver *d, seq *q, int token)
{
    if (token == d->cfg->eos_id && !q->req.ignore_eos) {
        q->finish = "eos";
        return G1_OK;
    }
    q->gen[q->n_gen++] = token;
    if (d->o.tok) {
        G1_TRY(g1_tok_stream_push(&q->ts, token, &q->text));
        if (q->req.n_stop) {
            size_t hold = 0;
            long at = g1_stop_find(q->text.s ? q->text.s : "", q->text.n, q->searched,
                                   (const char *const *)q->req.stop, (size_t)q->req.n_stop, &hold);
            if (at >= 0) {
                /* the completion ends before a stop string, cut as lm-eval cuts */
                q->text.n = g1_stop_cut(q->text.s, q->text.n, (const char *const *)q->req.stop,
                                        (size_t)q->req.n_stop);
                q->text.s[q->text.n] = 0;
                q->finish = "stop";
                return G1_OK;
            }
            q->searched = q->text.n;
        }
    }
    if (q->n_gen >= q->max_new || q->req.n_prompt + q->n_gen >= d->context)
        q->finish = "length";
    return G1_OK;
}

/* The work of one logits row l (micro-batch b's row t), independent of every
 * other row of the step: generate: sample the next token (*token) and its
 * top log-probs; score: the log-prob of the next prompt token and whether
 * it was the argmax. Generate mode has one such row per sequence. */
static g1_status row_work(const driver *d, g1_sampler *sm, const mbatch *b, int t, const float *l, int32_t *token)
{
    int V = d->cfg->vocab_size, p = b->pos[t], am = -1;
    seq *q = &d->seqs[b->slot[t]];
    if (d->o.mode == G1_MODE_GENERATE) {
        /* keyed by (seed, request index in the input, token index): the
         * same token whatever the batch, layout, timing, thread or shard */
        G1_TRY(g1_sampler_sample(sm, l, &q->req.sample, (uint64_t)q->req.index, (uint64_t)q->n_gen, token));
        if (q->req.top_logprobs)
            G1_TRY(g1_logprobs(l, V, *token, NULL, q->req.top_logprobs,
                               q->top + (size_t)q->n_gen * (size_t)q->req.top_logprobs));
    } else if (p + 1 < q->req.n_prompt) {
        int target = q->req.prompt_ids[p + 1];
        G1_TRY(g1_row_logprob(l, V, target, &q->lp[p], &am));
        q->ok[p] = am == target;
    }
    return G1_OK;
}

/* A request's id as JSON text, as its result line gives it (malloc'd;
 * NULL: no memory): what its logits dump dataset records. */
static char *id_text(const json_t *id)
{
    return json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
}

/* Rows[0..m) of d->logits belong to micro-batch b's rows idx[0..m). The
 * rows' numeric work (a log-softmax or a sample over the vocabulary each:
 * 0.3 to 0.7 ms for Grok-1's) runs on rank 0's threads, one row per thread at
 * a time; then the new tokens are taken in row order. */
static g1_status use_logits(driver *d, const mbatch *b, const int *idx, int m)
{
    int V = d->cfg->vocab_size;
    /* a branch, not an if() clause beside num_threads(): LLVM's OpenMP
     * runtime (libomp 14) keeps the num_threads of a region an if(0) made
     * serial for the next parallel region, which then ran the engine's
     * attention with more threads than its scratch rows (tests/plan
     * plan_mem, built with clang: heap corruption) */
    if (m > 1 && d->n_samplers > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(d->n_samplers)
        for (int j = 0; j < m; j++) {
#ifdef _OPENMP
            g1_sampler *sm = d->samplers[omp_get_thread_num() % d->n_samplers];
#else
            g1_sampler *sm = d->samplers[0];
#endif
            d->row_st[j] = row_work(d, sm, b, idx[j], d->logits + (size_t)j * V, &d->row_tok[j]);
        }
    } else {
        for (int j = 0; j < m; j++)
            d->row_st[j] = row_work(d, d->samplers[0], b, idx[j], d->logits + (size_t)j * V, &d->row_tok[j]);
    }
    for (int j = 0; j < m; j++)
        if (d->row_st[j] != G1_OK) { /* again on this thread, for the message (failures are deterministic) */
            G1_TRY(row_work(d, d->samplers[0], b, idx[j], d->logits + (size_t)j * V, &d->row_tok[j]));
            return G1_FAIL(d->row_st[j], "logits row %d failed on a worker thread but not when redone", j);
        }
    if (d->o.mode == G1_MODE_GENERATE)
        for (int j = 0; j < m; j++)
            G1_TRY(take_token(d, &d->seqs[b->slot[idx[j]]], d->row_tok[j]));
    if (d->o.mode != G1_MODE_SCORE || !d->o.dump)
        return G1_OK;
    /* the rows of one request are consecutive here: write them as one piece */
    for (int j = 0; j < m;) {
        int s = b->slot[idx[j]], r = j;
        while (r < m && b->slot[idx[r]] == s)
            r++;
        const seq *q = &d->seqs[s];
        char *id = id_text(q->req.id);
        if (!id)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        g1_status st = d->o.dump->write(d->o.dump->ctx, (int64_t)(q->req.line - 1), q->req.n_prompt, b->pos[idx[j]],
                                        r - j, d->logits + (size_t)j * V, q->req.prompt_ids, id);
        free(id);
        G1_TRY(st);
        j = r;
    }
    return G1_OK;
}

/* Score mode without a dump on a backend that reduces rows on the device
 * (g1_engine_score_rows): the n rows at the front of b->x (rows b->need[j]
 * of the step) go to the engine with their targets, and only their
 * log-probs and argmaxes come back. What row_work does with a logits row. */
static g1_status score_on_device(driver *d, const mbatch *b, int n)
{
    for (int j = 0; j < n; j++) {
        int t = b->need[j], p = b->pos[t];
        const seq *q = &d->seqs[b->slot[t]];
        d->row_target[j] = p + 1 < q->req.n_prompt ? q->req.prompt_ids[p + 1] : -1;
    }
    G1_TRY(g1_engine_score_rows(d->e, n, b->x, d->row_target, d->row_lp, d->row_tok));
    for (int j = 0; j < n; j++) {
        int t = b->need[j], p = b->pos[t];
        seq *q = &d->seqs[b->slot[t]];
        if (d->row_target[j] >= 0) {
            q->lp[p] = d->row_lp[j];
            q->ok[p] = d->row_tok[j] == d->row_target[j];
        }
    }
    return G1_OK;
}

/* Build, embed and submit micro-batch m's next step, if it has work. */
static g1_status launch(driver *d, int m)
{
    mbatch *b = &d->mbs[m];
    if (d->o.stop && *d->o.stop)
        return G1_OK; /* interrupted: let the steps in flight finish, start none */
    G1_TRY(g1_fault_step());
    b->T = build_batch(d, m);
    if (!b->T && !b->n_fork)
        return G1_OK;
    g1_batch bt = {.T = b->T, .slot = b->slot, .pos = b->pos, .n_fork = b->n_fork, .fork = b->fork};
    double t0 = now_s();
    G1_TRY(g1_engine_embed(d->e, b->T, b->tok, b->x));
    double t1 = now_s();
    d->st->busy += t1 - t0;
    g1_trace_span(d->o.trace, "driver", "embed", t0, t1, m, b->T);
    G1_TRY(d->pipe.submit(d->pipe.ctx, m, &bt, b->x));
    if (d->o.route_log)
        for (int t = 0; t < b->T; t++)
            fprintf(d->o.route_log, "R %lld %d %d %lld\n", d->route_n, b->slot[t], b->pos[t],
                    (long long)d->seqs[b->slot[t]].k);
    d->route_n++;
    b->inflight = 1;
    d->st->steps++;
    return G1_OK;
}

/* Take the oldest micro-batch out of the pipeline: logits for the rows that
 * need them, then finish the sequences that are done. */
static g1_status complete(driver *d)
{
    int m;
    int D = d->cfg->emb_size;
    /* every in-flight micro-batch has its own x; wait writes into it */
    int oldest = -1;
    for (int i = 0; i < d->M; i++)
        if (d->mbs[i].inflight && (oldest < 0 || d->order[i] < d->order[oldest]))
            oldest = i;
    G1_TRY(d->pipe.wait(d->pipe.ctx, &m, d->mbs[oldest].x));
    if (m != oldest)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline returned micro-batch %d, expected %d", m, oldest);
    mbatch *b = &d->mbs[m];
    b->inflight = 0;
    double t0 = now_s();
    /* compact the rows that need logits to the front of x; keep their index */
    int n = 0;
    for (int t = 0; t < b->T; t++)
        if (b->need[t]) {
            if (n != t)
                memcpy(b->x + (size_t)n * D, b->x + (size_t)t * D, (size_t)D * sizeof *b->x);
            b->need[n++] = t;
        }
    if (d->row_lp) /* score on the device: log-probs and argmaxes come back, no logits */
        G1_TRY(score_on_device(d, b, n));
    else
        for (int j = 0; j < n; j += d->lrows) {
            int c = n - j < d->lrows ? n - j : d->lrows;
            G1_TRY(g1_engine_logits(d->e, c, b->x + (size_t)j * D, d->logits));
            G1_TRY(use_logits(d, b, b->need + j, c));
        }
    for (int s = m * d->B; s < (m + 1) * d->B; s++) {
        seq *q = &d->seqs[s];
        int done = d->o.mode == G1_MODE_SCORE ? q->busy && q->fed == feed_end(d, &q->req) : q->busy && q->finish;
        if (done)
            G1_TRY(seq_finish(d, s));
    }
    G1_TRY(out_flush(d, 0)); /* results held back for the dump, now written */
    double t1 = now_s();
    d->st->busy += t1 - t0;
    g1_trace_span(d->o.trace, "driver", "logits and tokens", t0, t1, m, n);
    return G1_OK;
}

/* Resume: the first requests must be those whose results are in the file. */
static g1_status skip_done(driver *d)
{
    size_t n = json_array_size(d->o.done_ids);
    for (size_t i = 0; i < n; i++) {
        g1_request r;
        int got = 0;
        G1_TRY(g1_request_next(&d->rd, &r, &got));
        if (!got)
            return G1_FAIL(G1_ERR_FORMAT, "the output already has %zu results, but the input has only %zu requests: "
                                          "is it the output of another input?", n, i);
        int same = json_equal(r.id, json_array_get(d->o.done_ids, i));
        long line = r.line;
        int rows = r.n_prompt, has = G1_DUMP_THERE;
        if (d->o.dump && d->o.dump->has && !d->o.dump_kept_checked) {
            char *id = id_text(r.id);
            has = id ? d->o.dump->has(d->o.dump->ctx, (int64_t)(line - 1), rows, r.prompt_ids, id) : G1_DUMP_NOMEM;
            free(id);
        }
        if (has == G1_DUMP_NOMEM) { /* not the dump's fault */
            g1_request_free(&r);
            return G1_FAIL(G1_ERR_NOMEM, "out of memory looking up the logits of result %zu (input line %ld) in the "
                                         "dump being continued", i + 1, line);
        }
        g1_request_free(&r);
        if (!same)
            return G1_FAIL(G1_ERR_FORMAT, "result %zu of the output to resume does not belong to the request on "
                                          "input line %ld (different id): is it the output of another input?",
                           i + 1, line);
        if (has != G1_DUMP_THERE)
            return G1_FAIL(G1_ERR_FORMAT,
                           "result %zu of the output to resume (input line %ld) has no logits in the dump being "
                           "continued (%s logits/%ld of %d rows, one per token: is the dump another run's?): start "
                           "afresh without --resume",
                           i + 1, line,
                           has == G1_DUMP_OTHER_TOKENS ? "other tokens than this request's in"
                           : has == G1_DUMP_OTHER_ID   ? "another request's id on"
                                                       : "no",
                           line - 1, rows);
    }
    d->n_read = d->q.next = (int64_t)n;
    d->st->skipped = (int64_t)n;
    return G1_OK;
}

static g1_status run_loop(driver *d)
{
    if (d->o.done_ids)
        G1_TRY(skip_done(d));
    long long submitted = 0;
    for (;;) {
        G1_TRY(admit(d));
        int inflight = 0;
        for (int m = 0; m < d->M; m++) {
            if (!d->mbs[m].inflight) {
                G1_TRY(launch(d, m));
                if (d->mbs[m].inflight)
                    d->order[m] = submitted++;
            }
            inflight += d->mbs[m].inflight;
        }
        if (!inflight)
            break;
        G1_TRY(complete(d));
        if (d->o.progress)
            d->o.progress(d->o.progress_ctx, d->st);
    }
    /* every finished request's result, once its logits are in the dump */
    G1_TRY(out_flush(d, 1));
    if (d->o.stop && *d->o.stop) {
        d->st->interrupted = 1;
        return G1_OK;
    }
    if (d->n_pend)
        return G1_FAIL(G1_ERR_INTERNAL, "scheduler stopped with request %lld not started", (long long)d->pend_k[0]);
    for (int s = 0; s < d->n_slots; s++)
        if (d->seqs[s].busy)
            return G1_FAIL(G1_ERR_INTERNAL, "scheduler stopped with request %lld unfinished",
                           (long long)d->seqs[s].k);
    if (d->q.next != d->n_read)
        return G1_FAIL(G1_ERR_INTERNAL, "scheduler wrote %lld of %lld results", (long long)d->q.next,
                       (long long)d->n_read);
    if (d->bad) /* a refused request: every one before it is done and written */
        return G1_FAIL(d->bad, "%s", d->bad_msg);
    return G1_OK;
}

static g1_status check_opts(const g1_driver_opts *o)
{
    if (o->micro_batches < 1 || o->batch_size < 1 || o->max_batch_tokens < 1 || o->max_new_tokens < 0)
        return G1_FAIL(G1_ERR_ARG, "driver: micro_batches, batch_size and max_batch_tokens must be >= 1, "
                                   "max_new_tokens >= 0");
    if (o->dump && o->mode != G1_MODE_SCORE)
        return G1_FAIL(G1_ERR_ARG, "the logits dump works in score mode only");
    return G1_OK;
}

static void mbatch_free(mbatch *b)
{
    free(b->tok);
    free(b->slot);
    free(b->pos);
    free(b->need);
    free(b->x);
    free(b->fork);
}

/* One of the scheduler's buffers, counted in its stats (buffer_bytes). */
static void *buf(driver *d, size_t n)
{
    void *p = malloc(n);
    if (p)
        d->st->buffer_bytes += n;
    return p;
}

static g1_status driver_alloc(driver *d)
{
    size_t B = (size_t)d->o.max_batch_tokens, D = (size_t)d->cfg->emb_size, V = (size_t)d->cfg->vocab_size;
    /* bound the logits buffer to 64 MiB whatever the vocabulary */
    size_t lrows = ((size_t)1 << 24) / V;
    d->lrows = (int)(lrows < 1 ? 1 : lrows > B ? B : lrows);
    d->seqs = calloc((size_t)d->n_slots, sizeof *d->seqs);
    d->mbs = calloc((size_t)d->M, sizeof *d->mbs);
    d->order = calloc((size_t)d->M, sizeof *d->order);
    d->logits = buf(d, (size_t)d->lrows * V * sizeof *d->logits);
    if (!d->seqs || !d->mbs || !d->order || !d->logits)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
    d->W = d->o.prefix_cache && d->o.mode == G1_MODE_SCORE ? 4 * d->n_slots + 16 : 1;
    d->pend = calloc((size_t)d->W, sizeof *d->pend);
    d->pend_k = calloc((size_t)d->W, sizeof *d->pend_k);
    d->pend_w = calloc((size_t)d->W, sizeof *d->pend_w);
    if (!d->pend || !d->pend_k || !d->pend_w)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
    if (d->o.prefix_cache) {
        d->held = calloc((size_t)d->n_slots, sizeof *d->held);
        d->n_held = calloc((size_t)d->n_slots, sizeof *d->n_held);
        if (!d->held || !d->n_held)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
        for (int s = 0; s < d->n_slots; s++)
            if (!(d->held[s] = buf(d, (size_t)d->context * sizeof **d->held)))
                return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
        d->E = d->o.kv_owners > 1 ? d->o.kv_owners : 1;
        d->cls_n = malloc((size_t)d->E * sizeof *d->cls_n);
        d->cls_c = malloc((size_t)d->E * sizeof *d->cls_c);
        d->fork_need = malloc((size_t)d->n_slots * sizeof *d->fork_need);
        d->freed_ring = malloc((size_t)d->n_slots * sizeof *d->freed_ring);
        if (!d->cls_n || !d->cls_c || !d->fork_need || !d->freed_ring)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
        if (d->o.mode == G1_MODE_SCORE && !d->o.dump) {
            d->held_lp = calloc((size_t)d->n_slots, sizeof *d->held_lp);
            d->held_ok = calloc((size_t)d->n_slots, sizeof *d->held_ok);
            d->n_lp = calloc((size_t)d->n_slots, sizeof *d->n_lp);
            if (!d->held_lp || !d->held_ok || !d->n_lp)
                return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
            for (int s = 0; s < d->n_slots; s++)
                if (!(d->held_lp[s] = buf(d, (size_t)d->context * sizeof **d->held_lp)) ||
                    !(d->held_ok[s] = buf(d, (size_t)d->context)))
                    return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
        }
    }
#ifdef _OPENMP
    d->n_samplers = omp_get_max_threads();
#else
    d->n_samplers = 1;
#endif
    d->samplers = calloc((size_t)d->n_samplers, sizeof *d->samplers);
    d->row_tok = buf(d, (d->lrows > (int)B ? (size_t)d->lrows : B) * sizeof *d->row_tok);
    if (d->o.mode == G1_MODE_SCORE && !d->o.dump && g1_engine_scores_on_device(d->e)) {
        d->row_lp = buf(d, B * sizeof *d->row_lp);
        d->row_target = buf(d, B * sizeof *d->row_target);
        if (!d->row_lp || !d->row_target)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
    }
    d->row_st = buf(d, (size_t)d->lrows * sizeof *d->row_st);
    if (!d->samplers || !d->row_tok || !d->row_st)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
    for (int i = 0; i < d->n_samplers; i++) {
        G1_TRY(g1_sampler_init(&d->samplers[i], (int32_t)V));
        d->st->buffer_bytes += (uint64_t)g1_sampler_bytes((int32_t)V);
    }
    for (int m = 0; m < d->M; m++) {
        mbatch *b = &d->mbs[m];
        b->tok = buf(d, B * sizeof *b->tok);
        b->slot = buf(d, B * sizeof *b->slot);
        b->pos = buf(d, B * sizeof *b->pos);
        b->need = buf(d, B * sizeof *b->need);
        b->x = buf(d, B * D * sizeof *b->x);
        b->fork = buf(d, B * sizeof *b->fork);
        if (!b->tok || !b->slot || !b->pos || !b->need || !b->x || !b->fork)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the scheduler's buffers");
    }
    return G1_OK;
}

/* The request reader's context for these options and model. */
static g1_request_ctx request_ctx(const g1_driver_opts *o, const g1_config *cfg)
{
    return (g1_request_ctx){.mode = o->mode,
                            .cfg = cfg,
                            .tok = o->tok,
                            .sample = o->sample,
                            .top_logprobs = o->top_logprobs,
                            .truncate_left = o->truncate_left,
                            .max_context = o->max_context,
                            .feed_all = o->dump != NULL,
                            .shard = o->shard,
                            .shards = o->shards,
                            .bounded = o->input_bounded,
                            .end_bytes = o->input_bytes,
                            .end_requests = o->input_requests};
}

g1_status g1_driver_nothing_left(const g1_config *cfg, const g1_driver_opts *opts, FILE *in, int *nothing_left)
{
    *nothing_left = 0;
    g1_driver_stats st_unused;
    driver d = {.cfg = cfg, .o = *opts, .st = &st_unused};
    g1_request_ctx rc = request_ctx(opts, cfg);
    g1_request_reader_init(&d.rd, in, &rc);
    g1_status st = opts->done_ids ? skip_done(&d) : G1_OK;
    g1_request r;
    int got = 0;
    if (st == G1_OK)
        st = g1_request_next(&d.rd, &r, &got);
    if (st == G1_OK && got)
        g1_request_free(&r);
    *nothing_left = st == G1_OK && !got;
    g1_request_reader_free(&d.rd);
    return st;
}

g1_status g1_driver_check_input(const g1_config *cfg, const g1_driver_opts *opts, FILE *in, FILE *report,
                                const char *prefix, int most, g1_input_stats *s)
{
    memset(s, 0, sizeof *s);
    int context = opts->max_context > 0 && opts->max_context < cfg->max_seq_len ? opts->max_context
                                                                                 : cfg->max_seq_len;
    g1_request_ctx rc = request_ctx(opts, cfg);
    g1_request_reader rd;
    g1_request_reader_init(&rd, in, &rc);
    g1_status st = G1_OK;
    for (;;) {
        g1_request r;
        int got = 0;
        st = g1_request_next(&rd, &r, &got);
        if (st == G1_ERR_FORMAT || st == G1_ERR_RANGE) { /* the line is read: on to the next */
            s->requests++;
            if (++s->refused <= most)
                fprintf(report, "%s%s\n", prefix, g1_last_error());
            g1_clear_error();
            continue;
        }
        if (st != G1_OK || !got)
            break;
        s->requests++;
        s->text += r.text;
        s->prompt_tokens += r.n_prompt;
        if (r.truncated)
            s->cut++, s->cut_tokens += r.truncated;
        if (r.n_prompt > s->longest)
            s->longest = r.n_prompt, s->longest_line = r.line;
        if (opts->mode == G1_MODE_GENERATE) {
            int mx = r.max_new_tokens >= 0 ? r.max_new_tokens : opts->max_new_tokens; /* as seq_start */
            s->new_tokens += mx < context - r.n_prompt ? mx : context - r.n_prompt;
        }
        g1_request_free(&r);
    }
    s->others = rd.seen - s->requests;
    s->lines = rd.line;
    g1_request_reader_free(&rd);
    return st;
}

g1_status g1_driver_run(g1_engine *e, g1_pipe_ops pipe, const g1_driver_opts *opts, FILE *in, FILE *out,
                        g1_driver_stats *stats)
{
    G1_TRY(check_opts(opts));
    memset(stats, 0, sizeof *stats);
    driver d = {.e = e, .pipe = pipe, .cfg = g1_engine_config(e), .o = *opts, .out = out, .st = stats};
    d.M = opts->micro_batches;
    d.B = opts->batch_size;
    d.n_slots = d.M * d.B;
    d.context = opts->max_context > 0 && opts->max_context < d.cfg->max_seq_len ? opts->max_context
                                                                              : d.cfg->max_seq_len;
    g1_request_ctx rc = request_ctx(opts, d.cfg);
    g1_request_reader_init(&d.rd, in, &rc);
    g1_status st = driver_alloc(&d);
    if (st == G1_OK)
        st = run_loop(&d);
    stats->input_left = d.rd.left;
    for (int s = 0; d.seqs && s < d.n_slots; s++)
        seq_clear(&d.seqs[s]);
    for (int64_t i = 0; i < d.q.cap; i++)
        free(d.q.line[i]);
    free(d.q.line);
    free(d.q.dump_k);
    free(d.seqs);
    for (int m = 0; d.mbs && m < d.M; m++)
        mbatch_free(&d.mbs[m]);
    free(d.mbs);
    free(d.order);
    free(d.logits);
    for (int s = 0; d.held && s < d.n_slots; s++)
        free(d.held[s]);
    free(d.held);
    free(d.n_held);
    free(d.cls_n);
    free(d.cls_c);
    free(d.fork_need);
    for (int s = 0; d.held_lp && s < d.n_slots; s++)
        free(d.held_lp[s]);
    for (int s = 0; d.held_ok && s < d.n_slots; s++) /* NULL when its allocation failed */
        free(d.held_ok[s]);
    free(d.held_lp);
    free(d.held_ok);
    free(d.n_lp);
    for (int i = 0; i < d.n_pend; i++)
        g1_request_free(&d.pend[i]);
    free(d.pend);
    free(d.pend_k);
    free(d.pend_w);
    free(d.freed_ring);
    for (int i = 0; d.samplers && i < d.n_samplers; i++)
        g1_sampler_free(d.samplers[i]);
    free(d.samplers);
    free(d.row_tok);
    free(d.row_st);
    free(d.row_lp);
    free(d.row_target);
    g1_request_reader_free(&d.rd);
    return st;
}
