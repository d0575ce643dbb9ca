#!/bin/bash
# Issue 17: test-time augmentation and committee rows for the chosen recipe (BatchNorm net, transformer before
# conv2), each a row of its own, never a single model's. The runs are the two seeds of the full-set grid,
# all of them (no choice). Run from the repository root with STN_GTSRB_SOURCE=../shared/gtsrb;
# output: bn48_seeds.log. (The log was made before the runs' directories got the ids of what they ran;
# its paths were renamed with them: see benchmarks/README.md.)
set -e
RUNS=benchmarks/results/bn48-32px-full/runs
SEEDS="$RUNS/58b0a500bf24 $RUNS/ab6fd9136d0a"
for run in $SEEDS; do
    echo "# stn-gtsrb eval $run --tta --json"; stn-gtsrb eval $run --tta --json
done
echo "# stn-gtsrb eval (the two seeds) --json"; stn-gtsrb eval $SEEDS --json
echo "# stn-gtsrb eval (the two seeds) --tta --json"; stn-gtsrb eval $SEEDS --tta --json
