/* GROK1_FAULT: see fault.h. */
#include "fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int armed, kill_it, stop_it;
static long at_step, steps;

g1_status g1_fault_init(int rank)
{
    const char *v = getenv("GROK1_FAULT");
    armed = 0;
    steps = 0;
    if (!v || !*v)
        return G1_OK;
    int r = -1, n = 0;
    long s = 0;
    char how[16] = "";
    if (sscanf(v, "%d:%ld%n", &r, &s, &n) < 2 || r < 0 || s < 1 ||
        (v[n] && (sscanf(v + n, ":%15s", how) != 1 || (strcmp(how, "kill") && strcmp(how, "stop")))))
        return G1_FAIL(G1_ERR_ARG, "GROK1_FAULT=%s: expected RANK:STEP, RANK:STEP:kill or RANK:STEP:stop", v);
    armed = r == rank;
    at_step = s;
    kill_it = !strcmp(how, "kill");
    stop_it = !strcmp(how, "stop");
    return G1_OK;
}

g1_status g1_fault_step(void)
{
    if (!armed || ++steps != at_step)
        return G1_OK;
    if (kill_it)
        raise(SIGKILL);
    if (stop_it) { /* the test changes something while the run is held, then sends SIGCONT */
        raise(SIGSTOP);
        return G1_OK;
    }
    return G1_FAIL(G1_ERR_INTERNAL, "injected fault at step %ld (GROK1_FAULT)", steps);
}
