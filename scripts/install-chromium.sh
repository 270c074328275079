#!/usr/bin/env bash
# Debian's chromium for the report's browser tests (tests/analytics/test_report_browser.py). Installs it
# when it is missing and this machine can (root and apt); never fails: without it those tests skip.
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1
    fi
fi
command -v chromium >/dev/null 2>&1 || echo "chromium is not installed: the browser tests will skip" >&2
exit 0
