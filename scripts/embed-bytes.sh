#!/usr/bin/env bash
# Writes a C definition of `<name>_bytes` and `<name>_length` holding the bytes of a file.
set -euo pipefail
name=$1
file=$2
echo "/* Generated from $(basename "$file") by scripts/embed-bytes.sh. Do not edit. */"
echo "const unsigned char ${name}_bytes[] = {"
od -An -v -tx1 "$file" | sed -E 's/ ([0-9a-f]{2})/0x\1,/g'
echo "};"
echo "const size_t ${name}_length = sizeof(${name}_bytes);"
