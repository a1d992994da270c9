/* grok1-link: join checkpoint parts (layer ranges) into one checkpoint by
 * HDF5 external links (g1_ckpt_link, docs/CHECKPOINT.md).
 * Exit 0 written, 2 usage (an OUT that is a device, FIFO or folder too), 1 refused or
 * failed (nothing left at OUT). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "durable.h"
#include "cli_out.h"
#include "g1_version.h"
#include "h5util.h"

static const char usage_text[] =
    "usage: grok1-link [--force] OUT.h5 PART.h5 [PART.h5...]\n"
    "\n"
    "Joins the parts of a checkpoint, each holding a range of layers\n"
    "(grok1-convert --layers A-B, grok1-mkckpt --part A-B), into OUT.h5: the\n"
    "hyper-parameters and HDF5 external links to the parts' layers, embedding\n"
    "and final norm (a few KB). grok1-run, grok1-plan and h5py read OUT.h5 like\n"
    "one file; each rank opens only the parts that hold what it loads.\n"
    "\n"
    "Checks: every part is a checkpoint of the same model (hyper-parameters,\n"
    "final norm, embedding in sampled rows), each layer is in exactly one part,\n"
    "and every link opens. Nothing is copied. The parts' fingerprints (of their\n"
    "norms) are recorded: a run refuses a file found under a part's name that is\n"
    "not that part.\n"
    "\n"
    "Parts in OUT's folder (or below it) are linked by relative names, so the\n"
    "folder can move as a whole; HDF5 looks for them first in the folders of\n"
    "HDF5_EXT_PREFIX (colon-separated), then beside OUT.h5, then in the current\n"
    "directory: set it on a node to read local copies. Parts elsewhere are\n"
    "linked by absolute names.\n"
    "\n"
    "OUT.h5 given as a symbolic link is written through: the file the link names\n"
    "is replaced (its folder is the one the parts are named from), the link kept.\n"
    "A device, FIFO or directory at OUT.h5 is refused (exit 2).\n"
    "\n"
    "  --force   replace OUT.h5 when it exists (never a part)\n"
    "  --help    this text\n"
    "  --version the version\n";

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "grok1-link: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, "\n(grok1-link --help for usage)\n");
    return 2;
}

static int tool_main(int argc, char **argv)
{
    int force = 0, first = 1;
    for (; first < argc && !strncmp(argv[first], "-", 1); first++) {
        if (!strcmp(argv[first], "--help") || !strcmp(argv[first], "-h")) {
            fputs(usage_text, stdout);
            return g1_stdout_done("grok1-link");
        }
        if (!strcmp(argv[first], "--version")) {
            printf("grok1-link %s\n", G1_VERSION);
            return g1_stdout_done("grok1-link");
        }
        if (!strcmp(argv[first], "--force"))
            force = 1;
        else if (!strcmp(argv[first], "--")) {
            first++;
            break;
        } else
            return usage_error("unknown option '%s'", argv[first]);
    }
    if (argc - first < 2)
        return usage_error("expected OUT.h5 and at least one PART.h5%s", "");
    const char *out = argv[first];
    /* not a device, FIFO or folder (never renamed over); a link written
     * through: the file it names is OUT, its folder the parts' reference */
    char *through = NULL, summary[4096];
    if (g1_h5_output_path("", out, &through) != G1_OK) {
        fprintf(stderr, "grok1-link: %s\n", g1_last_error());
        return 2;
    }
    g1_status st = g1_ckpt_link(through ? through : out, argc - first - 1, (const char *const *)&argv[first + 1],
                                force, summary, sizeof summary);
    free(through);
    if (st != G1_OK) {
        fprintf(stderr, "grok1-link: %s\n", g1_last_error());
        return 1;
    }
    printf("grok1-link: wrote %s: %s\n", out, summary);
    return 0;
}

/* A file that failed to close (a full disk) must not reach HDF5's shutdown
 * (g1_h5_end). */
int main(int argc, char **argv)
{
    int code = tool_main(argc, argv);
    g1_h5_end(code);
    return code;
}
