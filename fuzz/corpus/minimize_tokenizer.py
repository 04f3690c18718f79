#!/usr/bin/env python3
"""Writes a minimized variant of a real tokenizer.json: every key and component kept as is
(normalizer, pre-tokenizer, post-processor, decoder, added tokens, model options), the BPE
vocabulary cut to the ids below --keep (which holds the byte tokens of both BPE kinds), and
the merges cut to those whose parts and result survive. The real files are 1.3-2.1 MB, too
big to be useful fuzz seeds; these are tens of KB.

    minimize_tokenizer.py IN/tokenizer.json OUT.json [--keep 600]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--keep", type=int, default=600)
    args = ap.parse_args()
    with open(args.src, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    vocab = {t: i for t, i in model["vocab"].items() if i < args.keep}
    prefix = model.get("continuing_subword_prefix") or ""
    merges = []
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and (a + b[len(prefix):]) in vocab:
            merges.append(m)
    model["vocab"] = vocab
    model["merges"] = merges
    with open(args.dst, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
