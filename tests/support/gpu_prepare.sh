#!/usr/bin/env bash
# Prepare, on this machine, what tests/support/gpu_run.sh needs carried to the GPU machine:
# .whl/ (wheels the CUDA image lacks) and .gpu_carry/ (the pinned sdist, trimmed, + bindings).
# Both folders are listed in .git/info/exclude and named in the device call's `carry`.
# Run from the repository root: PY=/path/to/venv/python bash tests/support/gpu_prepare.sh
set -euo pipefail
PY="${PY:-.venv/bin/python}"
SDIST="${SDIST:-${DTO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deploy-to-ollama}/src/llama_cpp_python-0.3.36.tar.gz}"
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
mkdir -p .whl .gpu_carry
# Versions measured to import together with the image's torch 2.11 / transformers 5.17.
"$PY" -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d .whl \
  unsloth==2026.10.9 unsloth_zoo==2026.10.9 "datasets<5" "trl<=1.15.0" dill multiprocess tyro \
  docstring_parser shtab typeguard msgspec hf_transfer cut_cross_entropy torchao pydantic \
  pydantic_core==2.50.5 annotated_types typing_inspection json5 nest_asyncio structlog bitsandbytes \
  diskcache ollama==0.6.3 gguf==0.19.0
# 64 MiB carry limit: drop Unsloth Studio/CLI and bitsandbytes' CUDA 11/12 kernels (image: cu130).
"$PY" tests/support/gpu_strip_wheel.py .whl/unsloth-*.whl studio/ unsloth_cli/
"$PY" tests/support/gpu_strip_wheel.py .whl/bitsandbytes-*.whl \
  bitsandbytes/libbitsandbytes_cuda11 bitsandbytes/libbitsandbytes_cuda12
# The pinned sdist in its own layout (llama_cpp_python-0.3.36/vendor/llama.cpp/...), so that the
# device runs our provision_toolchain(sdist=...) exactly as `setup` does; without docs, models,
# tests, examples and the non-CPU backends (about 5 MB instead of 176 MB).
V=llama_cpp_python-0.3.36; L=$V/vendor/llama.cpp
tmp=$(mktemp -d); tar xzf "$SDIST" -C "$tmp" "$L"
tar cJf .gpu_carry/$V.tar.xz -C "$tmp" \
  --exclude="$L/docs" --exclude="$L/models" --exclude="$L/media" --exclude="$L/tests" \
  --exclude="$L/benches" --exclude="$L/.git*" --exclude="$L/tools/ui" --exclude="$L/examples" \
  --exclude="$L/ggml/src/ggml-"{sycl,vulkan,opencl,hexagon,metal,cuda,et} "$L"
rm -rf "$tmp"
# llama-cpp-python's bindings only; gpu_run.sh points LLAMA_CPP_LIB_PATH at llama_libs/ below.
site=$("$PY" -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')
rm -rf .gpu_carry/llama_cpp && cp -r "$site" .gpu_carry/llama_cpp
rm -rf .gpu_carry/llama_cpp/lib .gpu_carry/llama_cpp/server .gpu_carry/llama_cpp/__pycache__
# ...and its CPU libs built here: a libllama built on the device segfaulted in llama_model_load.
mkdir -p .gpu_carry/llama_libs
for f in libllama.so libggml.so.0 libggml-base.so.0 libggml-cpu.so.0 libggml.so libggml-base.so \
    libggml-cpu.so; do cp -L "$site/lib/$f" .gpu_carry/llama_libs/; done
# A small GGUF to probe which libllama loads on the device (the tiny fixture's base, f16).
tmp=$(mktemp -d)
PYTHONPATH=tests "$PY" -c "import sys; from pathlib import Path; \
from support.unsloth_fixtures import build_tiny_llama_lora as b; b(Path(sys.argv[1]))" "$tmp"
tar xzf "$SDIST" -C "$tmp" --strip-components=3 llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py \
  llama_cpp_python-0.3.36/vendor/llama.cpp/conversion \
  llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py
"$PY" "$tmp/convert_hf_to_gguf.py" "$tmp/base" --outtype f16 --outfile .gpu_carry/probe.f16.gguf
rm -rf "$tmp"
du -sh .whl .gpu_carry
