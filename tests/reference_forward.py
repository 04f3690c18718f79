#!/usr/bin/env python3
"""An independent LLaMA-family forward pass in plain numpy (float64), the reference that
model/reference_forward_test.cc checks FedPrLLM's LibTorch forward against.

For one named configuration it writes a tiny Hugging Face directory (config.json and
model.safetensors with seeded random float32 weights) and reference.safetensors holding the
input token ids ("tokens", as float32) and the logits this script computes ("logits").

  python3 tests/reference_forward.py --config qwen2 --out /tmp/qwen2

Written from the transformers modelling code of each architecture (RMSNorm, rotate-half
RoPE with the linear / dynamic / llama3 scalings, grouped-query attention with repeat_kv,
SiLU-gated MLP, optional biases, tied embeddings); it shares no code with FedPrLLM.
"""
import argparse
import json
import math
import os
import struct

import numpy as np

BASE = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-5,
            rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2, torch_dtype="float32")

CONFIGS = {
    # LLaMA-2 shapes in miniature: multi-head attention, no biases.
    "llama2": dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False,
                   mlp_bias=False, rope_scaling=None, _name_or_path="meta-llama/Llama-2-7b-hf",
                   transformers_version="4.31.0.dev0", pretraining_tp=1, initializer_range=0.02,
                   use_cache=True),
    # LLaMA with every bias and a head_dim other than hidden / heads.
    "llama-bias": dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=True,
                       mlp_bias=True, head_dim=24, rope_scaling=None),
    # LLaMA-3.1: grouped-query attention and llama3 RoPE scaling (a short original context, so
    # that the tiny head has low, medium and high frequencies).
    "llama3.1": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=2,
                     rope_theta=500000.0, eos_token_id=[2, 3],
                     rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=8, rope_type="llama3")),
    "llama-linear": dict(architectures=["LlamaForCausalLM"], model_type="llama",
                         rope_scaling=dict(type="linear", factor=2.0)),
    # Dynamic NTK scaling is active: the sequence (24) is longer than the context (16).
    "llama-dynamic": dict(architectures=["LlamaForCausalLM"], model_type="llama", max_position_embeddings=16,
                          rope_scaling=dict(type="dynamic", factor=2.0)),
    # Mistral: grouped-query attention, a sliding window longer than the sequence.
    "mistral": dict(architectures=["MistralForCausalLM"], model_type="mistral", num_key_value_heads=2,
                    sliding_window=32, rope_theta=1000000.0),
    # Qwen2: q, k and v biases, tied embeddings, no window in use.
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", num_key_value_heads=2,
                  tie_word_embeddings=True, rope_theta=1000000.0, use_sliding_window=False,
                  sliding_window=32, max_window_layers=2),
}

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def biases(c):
    """Which linears carry a bias, as transformers builds them."""
    if c["architectures"][0] == "Qwen2ForCausalLM":
        return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
    out = set()
    if c.get("attention_bias"):
        out |= set(LINEARS[:4])
    if c.get("mlp_bias"):
        out |= set(LINEARS[4:])
    return out


def make_weights(c, rng):
    h, inter, d = c["hidden_size"], c["intermediate_size"], head_dim(c)
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    shapes = {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, q), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    w = {"model.embed_tokens.weight": rng.standard_normal((c["vocab_size"], h))}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = 1.0 + 0.1 * rng.standard_normal(h)
        w[p + "post_attention_layernorm.weight"] = 1.0 + 0.1 * rng.standard_normal(h)
        for name in LINEARS:
            out, inp = shapes[name]
            w[p + name + ".weight"] = rng.standard_normal((out, inp)) / math.sqrt(inp)
            if name in biases(c):
                w[p + name + ".bias"] = 0.3 * rng.standard_normal(out)
    w["model.norm.weight"] = 1.0 + 0.1 * rng.standard_normal(h)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.standard_normal((c["vocab_size"], h)) / math.sqrt(h)
    # Stored as float32: the reference computes from exactly the stored values.
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def inverse_frequencies(c, seq_len):
    d = head_dim(c)
    base = c["rope_theta"]
    scaling = c.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "dynamic":
        original = scaling.get("original_max_position_embeddings", c["max_position_embeddings"])
        if seq_len > original:
            f = scaling["factor"]
            base = base * ((f * seq_len / original) - (f - 1)) ** (d / (d - 2))
    inv = 1.0 / (base ** (np.arange(0, d, 2, dtype=np.float64) / d))
    if kind == "llama3":
        f, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        out = []
        for freq in inv:
            wavelen = 2 * math.pi / freq
            if wavelen < old / hi:
                out.append(freq)
            elif wavelen > old / lo:
                out.append(freq / f)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * freq / f + smooth * freq)
        inv = np.array(out)
    return inv, (scaling["factor"] if kind == "linear" else 1.0)


def rms_norm(x, weight, eps):
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(c, w, tokens):
    """tokens [batch, seq] -> logits [batch, seq, vocab], in float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    batch, seq = tokens.shape
    heads, kv_heads, d = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c)
    eps = c["rms_norm_eps"]
    inv, position_divisor = inverse_frequencies(c, seq)
    angles = np.outer(np.arange(seq) / position_divisor, inv)
    emb = np.concatenate([angles, angles], axis=-1)  # [seq, d]
    cos, sin = np.cos(emb), np.sin(emb)
    mask = np.triu(np.full((seq, seq), -np.inf), 1)

    def linear(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][tokens]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        hn = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(hn, p + "self_attn.q_proj").reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)
        k = linear(hn, p + "self_attn.k_proj").reshape(batch, seq, kv_heads, d).transpose(0, 2, 1, 3)
        v = linear(hn, p + "self_attn.v_proj").reshape(batch, seq, kv_heads, d).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, heads // kv_heads, axis=1)  # repeat_kv
        v = np.repeat(v, heads // kv_heads, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        attn = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, heads * d)
        x = x + linear(attn, p + "self_attn.o_proj")
        hn = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(hn, p + "mlp.gate_proj")
        x = x + linear(gate / (1.0 + np.exp(-gate)) * linear(hn, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq", type=int, default=24)
    args = parser.parse_args()
    c = dict(BASE, **CONFIGS[args.config])
    rng = np.random.default_rng(args.seed)
    weights = make_weights(c, rng)
    tokens = rng.integers(0, c["vocab_size"], size=(2, args.seq))
    logits = forward(c, weights, tokens)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    write_safetensors(os.path.join(args.out, "model.safetensors"), weights)
    write_safetensors(os.path.join(args.out, "reference.safetensors"),
                      {"tokens": tokens.astype(np.float32), "logits": logits.astype(np.float32)})


if __name__ == "__main__":
    main()
