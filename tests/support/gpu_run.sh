#!/usr/bin/env bash
# Run the Unsloth path on the lent CUDA machine (device tool), in stages:
#   bash tests/support/gpu_run.sh setup tests train
# setup  install the carried wheels; provision llama.cpp with our own provision_toolchain from the
#        carried sdist-format tarball, exactly as `deploy-to-ollama setup` lays it out
#        (llama-quantize, libdto-llama.so, libdto-kquants.so, converter, gguf-py)
# tests  pytest -m gpu on tests/test_unsloth_backend.py (+ the CLI's bad-input contract)
# train  tests/support/gpu_train_deploy.py: Unsloth fine-tune, deploy((model, tokenizer)), CLI
# verify4bit  --load-in-4bit exports of a trained adapter carried as .gpu_carry/lora_model
#        (the bundle's train/lora_model), with and without --save-merged-4bit, vs the nf4 model
# Afterwards, on the CPU machine: tests/support/gpu_replay.py registers the bundle's deploy
# folders on the real test Ollama and runs the round trip.
# Each stage redoes what it needs from an earlier one when the machine is fresh, and appends its
# wall time to $OUT/times.tsv. Carried beside the tree (tests/support/gpu_prepare.sh makes them):
#   .whl/        unsloth, unsloth_zoo, trl, datasets, bitsandbytes, ollama ... (py3.12, x86-64)
#   .gpu_carry/  llama_cpp_python-0.3.36.tar.xz (the pinned sdist, vendor/llama.cpp trimmed),
#                llama_cpp/ (llama-cpp-python's Python bindings), llama_libs/ (its CPU libs built
#                on the dev machine: a libllama built on the device segfaulted in
#                llama_model_load), probe.f16.gguf (a tiny GGUF to probe them)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NO_COLOR=1 CI=true
export TOKENIZERS_PARALLELISM=false
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT/r"
ROOT="$(pwd)"
export DTO_CACHE_DIR=/tmp/dto-cache DTO_GPU_REPORT_DIR="$OUT/r"
export PYTHONPATH="/tmp/site:$ROOT/.gpu_carry:$ROOT/src:$ROOT/tests"
TOOLCHAIN="$DTO_CACHE_DIR/llama.cpp-0c1e570"
SDIST="$ROOT/.gpu_carry/llama_cpp_python-0.3.36.tar.xz"

timed() {  # timed NAME LIMIT_S COMMAND-STRING: run in bash, log wall time + status to times.tsv
  local name=$1 limit=$2 t0 rc; t0=$(date +%s%N)
  timeout "$limit" bash -c "$3"; rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%d.%03d s\trc=%s\n' "$name" $((ms / 1000)) $((ms % 1000)) "$rc" \
    | tee -a "$OUT/times.tsv"
  return $rc
}

install_wheels() {
  [ -f /tmp/site/.installed ] && return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && touch /tmp/site/.installed
}

