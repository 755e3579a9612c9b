#!/usr/bin/env bash
# Install daad for use and for its tests: Debian's Chromium and fonts (the App tests drive
# them), then .venv with daad and every extra at the versions of requirements/lock.txt, and
# .venv-label-studio (the Label Studio server of `daad curate annotate`) from requirements/label-studio.txt.
#   scripts/setup.sh            the locked versions (what CI tests)
#   scripts/setup.sh --latest   the newest releases pyproject.toml allows (to try them, then scripts/lock.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "daad's App tests need Debian's ${missing[*]}: run  sudo apt-get install -y ${missing[*]}" >&2
  fi
fi

constraints=(-c requirements/lock.txt)
[ "${1:-}" = "--latest" ] && constraints=(--upgrade --upgrade-strategy eager)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch is pinned so that pip never pulls a multi-GB CUDA build: 2.13.0 is the CPU wheel.
.venv/bin/pip install -q "${constraints[@]}" "torch==2.13.0" -e ".[all]"
# The Label Studio server (`daad curate annotate`) runs from its own venv: its pins conflict with the lock.
[ -x .venv-label-studio/bin/python ] || "$python" -m venv .venv-label-studio
.venv-label-studio/bin/pip install -q -r requirements/label-studio.txt
