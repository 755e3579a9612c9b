#!/usr/bin/env bash
# Write requirements/lock.txt from .venv: the exact versions the tests just passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The exact versions daad's tests pass with (Python 3.11, Linux x86_64), every extra included."
  echo "# scripts/setup.sh installs with these as pip constraints. After a dependency change:"
  echo "# scripts/setup.sh --latest && .venv/bin/python -m pytest -q && scripts/lock.sh"
  # torch's CPU build carries a local version label (+cpu) that PyPI's index does not serve.
  .venv/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/'
} > requirements/lock.txt.tmp
mv requirements/lock.txt.tmp requirements/lock.txt
