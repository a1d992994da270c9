#!/usr/bin/env bash
# lm-evaluation-harness in a virtual environment beside the checkout
# (.venv-lm-eval, or $GROK1_LMEVAL_VENV), for grok1_lm_eval.py and its test
# (tests/lmeval). From PyPI, at the versions of constraints.txt (about 750 MB,
# a minute or two); needs Debian's python3-venv (scripts/setup.sh installs it).
# Idempotent: does nothing when lm_eval already imports there.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${GROK1_LMEVAL_VENV:-.venv-lm-eval}
if "$VENV/bin/python" -c "import lm_eval.api.model" 2>/dev/null; then
  echo "lm-eval: present in $VENV"
  exit 0
fi
echo "lm-eval: installing into $VENV (PyPI)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-warn-script-location \
  -r scripts/lm-eval/requirements.txt -c scripts/lm-eval/constraints.txt
"$VENV/bin/python" -c "import lm_eval.api.model"
echo "lm-eval: installed in $VENV; run: $VENV/bin/python scripts/lm-eval/grok1_lm_eval.py --help"
