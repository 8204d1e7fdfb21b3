#!/usr/bin/env bash
# Thin wrapper: datasets/speech/make_corpus.sh --out DIR [options]; see make_corpus.py --help.
# Needs python3, espeak-ng and sox (launch/setup installs them).
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/make_corpus.py" "$@"
