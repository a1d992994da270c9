/* For the tests only (LD_PRELOAD): the project's own allocations, the
 * malloc, calloc, realloc, strdup and strndup calls made from the program itself (not from
 * a library it uses: libc, HDF5, jansson, MPI), are counted, and the one
 * numbered $G1_TEST_NOMEM (1 the first) fails as when memory is exhausted:
 * NULL and errno ENOMEM. With $G1_TEST_NOMEM_COUNT naming a file, the count
 * is added there as a line when the process exits (a singleton MPI run
 * starts a helper process, which counts its own). $G1_TEST_NOMEM_SITES=1
 * counts only the first call from each place in the program; $G1_TEST_NOMEM_SHOW=1 prints
 * where the refused call was made (for addr2line). $G1_TEST_NOMEM_LIB=NAME
 * counts the calls made by the library whose file name contains NAME
 * instead of the program's (libhdf5: HDF5's own allocations). How the tools behave when an
 * allocation fails (test_cli.py nomem): a message and a non-zero exit,
 * never a crash. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static uintptr_t lo[8], hi[8], base;
static int nseg;
static int show;
static long fail_at = -1;
static long counted;
static const char *count_path;
static int by_site;
/* by site ($G1_TEST_NOMEM_SITES=1): only the first call from each place in
 * the program counts, so that one run a place covers every place once */
enum { MAX_SITES = 8192 };
static uintptr_t sites[MAX_SITES];
static int n_sites;
static int site_lock;

/* The executable segments of the program (lib NULL: the first object), or
 * of the loaded library whose file name contains lib. */
static int main_program(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const char *lib = data;
    if (lib && (!info->dlpi_name || !strstr(info->dlpi_name, lib)))
        return 0;
    base = info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum && nseg < 8; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            lo[nseg] = info->dlpi_addr + ph->p_vaddr;
            hi[nseg] = lo[nseg] + ph->p_memsz;
            nseg++;
        }
    }
    return 1; /* the first object is the program; the first library of that name */
}

static void write_count(void)
{
    FILE *f = count_path ? fopen(count_path, "a") : NULL; /* a line a process: mpirun's helpers have their own */
    if (f) {
        fprintf(f, "%ld\n", __atomic_load_n(&counted, __ATOMIC_RELAXED));
        fclose(f);
    }
}

__attribute__((constructor)) static void nomem_init(void)
{
    const char *lib = getenv("G1_TEST_NOMEM_LIB");
    dl_iterate_phdr(main_program, lib && *lib ? (void *)lib : NULL);
    const char *v = getenv("G1_TEST_NOMEM");
    fail_at = v && *v ? atol(v) : -1;
    count_path = getenv("G1_TEST_NOMEM_COUNT");
    const char *bs = getenv("G1_TEST_NOMEM_SITES");
    by_site = bs && *bs == '1';
    const char *sh = getenv("G1_TEST_NOMEM_SHOW");
    show = sh && *sh == '1';
    if (count_path && *count_path)
        atexit(write_count);
}

static int refused(void *caller)
{
    uintptr_t a = (uintptr_t)caller;
    int ours = 0;
    for (int i = 0; i < nseg && !ours; i++)
        ours = a >= lo[i] && a < hi[i];
    if (!ours)
        return 0;
    if (by_site) {
        while (__atomic_exchange_n(&site_lock, 1, __ATOMIC_ACQUIRE))
            ;
        int seen = 0;
        for (int i = 0; i < n_sites && !seen; i++)
            seen = sites[i] == a;
        if (!seen && n_sites < MAX_SITES)
            sites[n_sites++] = a;
        __atomic_store_n(&site_lock, 0, __ATOMIC_RELEASE);
        if (seen)
            return 0;
    }
    long n = __atomic_add_fetch(&counted, 1, __ATOMIC_RELAXED);
    if (n == fail_at && show) /* for addr2line -e PROGRAM (the offset in the file of a PIE) */
        fprintf(stderr, "nomem shim: allocation %ld refused, called from 0x%lx\n", n, (unsigned long)(a - base));
    return n == fail_at;
}

void *malloc(size_t n)
{
    if (refused(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    if (refused(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    if (refused(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

/* strdup and strndup called from the program are its allocations too (the
 * malloc inside libc's own is libc's, not counted) */
char *strdup(const char *s)
{
    if (refused(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *p = __libc_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *strndup(const char *s, size_t max)
{
    if (refused(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    size_t n = strnlen(s, max);
    char *p = __libc_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}
