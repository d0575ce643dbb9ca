#!/bin/bash
# Committee and test-time-augmentation rows, each a row of its own, never a single model's: the three
# seeds of the previous `fast` recipe with the blocks' contrastive normalisation on
# (benchmarks/archive/results/fast-previous-cnorm). Run from the repository root with
# STN_GTSRB_SOURCE=DIR; output: fast-previous-cnorm.log.
set -e
FAST=benchmarks/archive/results/fast-previous-cnorm/runs
for run in $FAST/0d47966ca8bd $FAST/a80964722ed7 $FAST/43268d20561f; do
    echo "# stn-gtsrb eval $run --tta --json"; stn-gtsrb eval $run --tta --json
done
echo "# stn-gtsrb eval (the three fast seeds) --json"; stn-gtsrb eval $FAST/0d47966ca8bd $FAST/a80964722ed7 $FAST/43268d20561f --json
echo "# stn-gtsrb eval (the three fast seeds) --tta --json"; stn-gtsrb eval $FAST/0d47966ca8bd $FAST/a80964722ed7 $FAST/43268d20561f --tta --json
