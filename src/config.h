/* Grok-1 hyper-parameters: the immutable description of a model, read from a
 * checkpoint's attributes or from a preset. Names match the HDF5 attributes. */
#ifndef G1_CONFIG_H
#define G1_CONFIG_H

#include <stddef.h>

#include "status.h"

typedef struct g1_config {
    int vocab_size;           /* V */
    int emb_size;             /* D = num_q_heads * key_size */
    int num_layers;           /* L */
    int num_q_heads;          /* Hq */
    int num_kv_heads;         /* Hkv, divides Hq */
    int key_size;             /* K, head dim (also the value size), even */
    int ffn_size;             /* F, expert hidden width */
    int num_experts;          /* E */
    int num_selected_experts; /* top-k, 2 for Grok-1 */
    int max_seq_len;
    double embedding_multiplier;
    double output_multiplier;
    double attn_output_multiplier;
    double attn_logit_cap;
    double rope_base;
    double rms_eps;
    int pad_id, bos_id, eos_id;
} g1_config;

/* One row per hyper-parameter, for readers, writers and `--set key=value`. */
typedef enum { G1_PARAM_INT, G1_PARAM_DOUBLE } g1_param_type;
typedef struct g1_param_desc {
    const char *name;
    g1_param_type type;
    size_t offset; /* into g1_config */
} g1_param_desc;

extern const g1_param_desc g1_params[];
extern const int g1_num_params;

/* The longest context a model may have: 128 x Grok-1's 8192 (positions
 * and their sums stay far from INT_MAX; a cache that large is refused by
 * the memory checks long before). */
#define G1_MAX_SEQ_LEN (1 << 20)
#define G1_FORMAT_NAME "grok1-hdf5"
#define G1_FORMAT_VERSION 1

/* Presets: "tiny" (tests, < 1 MB), "small" (benchmarks, ~1 GB, V = 131072),
 * "grok-1" (the released shapes). */
g1_status g1_config_preset(const char *name, g1_config *cfg);
/* Set one hyper-parameter from text ("ffn_size", "96"). */
g1_status g1_config_set(g1_config *cfg, const char *key, const char *value);
/* Check internal consistency (divisibility, ranges); message names the field. */
g1_status g1_config_validate(const g1_config *cfg);
/* Number of row blocks of each quantised matrix's scale in generated models
 * (the release: 8 for attn_o and moe_down, 1 otherwise), limited to what
 * divides the rows. */
int g1_config_default_blocks(const g1_config *cfg, int rows, int release_blocks);
void g1_config_print(const g1_config *cfg, void *file /* FILE* */);

#endif
