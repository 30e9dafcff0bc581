/*
 * test_prefault.c - the heap faulted in ahead of a replay: memory malloc hands out while the helper runs
 * is touched without the calling thread faulting, and the same without it faults a page at a time.
 */
#include "../../src/prefault.c"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ctest.h"

static long thread_minflt(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_minflt;
}

/* Allocates and writes n blocks of 1000 bytes (a replay's frames); returns the faults this thread took. */
static long fill(char **blk, size_t n)
{
    long f0 = thread_minflt();
    for (size_t i = 0; i < n; i++) {
        blk[i] = malloc(1000);
        REQUIRE(blk[i] != NULL);
        memset(blk[i], (int)i, 1000);
    }
    return thread_minflt() - f0;
}

/* Waits (at most 10 s) until the pages from p to the program break are resident. */
static int resident_to_break(const char *p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = (uintptr_t)p & ~(page - 1);
    for (int i = 0; i < 1000; i++) {
        uintptr_t to = (uintptr_t)sbrk(0) & ~(page - 1);
        size_t n = (to - from) / page, in = 0;
        unsigned char *vec = malloc(n + 1);
        REQUIRE(vec != NULL);
        if (mincore((void *)from, to - from, vec) == 0)
            for (size_t k = 0; k < n; k++)
                in += vec[k] & 1;
        free(vec);
        if (in == n)
            return 1;
        usleep(10000);
    }
    return 0;
}

#define BLOCKS (16 * 1024) /* 16 MiB */

static void test_heap_faulted_in_ahead(void)
{
    static char *without[BLOCKS], *with[BLOCKS];
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "  skipped: AddressSanitizer's allocator does not grow the program break\n");
    return;
#endif
    /* Without the helper: a fault a page or so (the measure can fail). */
    long f = fill(without, BLOCKS);
    CHECK(f >= BLOCKS / 8);

    REQUIRE(cs_prefault_start(32u << 20) == 0);
    CHECK(cs_prefault_start(1u << 20) == -EALREADY);
    /* Two blocks larger than what is left of the heap's top (under the mmap threshold): the second grows
     * the heap, 32 MiB ahead of it, and the helper faults that in. */
    char *big1 = malloc(120000), *big2 = malloc(120000);
    REQUIRE(big1 != NULL && big2 != NULL);
    CHECK(resident_to_break(big2 + 120000));
    f = fill(with, BLOCKS);
    fprintf(stderr, "  faults filling 16 MiB: with the helper %ld\n", f);
    CHECK(f < BLOCKS / 64);
    cs_prefault_stop();
    cs_prefault_stop(); /* not running: nothing */

    for (size_t i = 0; i < BLOCKS; i++) {
        free(without[i]);
        free(with[i]);
    }
    free(big1);
    free(big2);
    /* Started again after a stop. */
    REQUIRE(cs_prefault_start(1u << 20) == 0);
    cs_prefault_stop();
}

int main(void)
{
    RUN(test_heap_faulted_in_ahead);
    CT_DONE();
}
