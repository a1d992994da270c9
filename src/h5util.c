/* HDF5 error text for our messages. */
#include "h5util.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <unistd.h>

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc)
        snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

void g1_h5_detail(char buf[256])
{
    snprintf(buf, 256, "unknown HDF5 error");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
}

static herr_t put_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return e;
}

/* A variable-length UTF-8 string, as h5py writes a Python str. */
static herr_t put_str_attr(hid_t loc, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    herr_t e = put_attr(loc, name, t, t, &s);
    H5Tclose(t);
    return e;
}

herr_t g1_h5_put_config(hid_t loc, const g1_config *cfg)
{
    herr_t e = put_str_attr(loc, "format", G1_FORMAT_NAME);
    int v = G1_FORMAT_VERSION;
    if (e >= 0)
        e = put_attr(loc, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &v);
    for (int i = 0; i < g1_num_params && e >= 0; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *src = (const char *)cfg + p->offset;
        if (p->type == G1_PARAM_INT)
            e = put_attr(loc, p->name, H5T_STD_I32LE, H5T_NATIVE_INT, src);
        else
            e = put_attr(loc, p->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, src);
    }
    return e;
}

uint64_t g1_h5_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

hid_t g1_h5_read_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    if (fapl >= 0)
        H5Pset_file_locking(fapl, 0, 1);
#endif
    return fapl;
}

void g1_h5_file_name(hid_t obj, char *buf, size_t n)
{
    buf[0] = 0;
    hid_t f = H5Iget_file_id(obj);
    if (f < 0)
        return;
    if (H5Fget_name(f, buf, n) < 0)
        buf[0] = 0;
    H5Fclose(f);
}

void g1_h5_sync_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}
