#!/usr/bin/env bash
# The GPU check, for a bare GPU machine that has torch and Lightning but not Hydra or this package.
# Prepare first (here): python experiments/performance/prepare_gpu_check.py   (fills .gpu/)
# Then there:           bash experiments/performance/gpu_check.sh [--out DIR] [--budget-s S]
set -euo pipefail
cd "$(dirname "$0")/../.."
site="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/diffusion_lab_site}"
if ! python3 -c "import hydra, omegaconf" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 experiments/performance/gpu_check.py "$@"