probe_tools() {
  for tool in cmake ninja make cc c++ gcc g++; do
    printf '%-6s %s\n' "$tool" "$(command -v $tool || echo MISSING) $($tool --version 2>/dev/null | head -1)"
  done
  # provision_toolchain links llama-quantize with -static: that needs libc.a and libstdc++.a.
  echo 'int main(){return 0;}' > /tmp/t.cc
  if c++ -static -o /tmp/t /tmp/t.cc 2> /tmp/t.err; then echo "static link: ok"
  else echo "static link: FAILED: $(head -2 /tmp/t.err | tr '\n' ' ')"; fi
  nproc; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

provision() {  # our provision_toolchain, the code `deploy-to-ollama setup` runs
  # cmake's default generator needs make; the image is said to have ninja for sure.
  command -v make > /dev/null || export CMAKE_GENERATOR=Ninja
  python3 - "$SDIST" <<'PY'
import json, os, sys, time
from pathlib import Path
from deploy_to_ollama.gguf import toolchain as tc
from deploy_to_ollama.settings import Settings
settings = Settings.from_env()
result = tc.provision_toolchain(settings.cache_dir, sdist=Path(sys.argv[1]), jobs=os.cpu_count())
root = result.toolchain.root
layout = sorted(p.name for p in root.iterdir())
print(json.dumps({"action": result.action, "seconds": round(result.seconds, 1), "root": str(root),
                  "layout": layout, "quant_library": str(result.toolchain.quant_library),
                  "kernel_library": str(result.toolchain.kernel_library)}))
from deploy_to_ollama.gguf.quantizer import QuantLibrary
lib = QuantLibrary(result.toolchain.quant_library, result.toolchain.kernel_library)
print("AVX2 kernels active:", lib.has_kernel)
from deploy_to_ollama.gguf.steps import in_process_quantization
print("in-process quantization:", in_process_quantization(result.toolchain))
PY
}

pick_libllama() {  # which libllama loads a GGUF here (for the greedy llama.cpp comparisons)
  local probe='import sys; from llama_cpp import Llama; Llama(model_path=sys.argv[1], verbose=False); print("ok")'
  for libdir in "$ROOT/.gpu_carry/llama_libs"; do
    if LLAMA_CPP_LIB_PATH="$libdir" python3 -c "$probe" .gpu_carry/probe.f16.gguf > /dev/null 2>&1
    then echo "libllama from $libdir loads a GGUF"; export LLAMA_CPP_LIB_PATH="$libdir"; return 0; fi
    echo "libllama from $libdir FAILED to load a GGUF"
  done
}

versions() {
  python3 - <<'PY' 2>&1 | grep -v Warning | tee "$OUT/r/versions.txt"
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "gpu", torch.cuda.get_device_name(0),
      "cuda", torch.version.cuda)
for n in ("torch", "unsloth", "unsloth_zoo", "transformers", "peft", "trl", "datasets",
          "bitsandbytes", "accelerate", "ollama", "llama_cpp_python"):
    try: print(n, md.version(n))
    except md.PackageNotFoundError: print(n, "bindings only" if n == "llama_cpp_python" else "-")
PY
}

export -f install_wheels probe_tools provision versions
export SDIST OUT ROOT

stage_setup() {
  timed install-wheels 300 install_wheels || return 1
  probe_tools 2>&1 | tee "$OUT/r/tools.txt"
  timed provision-toolchain 420 provision 2>&1 | tee "$OUT/r/provision.txt"
  [ -f "$TOOLCHAIN/libdto-llama.so" ] || { echo "no toolchain: see $OUT/r/provision.txt"; return 1; }
  ls -la "$TOOLCHAIN"
  versions
}

stage_tests() {
  [ -f "$TOOLCHAIN/libdto-llama.so" ] || stage_setup || return 1
  pick_libllama
  # --noconftest: the shared conftest loads plugins (the Ollama server...) this image cannot
  # satisfy; the isolation it gives is set above (offline hub, CI policy).
  timed pytest-gpu 480 "DTO_LLAMA_CPP_DIR=$TOOLCHAIN python3 -m pytest \
    tests/test_unsloth_backend.py -m 'gpu or not gpu' --noconftest -v -rA -p no:cacheprovider \
    --durations=8" 2>&1 | tee "$OUT/r/pytest.log"
}

stage_train() {
  [ -f "$TOOLCHAIN/libdto-llama.so" ] || stage_setup || return 1
  [ -n "${LLAMA_CPP_LIB_PATH:-}" ] || pick_libllama
  timed train-deploy 540 "python3 tests/support/gpu_train_deploy.py $OUT/r/train" 2>&1 \
    | tee "$OUT/r/train.log"
}

stage_verify4bit() {  # the --load-in-4bit exports of a carried trained adapter (.gpu_carry/lora_model)
  [ -f "$TOOLCHAIN/libdto-llama.so" ] || stage_setup || return 1
  [ -n "${LLAMA_CPP_LIB_PATH:-}" ] || pick_libllama
  timed verify-4bit 420 "python3 tests/support/gpu_train_deploy.py $OUT/r/v4 --4bit \
    $ROOT/.gpu_carry/lora_model" 2>&1 | tee "$OUT/r/v4.log"
}

t0=$(date +%s)
for stage in "$@"; do
  echo "=== stage $stage ($(date -u +%T))"
  "stage_$stage"
done
echo "total: $(( $(date +%s) - t0 )) s"
# $OUT brings back at most 8 files: one bundle of the reports, logs and small artefacts.
tar czf "$OUT/bundle.tar.gz" -C "$OUT" r times.tsv 2>/dev/null && rm -rf "$OUT/r"
ls -la "$OUT"
