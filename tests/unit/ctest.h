/*
 * ctest.h - the smallest test harness: CHECK records a failure and goes on,
 * REQUIRE stops the test; main() returns nonzero when anything failed.
 */
#ifndef CS_CTEST_H
#define CS_CTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ct_failures;
static int ct_checks;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        ct_checks++;                                                                                         \
        if (!(cond)) {                                                                                       \
            ct_failures++;                                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        ct_checks++;                                                                                         \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);                       \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

#define CHECK_STR(a, b)                                                                                      \
    do {                                                                                                     \
        const char *ct_a = (a), *ct_b = (b);                                                                 \
        ct_checks++;                                                                                         \
        if (ct_a == NULL || ct_b == NULL || strcmp(ct_a, ct_b) != 0) {                                       \
            ct_failures++;                                                                                   \
            fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,                \
                    ct_a ? ct_a : "(null)", ct_b ? ct_b : "(null)");                                         \
        }                                                                                                    \
    } while (0)

#define RUN(fn)                                                                                              \
    do {                                                                                                     \
        fprintf(stderr, "-- %s\n", #fn);                                                                     \
        fn();                                                                                                \
    } while (0)

#define CT_DONE()                                                                                            \
    do {                                                                                                     \
        fprintf(stderr, "%d checks, %d failed\n", ct_checks, ct_failures);                                   \
        return ct_failures ? 1 : 0;                                                                          \
    } while (0)

#endif
