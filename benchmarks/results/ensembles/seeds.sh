#!/bin/bash
# Test-time augmentation and committee rows for the seeds of one recipe, each a row of its own,
# never a single model's: each run with --tta, then all runs as one committee, without and with --tta.
#   benchmarks/results/ensembles/seeds.sh RUN RUN ... > LOG
# Run from the repository root with STN_GTSRB_SOURCE=DIR. Pass every seed of the grid (no choice).
set -e
if [ $# -lt 2 ]; then echo "usage: $0 RUN RUN [RUN ...]" >&2; exit 2; fi
for run in "$@"; do
    echo "# stn-gtsrb eval $run --tta --json"; stn-gtsrb eval "$run" --tta --json
done
echo "# stn-gtsrb eval (the $# seeds) --json"; stn-gtsrb eval "$@" --json
echo "# stn-gtsrb eval (the $# seeds) --tta --json"; stn-gtsrb eval "$@" --tta --json
