/* Small HDF5 helpers shared by the checkpoint reader and writers (library
 * g1_h5 only). */
#ifndef G1_H5UTIL_H
#define G1_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* What HDF5's error stack held when g1_h5_detail read it. Callers decide
 * on this, never on the words of the text (which are HDF5's, or ours). */
typedef enum {
    G1_H5_SAID_NOTHING = 0, /* no description on the stack (HDF5 recorded nothing: it may not, without memory) */
    G1_H5_SAID_ERROR,       /* a failure that is not an allocation's */
    G1_H5_SAID_NOMEM,       /* an allocation failure (g1_h5_out_of_memory): not the file's fault */
} g1_h5_said;
/* HDF5's innermost error description into buf (256 bytes), and what kind
 * of failure the stack holds; call right after the failing call, before
 * another HDF5 call clears the error stack. The text is "unknown HDF5
 * error" for G1_H5_SAID_NOTHING, and starts "out of memory" for
 * G1_H5_SAID_NOMEM, so that a message says so. */
g1_h5_said g1_h5_detail(char buf[256]);
/* 1 when HDF5's error stack holds an allocation failure: HDF5's own (minor
 * class H5E_CANTALLOC or H5E_NOSPACE, which HDF5 gives when its malloc
 * fails) or one of ours that g1_h5_nomem put there; else 0. */
int g1_h5_out_of_memory(void);
/* Puts an allocation failure of ours on HDF5's error stack (H5E_RESOURCE,
 * H5E_NOSPACE, "out of memory"): for a failed allocation inside a path whose
 * caller reads HDF5's stack for its message (an iteration's callback, a
 * helper that returns -1), so that the message says out of memory. */
void g1_h5_nomem(void);

/* The root attributes of format v1 on `loc`: format, format_version,
 * every hyper-parameter (int32, float64, a variable-length UTF-8 string)
 * and their checksum (G1_H5_PARAMS_CRC_ATTR). */
herr_t g1_h5_put_config(hid_t loc, const g1_config *cfg);

/* The checksum of the hyper-parameters (root attribute, uint32; written
 * since 2026-12-03): zlib's CRC-32 of, for each hyper-parameter in the
 * order of g1_params (docs/CHECKPOINT.md), its name, a NUL byte and its
 * value as 8 little-endian bytes (int64 for an integer, IEEE float64). A
 * changed rope_base or attention cap loads and computes something else
 * without it. */
#define G1_H5_PARAMS_CRC_ATTR "params_crc32"
uint32_t g1_h5_params_crc(const g1_config *cfg);
/* Read the params checksum of `loc` into *v: 1 read, 0 none there, -1 not
 * a uint32 scalar or unreadable. */
int g1_h5_get_params_crc(hid_t loc, uint32_t *v);
/* Put the params checksum of cfg on `loc` (replacing one there). */
herr_t g1_h5_put_params_crc(hid_t loc, const g1_config *cfg);

/* The hyperslab [start, start + count) of dataset d (rank dimensions),
 * read into or written from buf (count elements, row-major) as memtype. */
herr_t g1_h5_read_slab(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count, void *buf);
/* Why a read of dataset d just failed, into buf (n bytes): HDF5's innermost
 * error description, or for a dataset whose data lies in external files
 * (HDF5 external storage, H5Pset_external; our writers never make one) the
 * file that cannot be opened (then 1, else 0). *said (may be NULL): what
 * g1_h5_detail found on the stack. Call right after the failing read. */
int g1_h5_read_detail(hid_t d, char *buf, size_t n, g1_h5_said *said);
herr_t g1_h5_write_slab(hid_t d, hid_t memtype, int rank, const hsize_t *start, const hsize_t *count,
                        const void *buf);

/* Checksums of a checkpoint's datasets (docs/CHECKPOINT.md): attribute
 * "crc32" on a dataset, uint32 values: one per expert for the moe datasets
 * (over that expert's slab), else one (over the whole dataset). Each is
 * zlib's CRC-32 (IEEE 802.3; what Python's zlib.crc32 gives) of the
 * elements in row-major order as int8 bytes or little-endian float32. */
#define G1_H5_CRC_ATTR "crc32"

/* zlib's CRC-32 of n bytes (computed by libdeflate), from 0; large buffers
 * in pieces on the OpenMP threads, joined. */
uint32_t g1_h5_crc32(const void *p, size_t n);
/* The same on the calling thread alone (for a thread of its own). */
uint32_t g1_h5_crc32_here(const void *p, size_t n);
/* The CRC-32 of a then b from crc(a), crc(b) and b's length. */
uint32_t g1_h5_crc32_join(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);
/* A 1-D integer attribute of n values (ftype in the file, mtype in
 * memory) on loc, replacing one that is there. */
herr_t g1_h5_put_ints(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v, size_t n);
/* The integer attribute `name` of loc (a scalar or 1-D) read as memtype
 * into v (at most max values; v NULL: not read): how many values it has,
 * 0 when it is absent, -1 when it is empty, not integers, longer than max
 * or unreadable. */
int g1_h5_get_ints(hid_t loc, const char *name, hid_t memtype, void *v, size_t max);
/* A variable-length UTF-8 string attribute (as h5py writes a Python str). */
herr_t g1_h5_put_string(hid_t loc, const char *name, const char *s);
/* Write the "crc32" attribute (n values) on an open dataset, replacing one
 * that is there. */
herr_t g1_h5_put_crcs(hid_t dset, const uint32_t *v, size_t n);
/* Read the "crc32" attribute of an open dataset into v (at most max
 * values): the number of values, 0 when the dataset has none, -1 when it is
 * not an integer array of at most max values or cannot be read. */
int g1_h5_get_crcs(hid_t dset, uint32_t *v, size_t max);
/* The CRC-32 of dataset d (rank 1 to 3, dims its shape) read as memtype
 * (esize bytes an element: int8 or float32), in reads of at most 64 MiB
 * (a longer row in pieces): of the whole dataset when e < 0, else of index e
 * of its first dimension (one expert). *bytes (may be NULL) grows by the bytes read.
 * 0, or -1 when a read fails (or no memory). */
int g1_h5_crc_of(hid_t d, hid_t memtype, size_t esize, int rank, const hsize_t *dims, int e, uint32_t *crc,
                 unsigned long long *bytes);
/* 1 when the file holds every byte dataset d's shape declares (compressed:
 * every chunk; in external files: not told), else 0 with why (n bytes; may
 * be NULL) saying so: a forged shape would read terabytes of fill values. */
int g1_h5_stored(hid_t d, char *why, size_t n);

/* The string attribute `name` of loc (fixed or variable length, at most
 * max bytes), malloc'd; NULL when it is absent, not a string, longer or
 * unreadable, or when memory ran out (then *nomem, which may be NULL, is
 * set to 1; else to 0). */
char *g1_h5_get_string(hid_t loc, const char *name, size_t max, int *nomem);

/* 1 when the root attribute "format" of file is the string "grok1-logits"
 * (a logits dump of grok1-run; fixed or variable length), else 0; -1 when
 * memory ran out reading it. */
int g1_h5_is_logits_dump(hid_t file);

/* ---- a full disk ----
 * HDF5 before 1.14 (Debian 12 has 1.10.8) cannot close a file once a write
 * into it failed for want of space (a full disk, a quota): the close fails
 * with the file half freed, and HDF5's shutdown (at exit, or inside
 * MPI_Finalize) then crashes on it. So the writers reserve the space a
 * write needs before HDF5 makes it, and stop cleanly, the file whole,
 * when there is none; and a tool whose close failed anyway ends with
 * g1_h5_end instead of a crash. */

/* The descriptor of a file open through HDF5's default sec2 driver (not
 * to be closed: HDF5's); -1 with another driver. */
int g1_h5_fd(hid_t file);
/* Room for `bytes` more past the end of `file` (open for writing through
 * HDF5's default sec2 driver), taken from the file system now: fallocate
 * with FALLOC_FL_KEEP_SIZE reserves the blocks without changing the file's
 * size, so HDF5's writes into them cannot fail for space. 0: reserved, or
 * this file system cannot reserve and statvfs shows at least `bytes` free
 * (or the file is not a plain one); -1: no room (errno ENOSPC or EDQUOT).
 * *avail (may be NULL): the room the file has: the bytes statvfs shows
 * free and those the file holds reserved past its end; -1 when unknown. */
int g1_h5_reserve(hid_t file, uint64_t bytes, double *avail);
/* Give back what g1_h5_reserve reserved past the end of the closed file
 * at path (errors ignored). */
void g1_h5_release(const char *path);
/* H5Fclose that remembers a failure (g1_h5_end). */
herr_t g1_h5_close(hid_t file);
/* Where a tool returns `code`: when closing a file failed (a write after
 * the space ran out, a race with another writer, a quota on a file system
 * that cannot reserve), or g1_h5_skip_shutdown was called, stdio is
 * flushed and the process ends with _exit(code), before HDF5's shutdown
 * can crash; otherwise nothing. */
void g1_h5_end(int code);
/* HDF5's state is not to be trusted at its shutdown (an open through an
 * external link failed: ckpt_read.c): g1_h5_end ends the process. */
void g1_h5_skip_shutdown(void);

/* File access for reading checkpoints: file locking off (many ranks open
 * the file at once, on file systems without flock). Close with H5Pclose. */
hid_t g1_h5_read_fapl(void);

/* The attribute of a checkpoint in parts (grok1-link): the fingerprint of
 * each layer's attn_norm as the linker read it (float32 bytes, layers
 * 0..L-1), then of the final norm: L + 1 values. The reader compares what
 * it loads through the links, so a part replaced by another file of the
 * same name is refused. */
#define G1_H5_PART_FP_ATTR "part_norms_fnv1a64"

/* Whether a file named `file` (an external link's target in the checkpoint
 * at ckpt_path) is where HDF5 looks for it: the name itself (absolute, or
 * from the current directory), in a folder of HDF5_EXT_PREFIX, or beside
 * the checkpoint; an absolute name also by its last part. HDF5's innermost
 * error for a missing part depends on where its last lookup failed. */
int g1_h5_part_present(const char *ckpt_path, const char *file);

/* The layer a member of group "layers" is named for: its index when the
 * name is one's canonical name ("00", "01", ..., "100"), else -1. */
int g1_h5_layer_index(const char *name);

/* The name of the file `obj` lives in, into buf (n bytes; "" when unknown). */
void g1_h5_file_name(hid_t obj, char *buf, size_t n);

#endif
