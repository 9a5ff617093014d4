#!/usr/bin/env bash
# Expert + data parallel MoE check on a 1-8 GPU box (NVIDIA or AMD) with vLLM installed.
#
# What a Tessera MoE worker relies on, checked on real GPUs: one AsyncLLM with
# data_parallel_size = the GPU count and enable_expert_parallel, for each role's
# all-to-all backend from tessera/engine_model/catalog/vendors.yaml (mixed: allgather_reducescatter;
# prefill/decode: DeepEP on NVIDIA, MoRI on AMD, SKIP when not installed); one request
# pinned to each DP rank with data_parallel_rank must run there and decode the same
# greedy tokens; an out-of-range rank must be refused. Prints PASS/FAIL/SKIP per role.
#
#   deploy/gpu-checks/expert_parallel.sh                          # tiny random MoE, built here (offline)
#   deploy/gpu-checks/expert_parallel.sh --model Qwen/Qwen3-30B-A3B   # a real MoE (hub or local folder)
#   deploy/gpu-checks/expert_parallel.sh --role mixed --dp 2
#   PYTHON=/opt/venv/bin/python deploy/gpu-checks/expert_parallel.sh
#   deploy/gpu-checks/expert_parallel.sh --dry-run --vendor nvidia --gpus 8   # the launches, no GPU needed
#
# Exit status: 0 all passed (or skipped), 1 a check failed, 2 setup problem.
set -uo pipefail
cd "$(dirname "$0")/../.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ " $* " != *" --dry-run "* ]]; then
  if ! "$PYTHON" -c "import vllm" 2>/dev/null; then
    echo "FAIL setup: $PYTHON cannot import vllm (install vllm==0.32.0, or set PYTHON)" >&2
    exit 2
  fi
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; elif command -v rocm-smi >/dev/null; then rocm-smi --showproductname; fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The tiny model is built locally; a hub id is fetched only if the operator allows it.
if [[ " $* " != *" --model "* ]]; then export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"; fi

timeout "${CHECK_TIMEOUT_S:-1800}" "$PYTHON" deploy/gpu-checks/expert_parallel.py "$@"
rc=$?
if [[ $rc -eq 124 ]]; then echo "FAIL timed out after ${CHECK_TIMEOUT_S:-1800}s" >&2; fi
if [[ $rc -eq 0 ]]; then echo "expert-parallel check: PASS"; else echo "expert-parallel check: FAIL ($rc)"; fi
exit $rc
