#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp source vendored in the PyPI sdist of
# llama-cpp-python (pinned), once, into a cache outside the checkout.
#
#   hack/build-llama-server.sh            # build if needed; print the binary's path on stdout
#
# Cache: ${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}/llama.cpp-<version>/bin/llama-server
# A second run finds the binary and only prints its path. Concurrent runs serialise on a lock.
# Progress goes to stderr; stdout carries only the path, so `BIN=$(hack/build-llama-server.sh)` works.
# Env: LLAMA_BUILD_JOBS (default 2), LLMFLEET_CACHE.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36      # vendors llama.cpp commit 0c1e57098 = upstream release b11312
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CACHE_ROOT="${LLMFLEET_CACHE:-$HOME/.cache/llmfleet}"
PREFIX="$CACHE_ROOT/llama.cpp-$LLAMA_CPP_PYTHON_VERSION"
BIN="$PREFIX/bin/llama-server"
JOBS="${LLAMA_BUILD_JOBS:-2}"

log() { echo "build-llama-server: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

# --- tools -------------------------------------------------------------------------------
if ! command -v ninja >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "ninja is missing: installing ninja-build with apt"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q ninja-build >&2 \
            || die "apt-get install ninja-build failed; install ninja (apt-get install ninja-build)"
    else
        die "ninja is missing: install it (apt-get install ninja-build, or pip install ninja)"
    fi
fi
PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
[[ -n "$PYTHON" ]] || die "python3 is missing (needed for 'pip download')"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is missing for $PYTHON (needed to fetch the llama-cpp-python sdist)"
command -v cmake >/dev/null 2>&1 || die "cmake is missing: apt-get install cmake (3.25 or newer)"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
    || die "a C++ compiler is missing: apt-get install g++"
command -v tar >/dev/null 2>&1 || die "tar is missing"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is missing (coreutils)"
command -v flock >/dev/null 2>&1 || die "flock is missing (util-linux)"

mkdir -p "$PREFIX"
exec 9>"$PREFIX/.lock"
if ! flock -n 9; then
    log "another build holds $PREFIX/.lock; waiting for it"
    flock 9
fi
if [[ -x "$BIN" ]]; then      # built by the run we waited for
    echo "$BIN"
    exit 0
fi

# --- source --------------------------------------------------------------------------------
SDIST_DIR="$PREFIX/sdist"
SRC="$PREFIX/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
    mkdir -p "$SDIST_DIR" "$PREFIX/src"
    sdist="$SDIST_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        log "downloading the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist (~77 MB)"
        "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
            --dest "$SDIST_DIR" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2 \
            || die "pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed (is PyPI reachable?)"
    fi
    [[ -f "$sdist" ]] || die "expected $sdist after pip download; found: $(ls "$SDIST_DIR")"
    if ! echo "$SDIST_SHA256  $sdist" | sha256sum -c --quiet - >/dev/null 2>&1; then
        rm -f "$sdist"
        die "$sdist does not have the pinned sha256 $SDIST_SHA256 (removed it; run again)"
    fi
    log "unpacking $sdist"
    rm -rf "$SRC"
    tar -xzf "$sdist" -C "$PREFIX/src" || { rm -rf "$SRC"; die "unpacking $sdist failed"; }
    [[ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]] || die "$sdist has no vendor/llama.cpp"
fi

# --- build ---------------------------------------------------------------------------------
BUILD="$PREFIX/build"
log "configuring llama.cpp in $BUILD"
start=$(date +%s)
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF >&2 || die "cmake configure failed (see above)"
log "building target llama-server with -j$JOBS (about 6 minutes on 2 free cores)"
cmake --build "$BUILD" --target llama-server -j "$JOBS" >&2 || die "build failed (see above)"

built="$BUILD/bin/llama-server"
[[ -x "$built" ]] || die "the build finished but $built is missing"
"$built" --version >/dev/null 2>&1 || die "$built does not run: $("$built" --version 2>&1 | tail -3)"
mkdir -p "$PREFIX/bin"
cp "$built" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"          # atomic: a reader sees no binary or a whole one
log "built in $(( $(date +%s) - start ))s: $BIN"
echo "$BIN"
