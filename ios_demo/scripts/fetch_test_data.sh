#!/usr/bin/env bash
# Download the shared test data (what ../shared/data holds on the development machine) into $1:
# images/{truck,groceries,cars}.jpg from the transformers SAM 2 fixtures and videos/bedroom/ (200 frames)
# from facebookresearch/sam2. Used by .github/workflows/apple.yml; needs network access.
set -euo pipefail
out="${1:?usage: fetch_test_data.sh OUT_DIR}"
mkdir -p "$out/images" "$out/videos"
fixtures="https://huggingface.co/datasets/hf-internal-testing/sam2-fixtures/resolve/main"
for name in truck groceries; do
    curl --fail --location --silent --show-error --retry 3 -o "$out/images/$name.jpg" "$fixtures/$name.jpg"
done
checkout="$(mktemp -d)"
git clone --quiet --depth 1 --filter=blob:none --sparse https://github.com/facebookresearch/sam2 "$checkout"
git -C "$checkout" sparse-checkout set notebooks/videos/bedroom
rm -rf "$out/videos/bedroom"
cp -R "$checkout/notebooks/videos/bedroom" "$out/videos/bedroom"
rm -rf "$checkout"
count=$(ls "$out/videos/bedroom" | grep -c '\.jpg$')
echo "test data in $out: $(ls "$out/images" | tr '\n' ' '), $count bedroom frames"
[ "$count" -ge 6 ]
