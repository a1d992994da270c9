/* For the tests only (LD_PRELOAD): the project's own allocations, the
 * malloc, calloc and realloc calls made from the program itself (not from
 * a library it uses: libc, HDF5, jansson, MPI), are counted, and the one
 * numbered $G1_TEST_NOMEM (1 the first) fails as when memory is exhausted:
 * NULL and errno ENOMEM. With $G1_TEST_NOMEM_COUNT naming a file, the count
 * is added there as a line when the process exits (a singleton MPI run
 * starts a helper process, which counts its own). $G1_TEST_NOMEM_SITES=1
 * counts only the first call from each place in the program. How the tools behave when an
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

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static uintptr_t lo[8], hi[8];
static int nseg;
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

static int main_program(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size, (void)data;
    for (int i = 0; i < info->dlpi_phnum && nseg < 8; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            lo[nseg] = info->dlpi_addr + ph->p_vaddr;
            hi[nseg] = lo[nseg] + ph->p_memsz;
            nseg++;
        }
    }
    return 1; /* the first object is the program */
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
    dl_iterate_phdr(main_program, NULL);
    const char *v = getenv("G1_TEST_NOMEM");
    fail_at = v && *v ? atol(v) : -1;
    count_path = getenv("G1_TEST_NOMEM_COUNT");
    const char *bs = getenv("G1_TEST_NOMEM_SITES");
    by_site = bs && *bs == '1';
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
