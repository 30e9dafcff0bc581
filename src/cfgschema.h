/*
 * cfgschema.h - the configuration schema engine: tables of rows, one row a key.
 *
 * A row says everything about its key (Redis' standardConfig is the model): its
 * name, how its value is stored (the kind), where it lives in the struct, its
 * default (as JSON text, read by the same parser as the file, so a default is
 * checked against the bounds like any value), its range, and what a SIGHUP
 * reload does with it. The engine walks a JSON object against a table (key paths
 * in every error message, "did you mean" for typos), prints a struct back in the
 * shape it is read, sets the defaults, and copies, frees and compares members,
 * all from the rows. It knows nothing of crewstream's keys: config.c holds the
 * daemon's table, auth.c the rows of one token.
 */
#ifndef CS_CFGSCHEMA_H
#define CS_CFGSCHEMA_H

#include <stddef.h>

#include <jansson.h>

#define CS_CFG_PATH_MAX 256
/* What a dump prints for a secret; refused as a value so a dump fed back is not a key. */
#define CS_CFG_PLACEHOLDER "(set)"

/* One walk's state: where messages go, and the key path they name. */
typedef struct cs_cfg_ctx {
    char *err;
    size_t errlen;
    const char *name;           /* file name that starts every message, or NULL */
    char path[CS_CFG_PATH_MAX]; /* "auth.tokens[1].scopes[0]" */
    size_t path_len;
    int saw_secret; /* the text held a key, a JWT secret or a token literal */
} cs_cfg_ctx_t;

typedef struct cs_cfg_field cs_cfg_field_t;

/* How a value is stored (and, unless the row's ops say otherwise, read, printed, copied and freed). */
typedef enum cs_cfg_kind {
    CS_CFG_OBJECT,  /* nested table, same base */
    CS_CFG_SIZE,    /* size_t, an integer in [min, max] */
    CS_CFG_UINT,    /* unsigned, an integer in [min, max] */
    CS_CFG_INT,     /* int (read and printed by the row's ops) */
    CS_CFG_BOOL,    /* int, true or false */
    CS_CFG_SECRET,  /* char *, a non-empty string or null; printed as "(set)" or null; wiped when freed */
    CS_CFG_STRING,  /* char *, a non-empty string */
    CS_CFG_STRINGS, /* char ** and a size_t count, an array of non-empty strings */
    CS_CFG_CUSTOM,  /* stored as the row's ops say; without copy and release it owns no storage of its
                       own (a token literal, whose parse writes the hash's member) */
} cs_cfg_kind_t;

/* What a SIGHUP reload does with a key. */
typedef enum cs_cfg_reload {
    CS_CFG_LIVE,    /* applied at once: the daemon reads the value where it uses it */
    CS_CFG_RESTART, /* the running value stays until a restart; a change is warned about */
    CS_CFG_APPLY,   /* applied at once by the apply function the row names (row.apply) */
} cs_cfg_reload_t;

#define CS_CFG_REQUIRED 0x1u /* the enclosing object must have this key */
#define CS_CFG_NODUMP   0x2u /* never printed (a token literal) */
#define CS_CFG_NONEMPTY 0x4u /* CS_CFG_STRINGS: at least one string */

/*
 * A row's own behaviour, replacing the kind's where given. parse reads one JSON value into the struct
 * at base (0, or -EINVAL/-ENOMEM after cs_cfg_fail); dump renders it back (NULL: out of memory); copy
 * writes a deep copy of src's value into dst, whose member holds nothing owned (0 or -ENOMEM, leaving
 * dst's member empty); release frees what base's member owns and empties it.
 */
typedef struct cs_cfg_ops {
    int (*parse)(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx);
    json_t *(*dump)(const void *base, const cs_cfg_field_t *f);
    int (*copy)(void *dst, const void *src, const cs_cfg_field_t *f);
    void (*release)(void *base, const cs_cfg_field_t *f);
} cs_cfg_ops_t;

/* Validates one string of a CS_CFG_STRING or CS_CFG_STRINGS key; 0 or cs_cfg_fail(). */
typedef int (*cs_cfg_check_fn)(const char *s, cs_cfg_ctx_t *ctx);

