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

#include "config_json.h"
#include "plan.h"

/* A preset or a JSON file of hyper-parameters (config_json.h), validated. */
g1_status g1_plan_load_config(const char *spec, g1_config *cfg)
{
    G1_TRY(g1_config_from_arg(spec, cfg));
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
    int over = end != text && !*end && v > 0 && (v == HUGE_VAL || !(v * mul <= G1_PLAN_MAX_SIZE));
    if (over) /* infinite, or past what a plan's figures (integers below 2^63) hold */
        return G1_FAIL(G1_ERR_ARG, "%s %s: too large; the largest size taken is 1048576T (2^60 bytes)", what, text);
    if (errno || end == text || *end || !isfinite(v) || v < 0)
        return G1_FAIL(G1_ERR_ARG, "%s %s: expected a size such as 80G, 512M or a byte count", what, text);
    *bytes = v * mul;
    return G1_OK;
}
