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

#endif