struct cs_cfg_field {
    const char *key;
    cs_cfg_kind_t kind;
    unsigned flags;
    size_t off;                  /* where the value lives in the base struct */
    size_t count_off;            /* CS_CFG_STRINGS: where its count lives */
    const char *def;             /* the default as JSON text ("1024", "[\"*\"]", "null"); NULL: none (zero) */
    unsigned long long min, max; /* CS_CFG_SIZE, CS_CFG_UINT */
    cs_cfg_reload_t reload;
    int apply;                 /* CS_CFG_APPLY: which apply function (the table's owner numbers them) */
    const cs_cfg_field_t *sub; /* CS_CFG_OBJECT */
    cs_cfg_check_fn check;     /* CS_CFG_STRING, CS_CFG_STRINGS: optional */
    const cs_cfg_ops_t *ops;   /* optional, but for CS_CFG_CUSTOM */
    const char *env;           /* CS_CFG_SECRET, CS_CFG_STRING: a variable that overrides the file */
};

#define CS_CFG_AT(base, f, type)   ((type *)((char *)(base) + (f)->off))
#define CS_CFG_AT_C(base, f, type) ((const type *)((const char *)(base) + (f)->off))

/* ---- messages ---- */

/** Writes "FILE: PATH: message" into ctx's buffer (one line) and returns -EINVAL. */
int cs_cfg_fail(cs_cfg_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Writes "FILE: message", for messages that quote the path themselves; returns -EINVAL. */
int cs_cfg_fail_nopath(cs_cfg_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** "out of memory" at the current path; returns -ENOMEM. */
int cs_cfg_nomem(cs_cfg_ctx_t *ctx);
/** Formats a one-line message into err (control characters replaced), for errors outside a walk. */
void cs_cfg_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** Appends ".key" / "[i]" to the path; returns the mark cs_cfg_pop goes back to. */
size_t cs_cfg_push_key(cs_cfg_ctx_t *ctx, const char *key);
size_t cs_cfg_push_index(cs_cfg_ctx_t *ctx, size_t i);
void cs_cfg_pop(cs_cfg_ctx_t *ctx, size_t mark);

/** Describes a JSON value for "got ..." in a message: the value itself when short, else its type. */
const char *cs_cfg_describe(const json_t *v, char *buf, size_t len);
/** Names a value's type only: for secrets, whose value must never reach a message or a log. */
const char *cs_cfg_type_name(const json_t *v);

/* ---- tables ---- */

/** Checks every key of obj against fields, in obj's order, then the required ones; parses each into base. */
int cs_cfg_walk(void *base, const cs_cfg_field_t *fields, json_t *obj, cs_cfg_ctx_t *ctx);
/** Parses one value into one row (what cs_cfg_walk does per key). */
int cs_cfg_parse_field(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx);
/** Reads a non-empty string without NUL that passes f->check into a fresh copy. */
int cs_cfg_parse_string(const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx, char **out);

/** Renders base as a JSON object of fields (rows with CS_CFG_NODUMP left out); NULL on out of memory. */
json_t *cs_cfg_dump(const void *base, const cs_cfg_field_t *fields);
json_t *cs_cfg_dump_field(const void *base, const cs_cfg_field_t *f);

/**
 * Sets every row of fields (nested tables included) to its default, over a base whose members hold
 * nothing owned (zeroed). 0, -ENOMEM, or -EINVAL with a message when a row's default is not a valid
 * value of its own row (a table error).
 */
int cs_cfg_defaults(void *base, const cs_cfg_field_t *fields, char *err, size_t errlen);
/** The same within a walk (a nested object's defaults, before its keys are read). */
int cs_cfg_walk_defaults(void *base, const cs_cfg_field_t *fields, cs_cfg_ctx_t *ctx);
/** Deep-copies every row of fields from src into dst (whose members hold nothing owned); 0 or -ENOMEM. */
int cs_cfg_copy(void *dst, const void *src, const cs_cfg_field_t *fields);
int cs_cfg_copy_field(void *dst, const void *src, const cs_cfg_field_t *f);
/** Frees what every row of fields owns in base and empties it; harmless twice. */
void cs_cfg_release(void *base, const cs_cfg_field_t *fields);
void cs_cfg_release_field(void *base, const cs_cfg_field_t *f);
/** Sets every row with an env variable that is set and not empty to the variable's value; 0 or -ENOMEM. */
int cs_cfg_apply_env(void *base, const cs_cfg_field_t *fields);
/** Nonzero when a and b print the same for f (secrets compare as set or unset only). */
int cs_cfg_same(const void *a, const void *b, const cs_cfg_field_t *f);

/* ---- small owned things ---- */

void cs_cfg_secret_free(char *s);
void cs_cfg_strv_free(char **v, size_t n);
/** Copies n strings; 0 or -ENOMEM with *out untouched. */
int cs_cfg_strv_dup(char *const *src, size_t n, char ***out);

#endif
