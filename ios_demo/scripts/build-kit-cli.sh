#!/usr/bin/env bash
# Build `edgetam-kit` (ios_demo/EdgeTAMKitCLI) on Linux against the executorch wheel of the active Python
# environment: its C++ headers (include/) and runtime libraries (lib/). Prints the binary's path as its last line.
#
#   . .venv/bin/activate && ios_demo/scripts/build-kit-cli.sh [debug|release]   (default: release)
set -euo pipefail
configuration="${1:-release}"
case "$configuration" in
    debug|release) ;;
    *) echo "error: the configuration is debug or release, got '$configuration'" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
command -v "$python" >/dev/null || { echo "error: no '$python' on PATH; activate the environment that has executorch (. .venv/bin/activate)" >&2; exit 2; }
command -v swift >/dev/null || { echo "error: no Swift toolchain on PATH (Swift 6 is needed)" >&2; exit 2; }
root="$("$python" -c 'import executorch; print(list(executorch.__path__)[0])' 2>/dev/null)" || {
    echo "error: '$python' cannot import executorch; install the project first (pip install -e \".[export,dev]\")" >&2; exit 2; }
for needed in include/executorch/extension/module/module.h lib/libexecutorch.so; do
    [ -e "$root/$needed" ] || { echo "error: the executorch package at $root has no $needed (a wheel without its C++ runtime)" >&2; exit 2; }
done
EXECUTORCH_ROOT="$root" swift build --package-path "$here/EdgeTAMKitCLI" -c "$configuration" --product edgetam-kit >&2
echo "$(EXECUTORCH_ROOT="$root" swift build --package-path "$here/EdgeTAMKitCLI" -c "$configuration" --show-bin-path)/edgetam-kit"
