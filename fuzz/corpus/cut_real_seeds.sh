#!/usr/bin/env bash
# Cuts the real-data seeds of fuzz/corpus/ (README.md lists them) from /work/shared/data and
# the repository's own example configs. Rerunning rewrites the same files. The project's
# fedprllm-convert (from a normal build, BUILD=build by default) turns stories260K.bin into
# the Hugging Face files whose safetensors header is cut here.
#   fuzz/corpus/cut_real_seeds.sh [DATA_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${1:-/work/shared/data}
build=${BUILD:-$repo/build}
cd "$here"
mkdir -p llama_config llama2c calibration yaml_config safetensors hf_tokenizer mask_codec payload_proto

# mode byte + file: the targets that cover several formats read input[0] as the sub-mode.
with_mode() { { printf "\\x$(printf %02x "$1")"; cat; } > "$2"; }

# config.json: the real ones of the tokenizers' models (gpt2's is not LLaMA: a refusal seed).
for m in gpt2 mistral-7b-v0.1 smollm-135m tinyllama-1.1b-chat-v1.0; do
  cp "$data/tokenizers/$m/config.json" "llama_config/$m-config.json"
done

# llama2.c: the real checkpoints' headers and first weights (the files are 1 MB and 3.7 MB;
# the truncation is itself a refusal seed; fuzz_make_seeds writes complete tiny ones).
head -c 4096 "$data/stories260K/stories260K.bin" > llama2c/stories260K-first4k.bin
head -c 2048 "$data/babyllama-1M/model5000.bin" > llama2c/babyllama-first2k.bin

# safetensors: stories260K converted by the project's own writer; the header and the first
# weights (8 KB of 1 MB), and the config.json written beside it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -x "$build/tools/fedprllm-convert" ]]; then
  "$build/tools/fedprllm-convert" --model "$data/stories260K/stories260K.bin" --out "$tmp/hf" > /dev/null
  head -c 8192 "$tmp/hf/model.safetensors" | with_mode 0 safetensors/stories260K-first8k.bin
  cp "$tmp/hf/config.json" llama_config/stories260K-converted-config.json
else
  echo "note: $build/tools/fedprllm-convert not built; safetensors/stories260K-first4k.bin not refreshed" >&2
fi

# Calibration: the first 2 KB of the real text sets, the first 3 records of C4 (its fields
# are prefix and gold_completion), the same records as "text" fields, and source specs.
head -c 2048 "$data/tinystories/tinystories_val.txt" | with_mode 0 calibration/tinystories-first2k.bin
head -c 2048 "$data/wikitext-2/test.txt" | with_mode 0 calibration/wikitext2-first2k.bin
head -n 3 "$data/c4/c4.jsonl" | with_mode 2 calibration/c4-first3.bin
head -n 3 "$data/c4/c4.jsonl" | python3 -c '
import json, sys
for line in sys.stdin:
    print(json.dumps({"text": json.loads(line)["prefix"][:300]}))' | with_mode 1 calibration/c4-first3-as-text.bin
printf '{"input_ids": [1, 2, 3, 511]}\n{"input_ids": [0, 400]}\r\n' | with_mode 3 calibration/input-ids.bin
i=0
for spec in "c4.jsonl:prefix+gold_completion" "train.bin:uint16" "val.bin:uint32" "tokens.npy" "wiki.test.raw" \
            "c4.jsonl:prefix,gold_completion" "data/part@2.jsonl:text"; do
  printf '%s' "$spec" | with_mode 7 "calibration/spec-$i.bin"
  i=$((i + 1))
done

# YAML: the repository's example configs (every key with its default).
with_mode 0 yaml_config/server-example.bin < "$repo/deploy/server.example.yaml"
with_mode 1 yaml_config/job-example.bin < "$repo/deploy/job.example.yaml"
with_mode 2 yaml_config/client-example.bin < "$repo/deploy/client.example.yaml"

# tokenizer.json: the five real files minimized (1.3-2.1 MB each in full).
for m in gpt2 mistral-7b-v0.1 phi-3-mini smollm-135m tinyllama-1.1b-chat-v1.0; do
  python3 minimize_tokenizer.py "$data/tokenizers/$m/tokenizer.json" "hf_tokenizer/$m-min.json"
done
