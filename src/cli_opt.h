/* Long options named in full. getopt_long takes any unambiguous prefix of a
 * long option ("--out" for --output); grok1-run, grok1-merge and grok1-plan
 * do not: a script that checks a command line by option name (grok1-job.sh
 * refuses --output in GROK1_ARGS, as the script sets it) would let a prefix
 * through, and a prefix that is unambiguous today may not be once an option
 * is added. */
#ifndef G1_CLI_OPT_H
#define G1_CLI_OPT_H

#include <getopt.h>
#include <string.h>

/* Call right after getopt_long returned long option `name` (longindex >= 0;
 * optind and optarg as it left them): 0 when argv named it in full, else
 * the length of the name as written ("--out" of "--out=x" or "--out x"),
 * which starts at *written. */
static inline int g1_opt_abbreviated(char *const *argv, int optind_now, const char *optarg_now, const char *name,
                                     const char **written)
{
    /* "--name value": the value is argv[optind - 1], the option before it */
    const char *a = optarg_now && optind_now >= 2 && argv[optind_now - 1] == optarg_now ? argv[optind_now - 2]
                                                                                        : argv[optind_now - 1];
    if (strncmp(a, "--", 2) != 0)
        return 0;
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    *written = a;
    return n - 2 == strlen(name) && !strncmp(a + 2, name, n - 2) ? 0 : (int)n;
}

#endif
