#!/usr/bin/env bash
# System packages the report fallback needs (no Quarto here):
#   chromium       kaleido's browser (plotly -> PNG for the PDF) and the headless browser check
#   libjs-mathjax  MathJax 2, copied into the HTML site so math renders offline (+ fonts-mathjax)
#   poppler-utils  pdftotext / pdftoppm to inspect the PDF
# Installs them with apt when run as root; otherwise prints the exact command. Never fails the build:
# the HTML site still builds without them (math then shows as TeX, the PDF gets figure placeholders).
set -u
PKGS="chromium libjs-mathjax fonts-mathjax poppler-utils"
have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
have_all() {
    have_chromium && [ -f /usr/share/javascript/mathjax/MathJax.js ] && command -v pdftotext >/dev/null 2>&1
}
if have_all; then
    echo "system deps: ok (chromium, MathJax, poppler-utils present)"
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "system deps: installing $PKGS with apt-get (once)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends $PKGS >/tmp/thu_big_data_ml_apt.log 2>&1; then
        apt-get update -q >>/tmp/thu_big_data_ml_apt.log 2>&1
        apt-get install -y -q --no-install-recommends $PKGS >>/tmp/thu_big_data_ml_apt.log 2>&1
    fi
fi
if have_all; then
    echo "system deps: installed"
    exit 0
fi
echo "system deps: MISSING. The HTML site still builds, but without offline math / PDF figures / browser check."
echo "  Install them with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends $PKGS"
echo "  (see /tmp/thu_big_data_ml_apt.log if an automatic install was attempted)"
exit 1
