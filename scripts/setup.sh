#!/usr/bin/env bash
# One-time set-up on a fresh machine: Debian text-to-speech and audio tools, then ./.venv
# with l3se and its dependencies. Safe to re-run: finished steps are cheap no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."

# TTS voices for the offline corpus, audio tools, and the headless browser of the app's test.
APT_PACKAGES=(espeak-ng flite festival festvox-us-slt-hts festvox-kallpc16k sox libsndfile1 chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.l3se-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing l3se and dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -qq -e ".[dev,baselines]"
    touch "$stamp"
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, torchaudio; print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")')"
