#!/bin/sh
# The dashboard's browser test, as ctest runs it (browser.dashboard): Debian's chromium driven by
# playwright-core from npm (pinned in package-lock.json; never a browser download). Installs the
# npm package with `npm ci` when node_modules is missing. Exits 77 (ctest: skipped) with the reason
# when node, npm or chromium is absent; `scripts/deps test` installs them, so CI runs it.
set -eu
cd "$(dirname "$0")"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export CHROMIUM
if ! command -v node >/dev/null 2>&1; then
  echo "SKIPPED: node is not installed (scripts/deps test installs nodejs and npm)"; exit 77
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "SKIPPED: no chromium at $CHROMIUM (scripts/deps test installs Debian's chromium; or set CHROMIUM)"; exit 77
fi
if [ ! -f node_modules/playwright-core/package.json ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "SKIPPED: npm is not installed, and node_modules/ is missing (scripts/deps test installs npm)"; exit 77
  fi
  # playwright-core itself downloads nothing; these keep any install step from fetching a browser.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 dashboard.test.js
