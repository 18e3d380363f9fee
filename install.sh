#!/usr/bin/env bash
# Installs this project and its test dependencies at the versions its CI last passed with (constraints.txt; setup.py
# keeps ranges). torch comes first and pinned, so that no resolver pulls another (CUDA, several GB) build.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q torch==2.14.1 torchvision==0.29.1 -c constraints.txt
python -m pip install -q -e ".[dev]" -c constraints.txt
# Apple's reference code, a test-only parity oracle; it pins an old timm, hence --no-deps.
python -m pip install -q --no-deps visaionmobileclip==0.1.1
