#!/usr/bin/env bash
# The demo: DSM-Net learns to remove synthetic rain on this machine, offline, in minutes on a CPU.
#   bash scripts/demo.sh
# 1. sets up (or reuses) the virtual environment .venv;
# 2. builds (or reuses) the paired data in demo_data/: crops of photographs scikit-image ships,
#    with seeded heavy rain, and other photographs for validation;
# 3. trains with options/train_DSMNet_demo.yml and tests with options/test_DSMNet_demo.yml
#    through the same entry points as any BasicSR run (dsmnet_arch/train.py, dsmnet_arch/test.py);
# 4. prints rainy-vs-derained PSNR/SSIM and where the images, weights and logs are.
# Outputs go to experiments/, results/ and tb_logger/ in the repository. Running it again keeps
# the earlier run: BasicSR renames each existing output folder to <name>_archived_<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

source scripts/setup_env.sh
# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning
# threads made training several times slower. Set OMP_WAIT_POLICY yourself to override.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

python scripts/make_demo_data.py --dst demo_data --preset heavy --seed 0
python dsmnet_arch/train.py -opt options/train_DSMNet_demo.yml
python dsmnet_arch/test.py -opt options/test_DSMNet_demo.yml
python scripts/demo_report.py --train_opt options/train_DSMNet_demo.yml --test_opt options/test_DSMNet_demo.yml
echo "demo: done in $((SECONDS - start)) s"
