/*
 * prefault.h - the heap's pages faulted in ahead of a replay, on a helper thread.
 *
 * A replay fills the store as fast as it can read: a third of its time (most of it on a VM's first
 * touch) went to the kernel faulting in and zeroing the pages the store grows into. While it runs, the
 * heap is grown ahead of use (glibc's M_TOP_PAD) and a helper thread prefaults what was grown
 * (MADV_POPULATE_WRITE: the pages are mapped, their contents untouched), on the other core. Nothing
 * else runs meanwhile: the loop has not started.
 *
 * Setting M_TOP_PAD turns off glibc's dynamic mmap threshold for the rest of the process (allocations of
 * 128 KiB and more are mapped on their own, as before any was freed): a daemon that replayed a large
 * journal keeps glibc's defaults instead of thresholds raised by large frees.
 */
#ifndef CS_PREFAULT_H
#define CS_PREFAULT_H

#include <stddef.h>

/** Starts prefaulting the heap, pad bytes ahead of it. Returns 0, or -errno (nothing started: the
 * replay faults its pages itself, as before). */
int cs_prefault_start(size_t pad);

/** Stops the helper and puts glibc's heap padding back; the pad left unused is given back at the next
 * trim. No-op when not started. */
void cs_prefault_stop(void);

#endif
