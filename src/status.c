/* Per-thread error message storage behind G1_FAIL / g1_last_error. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g1_msg[2048]; /* a refusal with a grok1-plan command in its hint passes 1024 */
static _Thread_local char g1_where[256];

g1_status g1_fail_at(g1_status st, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g1_msg, sizeof g1_msg, fmt, ap);
    va_end(ap);
    snprintf(g1_where, sizeof g1_where, "%s:%d", file, line);
    return st;
}

g1_status g1_fail_copy(g1_status st, const char *msg, const char *where)
{
    snprintf(g1_msg, sizeof g1_msg, "%s", msg);
    snprintf(g1_where, sizeof g1_where, "%s", where);
    return st;
}

const char *g1_last_error(void) { return g1_msg; }
const char *g1_last_error_where(void) { return g1_where; }
void g1_clear_error(void) { g1_msg[0] = 0; g1_where[0] = 0; }

const char *g1_bytes_text(char *buf, size_t n, double bytes)
{
    const double K = 1024.0, M = K * K, G = M * K;
    if (bytes >= G)
        snprintf(buf, n, "%.2f GiB", bytes / G);
    else if (bytes >= M)
        snprintf(buf, n, "%.1f MiB", bytes / M);
    else if (bytes >= K)
        snprintf(buf, n, "%.1f KiB", bytes / K);
    else
        snprintf(buf, n, "%.0f byte%s", bytes, bytes == 1 ? "" : "s");
    return buf;
}

const char *g1_status_name(g1_status st)
{
    switch (st) {
    case G1_OK: return "ok";
    case G1_ERR_NOMEM: return "out of memory";
    case G1_ERR_IO: return "i/o error";
    case G1_ERR_FORMAT: return "format error";
    case G1_ERR_ARG: return "bad argument";
    case G1_ERR_RANGE: return "out of range";
    case G1_ERR_CUDA: return "cuda error";
    case G1_ERR_MPI: return "mpi error";
    case G1_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}
