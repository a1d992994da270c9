/* File names that must not meet: an output of grok1-run that is also one of
 * its inputs (or another of its outputs) would be overwritten by the rename
 * that completes the run. */
#ifndef G1_PATHS_H
#define G1_PATHS_H

/* 1 when a and b name the same file: the same device and inode when both
 * exist; otherwise the same canonical directory and the same last
 * component (so "out.jsonl" and "./out.jsonl" meet before either exists). */
int g1_path_same(const char *a, const char *b);

/* 1 when path exists and is a directory */
int g1_path_is_dir(const char *path);

#include "status.h"

/* One writer per output: OUT.lock is locked (fcntl, which a killed process
 * releases) for the writer's life and removed at its end, so a second
 * grok1-run or grok1-merge on the same output (a job submitted twice, a
 * requeue while the first still runs) is refused instead of mixing its
 * writes with the first's. A file system without locks gets a warning and
 * the writer goes on unprotected. */
typedef struct g1_out_lock {
    char *path; /* OUT.lock; NULL when none */
    int fd, held;
} g1_out_lock;
/* Take OUT.lock; `hint` ends the refusal ("let it finish, or stop it and
 * HINT"), `tool` starts the warning. Messages name the holder's process
 * when the lock says. */
g1_status g1_lock_output(const char *output, const char *tool, const char *hint, g1_out_lock *l);
/* Remove and release it (nothing when not taken). */
void g1_unlock_output(g1_out_lock *l);

#endif
