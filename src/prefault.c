/*
 * prefault.c - see prefault.h.
 *
 * The helper reads the program break (sbrk(0): glibc's record of it) and asks the kernel to populate the
 * pages between the last break it saw and this one. malloc owns those pages; MADV_POPULATE_WRITE maps
 * them writable without writing to them, so it races with nothing malloc does there. A break that moved
 * back (a trim) makes the call fail on the range that went: ignored, the next round starts from the new
 * break.
 */
#include "prefault.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

#define TOP_PAD_DEFAULT (128 * 1024) /* glibc's M_TOP_PAD default */

static pthread_t pf_thread;
static int pf_started;
static unsigned pf_runs; /* helpers started so far (tests) */
static atomic_int pf_stop;

static void *pf_main(void *arg)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = (uintptr_t)arg;
    const struct timespec nap = {0, 200 * 1000};

    while (!atomic_load(&pf_stop)) {
        uintptr_t cur = (uintptr_t)sbrk(0) & ~(page - 1);
        if (cur > from) {
            if (madvise((void *)from, cur - from, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
                break; /* a kernel without it (before 5.14): nothing to do */
            from = cur;
        } else {
            if (cur < from)
                from = cur;
            nanosleep(&nap, NULL);
        }
    }
    return NULL;
}

int cs_prefault_start(size_t pad)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    void *brk0 = sbrk(0);

    if (pf_started || brk0 == (void *)-1)
        return -EALREADY;
    atomic_store(&pf_stop, 0);
    /* It takes no signal (helper.h). */
    int rc = cs_helper_start(&pf_thread, pf_main, (void *)(((uintptr_t)brk0 + page - 1) & ~(page - 1)));
    if (rc != 0)
        return -rc;
    pf_started = 1;
    pf_runs++;
    (void)mallopt(M_TOP_PAD, (int)pad); /* refused: the helper has little to do, the replay goes on */
    return 0;
}

void cs_prefault_stop(void)
{
    if (!pf_started)
        return;
    atomic_store(&pf_stop, 1);
    pthread_join(pf_thread, NULL);
    pf_started = 0;
    mallopt(M_TOP_PAD, TOP_PAD_DEFAULT);
}
