#!/usr/bin/env bash
# The paper profile on one GPU, as one short check: installs this repository, pre-trains ResNet-50 (IDEAL, the
# `paper_check` profile: the paper profile shortened to 1000 pre-training / 1500 fine-tuning iterations), fine-tunes
# `supervised` and `ideal` at L1 and L8 c1 of real ACDC (10 held-out patients as test) and writes results.csv and
# results.md to OUT_DIR. Under 9 minutes on one H200-class GPU is the aim.
#
#   scripts/gpu_paper_check.sh ACDC_DIR OUT_DIR [PROFILE]
#
# ACDC_DIR: patientXXX/ folders in ACDC layout. PROFILE: paper_check (default); tests run it with `tiny` on a CPU.
# FRACTIONS (environment, default "L1 L8") picks the labeled sets. Install torch for your CUDA first.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 ACDC_DIR OUT_DIR [PROFILE]" >&2
    exit 2
fi
data=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
profile=${3:-paper_check}
cd "$(dirname "$0")/.."
if ! python -c "import custom, monai" 2>/dev/null; then
    pip install -q -e .
fi
start=$SECONDS
# shellcheck disable=SC2086
python -m custom.experiments --dataset-dir "$data" --protocol acdc_paper --allow-missing --holdout 10 \
    --fractions ${FRACTIONS:-L1 L8} --subsets c1 --methods supervised ideal --profile "$profile" --out "$out/runs"
cp "$out/runs/results.csv" "$out/runs/results.md" "$out/"
echo "gpu_paper_check: $((SECONDS - start)) s; results in $out/results.csv"
