/* Files that survive the loss of the node: a file that appears under its
 * final name (by rename) must have its bytes on the disk first, and the
 * rename itself must reach the disk, or a power loss soon after the end of
 * a run can leave a final name over an empty or short file (ext4 or XFS
 * with delayed allocation, a Lustre client's cache) that looks complete. */
#ifndef G1_DURABLE_H
#define G1_DURABLE_H

#include <stddef.h>
#include <stdio.h>

#include "status.h"

/* fsync(path). 0, or -1 with errno; file systems that cannot fsync
 * (EINVAL, EROFS, ENOTSUP) count as done. */
int g1_fsync_path(const char *path);

/* The directory path is in, into dir ("." for a bare name, "/" for a
 * name right under the root). */
void g1_dir_of(const char *path, char *dir, size_t n);

/* fsync the directory that holds path (where a rename or a new name is
 * recorded). Errors ignored: some file systems cannot fsync a directory. */
void g1_fsync_dir_of(const char *path);

/* `from` synced, renamed to `to`, the directory synced. On failure `from`
 * is where it was (the caller keeps or removes it); the message names both
 * files. */
g1_status g1_rename_durable(const char *from, const char *to);

/* Create the temporary file of an output, beside it: PATH.tmp.PID.RANDOM,
 * made with O_EXCL (mode 0666 less the umask), so that no other process
 * writes it even when several runs are given one name (each renames its
 * own over PATH, whole). The descriptor, and the name in *tmp (malloc'd);
 * -1 with errno (and *tmp NULL) when none can be made. */
int g1_create_temp(const char *path, char **tmp);

/* Open path for writing as a new file of this process's own: whatever is
 * at that name goes first (a file left by a killed run, or a symbolic link
 * planted there, which fopen(path, "w") would write through), then the file
 * is created exclusively (O_EXCL, mode 0666 less the umask). For the fixed
 * temporary names written under an output's lock (OUT.meta.json.tmp,
 * PLAN.json.partial). NULL with errno when it cannot be made. */
FILE *g1_fopen_fresh(const char *path);

/* Open a file this process's tool made earlier and now continues
 * (OUT.partial of an interrupted run, being resumed), with mode "a" or
 * "r+", refusing a symbolic link at that name: the tool never makes one
 * there, and writing through it would change the file it names. NULL with
 * errno (ELOOP for a link). */
FILE *g1_fopen_own(const char *path, const char *mode);

/* An output that is not a regular file (a character device such as
 * /dev/null, a FIFO, a socket), or that names one of the process's
 * descriptors (/dev/stdout, /dev/fd/N, /proc/self/fd/N, or a link to one),
 * even one redirected to a regular file: to be written directly, with no
 * PATH.partial and rename, which would replace the device, pipe or link
 * with a regular file (as root, /dev/null itself). "-" is not one (the
 * callers take it for stdout). */
int g1_path_is_stream(const char *path);

/* Where an output named by a symbolic link is written: the file the link
 * names (through a chain of links), so that the temporary file goes beside
 * it and the rename replaces it, not the link. *out: a malloc'd canonical
 * name, or NULL when path is not a symbolic link. A dangling link names the
 * file it would create (as `> LINK` in a shell does), so that an output not
 * made yet, or removed, is still found through its link (a resume); its
 * directory must exist. G1_ERR_ARG with a message naming the link when it
 * cannot be followed: a loop, a directory that does not exist. */
g1_status g1_path_through_link(const char *path, char **out);

/* The canonical absolute name of the file path names or would name: the
 * file at the end of a chain of links (g1_path_through_link), in its
 * directory's canonical name (realpath: no ".", "..", links or doubled
 * slashes), whether or not the file exists. *out: malloc'd. G1_ERR_ARG
 * when the directory does not exist or a link cannot be followed. */
g1_status g1_path_canonical(const char *path, char **out);

/* The name of `to` relative to the directory `from_dir`, both canonical
 * absolute names (g1_path_canonical; realpath): "l.h5", "sub/l.h5",
 * "../b/l.h5". malloc'd; NULL when out of memory. */
char *g1_path_relative(const char *from_dir, const char *to);

/* An HDF5 output named on a command line (grok1-mkckpt --out, grok1-convert's
 * and grok1-link's OUT.h5), checked before any work. An HDF5 file cannot be
 * written to a stream: a device (/dev/null), a FIFO, a socket, a name of a
 * descriptor (/dev/stdout) or a directory, or a link to one, is refused
 * (G1_ERR_ARG, a message that starts with `what` and path and says what it
 * is), never renamed over. A symbolic link is written through
 * (g1_path_through_link): *out is the malloc'd name of the file to write
 * (the temporary goes beside it and the rename replaces it, the link stays),
 * or NULL when path is that name itself. */
g1_status g1_h5_output_path(const char *what, const char *path, char **out);

/* 1 when a and b name one existing file (the same device and inode, through
 * any links or other paths), else 0 (either missing). */
int g1_same_file(const char *a, const char *b);

#endif
