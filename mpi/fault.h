/* Fault injection for tests: GROK1_FAULT="RANK:STEP[:kill|:stop]" makes rank
 * RANK fail when it starts its STEP-th micro-batch step (1-based): with an
 * error (the job must end cleanly with a message naming the rank) or, with
 * ":kill", by SIGKILL (the job must not hang); ":stop" holds it there by
 * SIGSTOP instead, for a test to change something before its SIGCONT.
 * Unset: no effect. */
#ifndef G1_FAULT_H
#define G1_FAULT_H

#include "status.h"

/* Read GROK1_FAULT for this rank; a malformed value is an error. */
g1_status g1_fault_init(int rank);
/* Count one step; fail or die here if this is the planned one. */
g1_status g1_fault_step(void);

#endif
