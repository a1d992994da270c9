/* Small HDF5 helpers shared by the checkpoint reader and writers (library
 * g1_h5 only). */
#ifndef G1_H5UTIL_H
#define G1_H5UTIL_H

#include <hdf5.h>

#include "config.h"

/* HDF5's innermost error description into buf (256 bytes); call right after
 * the failing call, before another HDF5 call clears the error stack. */
void g1_h5_detail(char buf[256]);

/* The root attributes of format v1 on `loc`: format, format_version and
 * every hyper-parameter (int32, float64, a variable-length UTF-8 string). */
herr_t g1_h5_put_config(hid_t loc, const g1_config *cfg);

/* fsync a closed file before a rename makes it visible (errors ignored:
 * the rename still orders the writes on most file systems). */
void g1_h5_sync_file(const char *path);

#endif
