#!/usr/bin/env bash
# Renders an evaluate report.html with headless Chromium into a PNG, to look
# at it and to commit the picture under docs/ (README, "Does the ensemble pay?").
#
#   tools/report_screenshot.sh REPORT_DIR/report.html docs/evaluate/report.png [HEIGHT]
#
# The page is drawn 1150 CSS pixels wide at 0.75 scale; HEIGHT (default 3300)
# covers the verdicts, the tables, the equity curves and the reliability diagram.
# Installs Debian's chromium when it is missing (needs root and the Debian
# mirror); nothing else of the project needs it.
set -euo pipefail
html=${1:?report.html}
png=${2:?out.png}
height=${3:-3300}
if ! command -v chromium >/dev/null; then
    echo "installing chromium (Debian package) for the screenshot" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
mkdir -p "$(dirname "$png")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=0.75 --window-size="1150,$height" \
    --screenshot="$(realpath -m "$png")" "file://$(realpath "$html")" 2>/dev/null
echo "wrote $png"
