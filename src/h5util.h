/* Small HDF5 helpers shared by the checkpoint reader and writers (library
 * g1_h5 only: includes no HDF5 header itself). */
#ifndef G1_H5UTIL_H
#define G1_H5UTIL_H

/* HDF5's innermost error description into buf (256 bytes); call right after
 * the failing call, before another HDF5 call clears the error stack. */
void g1_h5_detail(char buf[256]);

#endif
