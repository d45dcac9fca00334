#!/usr/bin/env bash
# Triton's load generator, perf_analyzer, unmodified, against `splitnet serve` of the
# unet-vgg16 tail: gRPC unary, gRPC streaming and HTTP, at each concurrency given.
#
#   benchmarks/perf_analyzer.sh                      # concurrency 1 and 8, all three modes
#   CONCURRENCY="1 2 4 8" MODES="grpc" benchmarks/perf_analyzer.sh
#   benchmarks/perf_analyzer.sh --fetch-only         # just download and unpack
#
# perf-analyzer >= 2.58 is published only as manylinux_2_38 wheels and a Debian 12 host
# has glibc 2.36, so `pip install perf-analyzer` gives a placeholder without the binary.
# This fetches the real wheel (pip download for the manylinux_2_38 platform) and Debian
# 13's loader and C/C++ runtime (apt with a private configuration pointing at trixie;
# dpkg-deb -x into a private folder, nothing installed on the host), then starts the
# unmodified binary as `LOADER --library-path LIBS perf_analyzer ...`. All of it lives in
# $PA_CACHE (default ~/.cache/splitnet/perf_analyzer), outside the repository.
#
# Environment: PYTHON (default: the venv's python or python3), PA_VERSION (2.60.0),
# CONCURRENCY ("1 8"), MODES ("grpc grpc-stream http"), REPEATS (1, interleaved rounds),
# REQUESTS (96 measured per mode and concurrency, at least 8 a client), INPUT (3x64x384),
# SPLIT (encoder.block3.pool),
# SERVE_ARGS (extra `splitnet serve` options), OUT (results folder, default
# benchmarks/results), NAME (file stem, default perf_analyzer). Any further arguments go
# to benchmarks/perf_analyzer_run.py.
set -euo pipefail

PA_VERSION=${PA_VERSION:-2.60.0}
PA_CACHE=${PA_CACHE:-$HOME/.cache/splitnet/perf_analyzer}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
CONCURRENCY=${CONCURRENCY:-"1 8"}
MODES=${MODES:-"grpc grpc-stream http"}
REPEATS=${REPEATS:-1}
REQUESTS=${REQUESTS:-96}
INPUT=${INPUT:-3x64x384}
SPLIT=${SPLIT:-encoder.block3.pool}
OUT=${OUT:-$ROOT/benchmarks/results}
NAME=${NAME:-perf_analyzer}
DEBS="libc6 libstdc++6 libgcc-s1 zlib1g libssl3t64"

fetch() {
    local pa=$PA_CACHE/$PA_VERSION
    if [[ -x $pa/bin/perf_analyzer && -e $pa/root/.done ]]; then return; fi
    mkdir -p "$pa/wheel" "$pa/bin" "$pa/apt/lists/partial" "$pa/apt/archives/partial" "$pa/debs" "$pa/root"
    echo "fetching perf-analyzer $PA_VERSION (manylinux_2_38) into $pa" >&2
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --platform manylinux_2_38_x86_64 --python-version 3.12 \
        "perf-analyzer==$PA_VERSION" -d "$pa/wheel"
    "$PYTHON" - "$pa" <<'EOF'
import pathlib, stat, sys, zipfile
pa = pathlib.Path(sys.argv[1])
(whl,) = (pa / "wheel").glob("perf_analyzer-*.whl")
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("/perf_analyzer") and "bin" in n]
    if not names:
        sys.exit(f"no perf_analyzer binary in {whl.name}: {z.namelist()[:20]}")
    target = pa / "bin" / "perf_analyzer"
    target.write_bytes(z.read(names[0]))
    target.chmod(target.stat().st_mode | stat.S_IEXEC)
EOF
    # Debian 13's runtime, with apt's state and caches in a private folder
    cat > "$pa/apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
    local apt_opts=(-o "Dir::Etc::SourceList=$pa/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
        -o "Dir::State::Lists=$pa/apt/lists" -o "Dir::Cache=$pa/apt" -o "Dir::State::status=/dev/null"
        -o "APT::Architecture=amd64" -o "Debug::NoLocking=1" -q)
    apt-get "${apt_opts[@]}" update >&2
    (cd "$pa/debs" && apt-get "${apt_opts[@]}" download $DEBS >&2)
    for deb in "$pa"/debs/*.deb; do dpkg-deb -x "$deb" "$pa/root"; done
    touch "$pa/root/.done"
}

fetch
PA=$PA_CACHE/$PA_VERSION
LOADER=$PA/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -e $LOADER ]] || LOADER=$PA/root/lib64/ld-linux-x86-64.so.2
LIBS=$PA/root/usr/lib/x86_64-linux-gnu:$PA/root/lib/x86_64-linux-gnu
perf_analyzer() { "$LOADER" --library-path "$LIBS" "$PA/bin/perf_analyzer" "$@"; }
if [[ ${1:-} == --fetch-only ]]; then
    # without arguments it prints its usage (and exits 99): the binary and its libraries load
    perf_analyzer 2>&1 | head -2 || true
    exit 0
fi

exec "$PYTHON" "$ROOT/benchmarks/perf_analyzer_run.py" --loader "$LOADER" --library-path "$LIBS" \
    --binary "$PA/bin/perf_analyzer" --pa-version "$PA_VERSION" --concurrency $CONCURRENCY --modes $MODES \
    --repeats "$REPEATS" --requests "$REQUESTS" --input "$INPUT" --split "$SPLIT" \
    --out "$OUT" --name "$NAME" ${SERVE_ARGS:+--serve-args "$SERVE_ARGS"} "$@"
