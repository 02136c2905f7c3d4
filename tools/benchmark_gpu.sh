#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one command: tools/benchmark.py on a CUDA device in fp32 (+TF32), bf16 and fp16
# (LLM decode ms/token against the bandwidth floor, token2wav offline and streaming RTF, the first streaming chunk,
# llm and flow training step time and utterances/s), one JSON per run under --out_dir, then the table rows.
#
#   bash tools/benchmark_gpu.sh                                   # full-size conf/cosyvoice2.yaml, random weights
#   bash tools/benchmark_gpu.sh --model_dir pretrained_models/CosyVoice2-0.5B --device cuda:1
#
# On a machine without CUDA it stops at once with one line ("no CUDA ...") and exit status 2, writing nothing.
set -euo pipefail

device=cuda                  # the CUDA device
model_dir=""                 # a model dir (default: the full-size yaml with random weights)
version=cosyvoice2           # cosyvoice2 or cosyvoice3 (without --model_dir)
out_dir=exp/benchmark/gpu    # where the JSON files go
runs=5                       # timed runs per figure (their median)
stages=llm,token2wav,train_llm,train_flow
dtypes="fp32 bf16 fp16"      # fp32 runs with TF32

help_message="Usage: $0 [--device cuda[:N]] [--model_dir DIR] [--version V] [--out_dir DIR] [--runs N] [--dtypes 'fp32 bf16 fp16']"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "${root}/tools/parse_options.sh"
[ $# -eq 0 ] || { echo "benchmark_gpu.sh: error: unexpected argument '$1' (see --help)" >&2; exit 2; }
. "${root}/path.sh"

cuda=$(python - "${device}" <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    print(f"no CUDA: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)")
    sys.exit(1)
try:
    print(torch.cuda.get_device_name(torch.device(sys.argv[1])))
except Exception as e:  # a device index that does not exist
    print(f"no CUDA device {sys.argv[1]}: {e}")
    sys.exit(1)
PY
) || { echo "benchmark_gpu.sh: error: ${cuda}; run it on a machine with an NVIDIA GPU and a CUDA build of torch" >&2; exit 2; }
echo "benchmark_gpu.sh: ${device} is ${cuda}"

source_args=(--version "${version}")
[ -z "${model_dir}" ] || source_args=(--model_dir "${model_dir}")
mkdir -p "${out_dir}"
files=()
for dtype in ${dtypes}; do
  extra=()
  [ "${dtype}" != fp32 ] || extra=(--tf32)
  out=${out_dir}/${version}_${dtype}.json
  python "${root}/tools/benchmark.py" "${source_args[@]}" --device "${device}" --dtype "${dtype}" "${extra[@]}" \
    --stages "${stages}" --runs "${runs}" --out "${out}"
  files+=("${out}")
done
echo
python "${root}/tools/benchmark.py" --rows "${files[@]}"
