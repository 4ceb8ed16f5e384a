#!/usr/bin/env bash
# Issue 18's GPU rows, as one prepared run on the device machine (its python3 holds CUDA torch and
# torchvision, numba, Pillow and pytest; nothing can be fetched there). Prepare here, in the repo root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m hatch run python scripts/build_wheels.py .whl          # shardflow's own wheels (pure Python)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       zstandard==0.23.0 webdataset==1.0.2 braceexpand==0.1.7
#
# then call the device tool's run with carry [".whl"] and the command `bash benchmarks/gpu_host.sh`
# (timeout_s 540). It writes into $OUT: the GPU tests' log and the images_bench table at 1, 4 and 12
# workers with the ResNet-50 training row; copy the table into benchmarks/RESULTS.md ("images").
# The mosaicml-streaming and LitData rows read "error" there (no reference venv on that machine).
set -uo pipefail
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())" \
    | tee -a "$out/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/dataset/test_images_gpu.py tests/dataset/test_images_fast.py \
    2>&1 | tee "$out/gpu_tests.log"
timeout 330 python3 benchmarks/images_bench.py --workers 1 4 12 --images 20000 --seconds 8 --train resnet50 \
    --only imagefolder webdataset shardflow-fast-thread shardflow-gpu-decode 2>&1 | tee "$out/images_gpu.md"
