/*
 * whconf.h - the pure parts of webhooks out (whconf.c): no I/O, no loop, so unit tests and fuzzers take
 * them alone. webhook.h is the sender.
 */
#ifndef CS_WHCONF_H
#define CS_WHCONF_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cfgschema.h"

/** The delay before attempt n+1 after n failed ones (n >= 1): 1 s doubling to 5 min, with jitter in
 * [half, whole] drawn from rnd in [0, 1). */
int64_t cs_webhook_backoff_ms(unsigned n, double rnd);

/** Writes the Standard Webhooks signature "v1,<base64>" of id.ts.body with key into out (>= 64 bytes);
 * returns its length, or 0 on failure. */
size_t cs_webhook_sign(const unsigned char *key, size_t key_len, const char *id, const char *ts,
                       const char *body, size_t body_len, char *out, size_t outlen);

/** Decodes a "whsec_<base64>" secret into key (malloc'd); 0 or -EINVAL. */
int cs_webhook_secret_key(const char *secret, unsigned char **key, size_t *key_len);

/** Nonzero when url is an http(s) URL that matches one of the allow prefixes (a prefix matches only up
 * to a '/', '?' or '#' boundary, so "http://a.example" does not allow "http://a.example.evil"). */
int cs_webhook_allowed(const char *url, char *const *allow, size_t n_allow);

/** Which registered URL kinds want an event of this type: a bit per CS_WEBHOOK_* below (SPEC §9). */
#define CS_WEBHOOK_HUMAN 0x1u
#define CS_WEBHOOK_TASK  0x2u
#define CS_WEBHOOK_STEP  0x4u
#define CS_WEBHOOK_CREW  0x8u
unsigned cs_webhook_kinds_for(const char *type, size_t len);

/** The config row ops of webhooks.endpoints (kept as checked JSON in cs_config_t.webhook_endpoints). */
extern const cs_cfg_ops_t cs_webhook_endpoints_ops;

/** Nonzero for an http:// or https:// URL of at most 2048 printable characters without spaces. */
int cs_webhook_url_ok(const char *url);

/**
 * Builds the Authorization header line ("Authorization: Bearer T" / "Authorization: Basic B64") of an
 * authentication object {strategy:"bearer", token} | {strategy:"basic", username, password} into *out
 * (malloc'd; NULL when a is absent or null). Returns 0, -ENOMEM, or -EINVAL with *what naming the member
 * ("authentication.token: ...").
 */
int cs_webhook_auth_header(const json_t *a, char **out, const char **what);

#endif
