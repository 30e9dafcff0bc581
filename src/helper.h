/*
 * helper.h - starting a helper thread (the journal's sync thread, the replay's prefault helper).
 *
 * A helper takes no signal, whatever the caller's mask: every one is the loop's (a signalfd), and one
 * delivered to a helper would take its default action - a SIGTERM would kill the process.
 */
#ifndef CS_HELPER_H
#define CS_HELPER_H

#include <pthread.h>
#include <signal.h>

/** pthread_create with every signal blocked in the new thread; returns its result (0 or an errno). */
static inline int cs_helper_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

#endif
