#!/usr/bin/env bash
# Installs Debian's Chromium, which the web chat page tests drive headless through Playwright
# (tests/SpeCache.Tests/Server/ChromiumBrowser.cs expects it at /usr/bin/chromium). Playwright's own
# browser download is never used. Idempotent: does nothing when chromium is already installed.
set -uo pipefail
command -v chromium >/dev/null && exit 0
log=$(mktemp)
# Without its recommends (a printer dialog, upower, ...) but with a font, so pages render readable text.
if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-liberation; } >"$log" 2>&1; then
  echo "installing chromium failed (apt-get install chromium, needs root); the log: $log"
  exit 1
fi
rm -f "$log"
echo "chromium installed: $(command -v chromium)"
