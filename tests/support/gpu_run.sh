#!/usr/bin/env bash
# Run the `gpu` tests of the Unsloth backend on the lent CUDA machine (device tool).
#
# Expects, carried beside the working tree (see tests/support/gpu_prepare.sh, run here first):
#   .whl/        unsloth, unsloth_zoo, trl, datasets, bitsandbytes ... wheels (py3.12, x86-64)
#   .gpu_carry/  llama.cpp-src.tar.xz (vendored llama.cpp of llama-cpp-python 0.3.36, trimmed)
#                llama_cpp/ (llama-cpp-python's pure-Python bindings), llama_libs/ (its CPU libs
#                built on the dev machine), probe.f16.gguf (a tiny GGUF to probe them)
# Builds llama-quantize + libllama there (the image has cmake and ninja), lays llama.cpp out the
# way `deploy-to-ollama setup` does, and runs pytest -m gpu. Logs and JSON reports go to $OUT.
# libllama built here segfaulted in llama_model_load (native and portable AVX2/no-AMX builds
# alike; llama-quantize was fine), so the greedy check uses llama_libs/ when the probe says so.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NO_COLOR=1 CI=true
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
ROOT="$(pwd)"
t0=$(date +%s)

echo "== install carried wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$ROOT/.gpu_carry:$ROOT/src:$ROOT/tests"

echo "== build llama.cpp (llama-quantize + libllama, CPU)"
rm -rf /tmp/llsrc /tmp/llbuild && mkdir -p /tmp/llsrc
tar xJf .gpu_carry/llama.cpp-src.tar.xz -C /tmp/llsrc --strip-components=1
cmake -S /tmp/llsrc -B /tmp/llbuild -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > "$OUT/cmake.log" 2>&1
cmake --build /tmp/llbuild --target llama llama-quantize -j 16 >> "$OUT/cmake.log" 2>&1
t1=$(date +%s); echo "llama.cpp build: $((t1 - t0)) s (incl. wheel install)"

LL=/tmp/llama.cpp; rm -rf "$LL"; mkdir -p "$LL"
cp /tmp/llbuild/bin/llama-quantize "$LL/"
cp -r /tmp/llsrc/convert_hf_to_gguf.py /tmp/llsrc/convert_lora_to_gguf.py /tmp/llsrc/conversion \
  /tmp/llsrc/gguf-py "$LL/"
export DTO_LLAMA_CPP_DIR="$LL" DTO_GPU_REPORT_DIR="$OUT"
"$LL/llama-quantize" --help 2>&1 | head -2 || true

# Which libllama loads a GGUF here: the one just built, or the CPU wheel's libs built on the
# dev machine (optional .gpu_carry/llama_libs)? The first that works serves the greedy check.
probe='import sys; from llama_cpp import Llama; Llama(model_path=sys.argv[1], verbose=False); print("ok")'
for libdir in /tmp/llbuild/bin "$ROOT/.gpu_carry/llama_libs"; do
  [ -d "$libdir" ] || continue
  if [ -f .gpu_carry/probe.f16.gguf ] && LLAMA_CPP_LIB_PATH="$libdir" python3 -c "$probe" \
      .gpu_carry/probe.f16.gguf > /dev/null 2>&1; then
    echo "libllama from $libdir loads a GGUF"; export LLAMA_CPP_LIB_PATH="$libdir"; break
  else
    echo "libllama from $libdir FAILED to load a GGUF (rc=$?)"
  fi
done

echo "== versions"
python3 - <<'PY' 2>&1 | grep -v Warning | tee "$OUT/versions.txt"
import importlib.metadata as md, torch
print("gpu", torch.cuda.get_device_name(0), "torch", torch.__version__)
for n in ("unsloth", "unsloth_zoo", "transformers", "peft", "trl", "datasets", "bitsandbytes",
          "accelerate", "llama_cpp_python"):
    try: print(n, md.version(n))
    except md.PackageNotFoundError: print(n, "bindings only" if n == "llama_cpp_python" else "-")
PY

echo "== pytest -m gpu"
# --noconftest: the shared conftest loads plugins (Ollama server...) this image cannot satisfy;
# the isolation it gives is set above (offline hub, CI policy).
cd "$ROOT"
python3 -m pytest tests/test_unsloth_backend.py -m "gpu or not gpu" --noconftest -v -rA \
  -p no:cacheprovider --durations=5 2>&1 | tee "$OUT/pytest.log"
echo "total: $(( $(date +%s) - t0 )) s"
