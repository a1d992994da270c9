/* Hyper-parameters from `--config`: a preset name
 * (tiny, small, grok-1) or a JSON object of hyper-parameters by the HDF5
 * attribute names, over the grok-1 values. Used by grok1-mkckpt, grok1-convert
 * and grok1-plan. */
#ifndef G1_CONFIG_JSON_H
#define G1_CONFIG_JSON_H

#include "config.h"

/* A JSON object of hyper-parameters over the grok-1 values (unknown key: error). */
g1_status g1_config_from_json(const char *path, g1_config *cfg);
/* A preset name first, otherwise a JSON file; not validated (callers may override). */
g1_status g1_config_from_arg(const char *arg, g1_config *cfg);

#endif
