/*
 * filter.h - the ?types= filter: a comma-separated list of exact type names and
 * "prefix.*" / "prefix_*" patterns ("agent.*" matches "agent.started", not "agent").
 */
#ifndef CS_FILTER_H
#define CS_FILTER_H

#include <stddef.h>

typedef struct cs_filter_pat {
    char *s;
    size_t len;
    int prefix; /* nonzero: s is a prefix (the "*" dropped) */
} cs_filter_pat_t;

typedef struct cs_filter {
    cs_filter_pat_t *pats;
    size_t n; /* 0 = everything passes */
} cs_filter_t;

#define CS_FILTER_MAX_PATTERNS 64

/**
 * Parses csv (NULL or "" = everything) into f. Each item must be a valid type name, optionally
 * ending in "*" (only at the end, and only as a whole "prefix*" form). Empty items (",,") are
 * refused. Returns 0, or -EINVAL with a message naming the bad item in err.
 */
int cs_filter_parse(cs_filter_t *f, const char *csv, char *err, size_t errlen);

/** Returns nonzero when type[0..len) passes f. */
int cs_filter_match(const cs_filter_t *f, const char *type, size_t len);

/** Frees what f owns and leaves it matching everything. */
void cs_filter_free(cs_filter_t *f);

#endif
