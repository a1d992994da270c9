/* libFuzzer target for the release pickle scanner (checkpoints/pickle_scan.h):
 * any bytes must give G1_OK or a recorded failure, never a crash, a hang or
 * a read outside the input; a G1_OK result must describe payloads inside it.
 * Link with g1_pickle_dep (checkpoints/meson.build); no HDF5 needed. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pickle_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g1_pickle_content pc;
    g1_status st = g1_pickle_scan_mem(data, size, "fuzz", &pc);
    if (st == G1_OK) {
        if (pc.n_arrays < 1 || pc.n_arrays > 2)
            abort();
        for (int i = 0; i < pc.n_arrays; i++) {
            const g1_pickle_array *a = &pc.arr[i];
            if (a->offset > size || a->nbytes > size - a->offset)
                abort();
        }
    } else if (!g1_last_error()[0]) {
        abort(); /* every failure carries a message */
    }
    g1_clear_error();
    return 0;
}
