#!/bin/bash
# The CPU-sized real-ACDC runs reported in the README (2-core CPU, fp32, ResNet-18, 128 px crops).
# Needs the ACDC copy at ../shared/data/acdc (80 patients; the 20 paper test patients withheld, hence
# --allow-missing; validation = patients 031 and 071 of the acdc_paper protocol). Outputs under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
ACDC=${ACDC:-../shared/data/acdc}
mkdir -p runs
for L in L1 L2 L8; do
  python -m custom.data.datalist --dataset-dir "$ACDC" --protocol acdc_paper --labeled $L --subset c1 \
    --allow-missing --out runs/acdc_${L}_c1.json
done
finetune() {  # name datalist unsup_weight iterations [overrides...]
  local name=$1 dl=$2 w=$3 it=$4; shift 4
  /usr/bin/time -f "wall_s %e maxrss_kb %M" python -m monai.bundle run training \
    --config_file "['bundles/ideal_finetune/configs/train.yaml','bundles/ideal_finetune/configs/cpu.yaml']" \
    --logging_file bundles/ideal_finetune/configs/logging.conf \
    --dataset_dir "$ACDC" --datalist "$dl" --unsup_weight "$w" \
    --max_iterations "$it" --epoch_length 50 --val_interval 1 --bundle_root "runs/$name" "$@" > "runs/$name.log" 2>&1
}
# issue 3: L8 c1, cross pseudo-label vs supervised-only (the paper's sigmoid pseudo-label mode further down)
finetune l8_cps runs/acdc_L8_c1.json 1.0 300
finetune l8_sup runs/acdc_L8_c1.json 0.0 300
# issue 4: pre-train on the training pool + validation images, fine-tune L1/L2 from it and from random init
/usr/bin/time -f "wall_s %e maxrss_kb %M" python -m monai.bundle run training \
  --config_file bundles/ideal_pretrain/configs/train.yaml --logging_file bundles/ideal_pretrain/configs/logging.conf \
  --dataset_dir "$ACDC" --datalist runs/acdc_L8_c1.json --backbone resnet18 --batch_size 16 \
  --max_iterations 200 --epoch_length 50 --bundle_root runs/pretrain_acdc > runs/pretrain_acdc.log 2>&1
finetune L1_ideal runs/acdc_L1_c1.json 1.0 150 --pretrained_encoder runs/pretrain_acdc/models/encoder.pt
finetune L1_scratch runs/acdc_L1_c1.json 1.0 150
finetune l8_sigmoid runs/acdc_L8_c1.json 1.0 300 --pseudo_label_mode sigmoid_threshold
finetune L2_ideal runs/acdc_L2_c1.json 1.0 150 --pretrained_encoder runs/pretrain_acdc/models/encoder.pt
finetune L2_scratch runs/acdc_L2_c1.json 1.0 150
python scripts/summarize_runs.py --names l8_cps l8_sup l8_sigmoid L1_ideal L1_scratch L2_ideal L2_scratch pretrain_acdc
