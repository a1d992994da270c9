/* Small inputs of the planner's command line that grok1-run shares: the
 * model from a preset or a JSON file of hyper-parameters, and byte sizes
 * such as "80G". No I/O beyond reading that JSON file. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "plan.h"

/* Hyper-parameters from a JSON object, over the grok-1 values. */
static g1_status config_from_json(const char *path, g1_config *cfg)
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

g1_status g1_plan_load_config(const char *spec, g1_config *cfg)
{
    if (g1_config_preset(spec, cfg) == G1_OK)
        g1_clear_error();
    else {
        size_t n = strlen(spec);
        FILE *f = fopen(spec, "r");
        if (!f && !(n > 5 && !strcmp(spec + n - 5, ".json")))
            return G1_FAIL(G1_ERR_ARG, "--config %s: not a preset (tiny, small, grok-1) nor a JSON file", spec);
        if (f)
            fclose(f);
        G1_TRY(config_from_json(spec, cfg));
    }
    g1_status st = g1_config_validate(cfg);
    if (st != G1_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", g1_last_error());
        return G1_FAIL(G1_ERR_ARG, "config %s: %s", spec, msg);
    }
    return G1_OK;
}

g1_status g1_plan_parse_size(const char *what, const char *text, double *bytes)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    double mul = 1;
    if (!errno && end != text) {
        switch (*end) {
        case 'k': case 'K': mul = 1024.0; end++; break;
        case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
        case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
        case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
        default: break;
        }
        if (mul > 1 && !strcasecmp(end, "iB"))
            end += 2;
        else if (!strcasecmp(end, "B"))
            end += 1;
    }
    if (errno || end == text || *end || !isfinite(v) || v < 0)
        return G1_FAIL(G1_ERR_ARG, "%s %s: expected a size such as 80G, 512M or a byte count", what, text);
    *bytes = v * mul;
    return G1_OK;
}
