/* `--config` of the checkpoint tools: presets or a JSON object of
 * hyper-parameters (jansson), each key set through g1_config_set. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config_json.h"

g1_status g1_config_from_json(const char *path, g1_config *cfg)
{
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root)
        return G1_FAIL(G1_ERR_ARG, "config %s: %s (line %d)", path, err.text, err.line);
    g1_status st = g1_config_preset("grok-1", cfg);
    if (!json_is_object(root))
        st = G1_FAIL(G1_ERR_ARG, "config %s: expected a JSON object of hyper-parameters", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (st != G1_OK)
            break;
        char text[64];
        if (json_is_integer(v))
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
            snprintf(text, sizeof text, "%.17g", json_real_value(v));
        else {
            st = G1_FAIL(G1_ERR_ARG, "config %s: '%s' must be a number", path, key);
            break;
        }
        if (g1_config_set(cfg, key, text) != G1_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", g1_last_error());
            st = G1_FAIL(G1_ERR_ARG, "config %s: %s", path, msg);
        }
    }
    json_decref(root);
    return st;
}

g1_status g1_config_from_arg(const char *arg, g1_config *cfg)
{
    struct stat sb;
    size_t n = strlen(arg);
    if (g1_config_preset(arg, cfg) == G1_OK) {
        g1_clear_error();
        return G1_OK;
    }
    if ((n > 5 && !strcmp(arg + n - 5, ".json")) || !stat(arg, &sb))
        return g1_config_from_json(arg, cfg);
    return G1_FAIL(G1_ERR_ARG, "--config %s: not a preset (tiny, small, grok-1) nor a JSON file", arg);
}
