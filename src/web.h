/*
 * web.h - the built-in dashboard (web/index.html) and its icon (web/favicon.svg), embedded at build time.
 */
#ifndef CS_WEB_H
#define CS_WEB_H

#include <stddef.h>

extern const unsigned char cs_web_index[];
extern const size_t cs_web_index_len;
extern const unsigned char cs_web_favicon[];
extern const size_t cs_web_favicon_len;

#endif
