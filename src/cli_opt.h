/* Long options named in full. getopt_long takes any unambiguous prefix of a
 * long option ("--out" for --output); grok1-run, grok1-merge and grok1-plan
 * do not: a script that checks a command line by option name (grok1-job.sh
 * refuses --output in GROK1_ARGS, as the script sets it) would let a prefix
 * through, and a prefix that is unambiguous today may not be once an option
 * is added. */
#ifndef G1_CLI_OPT_H
#define G1_CLI_OPT_H

#include <getopt.h>
#include <stdio.h>
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

/* The checks of each option getopt_long returned (li: its longindex, -1
 * for none; o: what it returned): named in full, and, for an option with a
 * value, given once (given: a slot per option, NULL at first). 0, or 1 with
 * the message in msg. */
static inline int g1_opt_refused(char *const *argv, const struct option *opts, int li, int o, const char **given,
                                 char *msg, size_t n)
{
    const char *w = NULL;
    int wn = li >= 0 ? g1_opt_abbreviated(argv, optind, optarg, opts[li].name, &w) : 0;
    if (wn) {
        snprintf(msg, n, "%.*s: write the option in full, --%s (abbreviations are not taken)", wn, w, opts[li].name);
        return 1;
    }
    if (li >= 0 && opts[li].has_arg == required_argument && o != ':' && o != '?') {
        if (given[li]) {
            snprintf(msg, n, "--%s is given twice (%s, then %s): give it once", opts[li].name, given[li], optarg);
            return 1;
        }
        given[li] = optarg;
    }
    return 0;
}

#endif
