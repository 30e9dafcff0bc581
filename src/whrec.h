/*
 * whrec.h - the journal records of webhooks out (issue 13: deliveries resume after a restart), pure: no
 * I/O, no loop. They are module records of the journal (jrecord.h's CS_JREC_AUX range), in cs_change_t's
 * payload layout:
 *
 *   CS_WHREC_REG     exec; json = the execution's registered URLs, whole, as they are after the change:
 *                    {"human":{"url":U,"auth":"Authorization: ..."},"task":{"url":U},"step":..,"crew":..}
 *                    (a kind absent is not registered; "auth" only when set)
 *   CS_WHREC_UNREG   exec: its registration was forgotten (finished and delivered, or idle)
 *   CS_WHREC_CURSOR  exec; type = the endpoint's name (a config endpoint's, or "task:<exec>" ...);
 *                    epoch = the execution's epoch; seq = the first seq not yet delivered;
 *                    status bit 0: closed (caught up: nothing to resume), bit 1: the endpoint is an
 *                    execution's registered URL (else a config endpoint: the names may coincide)
 *   CS_WHREC_DISC    epoch = the global ring's epoch; gseq = the next global seq discovery reads
 *
 * The last record of each key wins (an execution for REG/UNREG, (endpoint, execution) for CURSOR). A
 * snapshot segment starts with the whole state (every registration, every open cursor, the discovery
 * position). cs_whrec_decode is every reader of these bytes; it has a fuzz target (fuzz_journal).
 */
#ifndef CS_WHREC_H
#define CS_WHREC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "jrecord.h"
#include "store.h"

#define CS_WHREC_REG    (CS_JREC_AUX_FIRST + 0)
#define CS_WHREC_UNREG  (CS_JREC_AUX_FIRST + 1)
#define CS_WHREC_CURSOR (CS_JREC_AUX_FIRST + 2)
#define CS_WHREC_DISC   (CS_JREC_AUX_FIRST + 3)

/** Nonzero for a kind whrec.h names. */
#define CS_WHREC_IS(k) ((unsigned)(k) >= CS_WHREC_REG && (unsigned)(k) <= CS_WHREC_DISC)

#define CS_WHREC_KINDS 4
/** The registration kinds, in CS_WEBHOOK_* bit order: "human", "task", "step", "crew". */
extern const char *const cs_whrec_kind_names[CS_WHREC_KINDS];

/** The longest endpoint name a cursor record carries (config names are far shorter). */
#define CS_WHREC_NAME_MAX 256

typedef struct cs_whrec {
    int kind;
    const char *exec; /* REG, UNREG, CURSOR (NUL-terminated, <= CS_EXECUTION_ID_MAX) */
    size_t exec_len;
    const char *endpoint; /* CURSOR */
    size_t endpoint_len;
    uint64_t epoch, seq; /* CURSOR: execution epoch, next seq; DISC: global epoch, next gseq */
    int closed;          /* CURSOR */
    int registered;      /* CURSOR: the endpoint is an execution's registered URL */
    /* REG: per kind, the URL (NULL: not registered) and the Authorization header line (NULL: none);
     * they point into json, which cs_whrec_release frees. */
    const char *url[CS_WHREC_KINDS];
    const char *auth[CS_WHREC_KINDS];
    json_t *json;
} cs_whrec_t;

/**
 * Reads a webhook record. 0 with *r filled (release it), or -EINVAL with detail: a kind that is not a
 * webhook record, a missing or over-long execution id or endpoint name, a status with bits past 1, a REG
 * whose JSON is not an object of known kinds each with a "url" string (an "auth" string, when present,
 * starting "Authorization: ", none with a CR or LF).
 */
int cs_whrec_decode(const cs_change_t *c, cs_whrec_t *r, char *detail, size_t detail_len);

/** Frees what a decoded record holds (safe on a zeroed or failed one). */
void cs_whrec_release(cs_whrec_t *r);

/** The JSON of a REG record for these URLs and header lines (NULL entries: absent); malloc'd, NULL when
 * out of memory. */
char *cs_whrec_reg_json(const char *const url[CS_WHREC_KINDS], const char *const auth[CS_WHREC_KINDS]);

#endif
