#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf: small GGUF v3 files assembled field by field from the
GGUF spec (ggml docs/gguf.md), independently of whale's writer. Run from this directory."""
import struct

def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b

def kv_u32(key, v): return s(key) + struct.pack("<II", 4, v)
def kv_str(key, v): return s(key) + struct.pack("<I", 8) + s(v)
def kv_f32(key, v): return s(key) + struct.pack("<If", 6, v)
def kv_strs(key, vs): return s(key) + struct.pack("<IIQ", 9, 8, len(vs)) + b"".join(s(v) for v in vs)
def kv_i32s(key, vs): return s(key) + struct.pack("<IIQ", 9, 5, len(vs)) + b"".join(struct.pack("<i", v) for v in vs)

def gguf(kvs, tensors, version=3):
    """tensors: (name, ne list, ggml type, data bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    data, offset = b"", 0
    for name, ne, t, payload in tensors:
        head += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        head += struct.pack("<IQ", t, offset)
        data += payload + b"\0" * ((-len(payload)) % 32)
        offset += len(payload) + (-len(payload)) % 32
    head += b"\0" * ((-len(head)) % 32)
    return head + data

f32 = struct.pack("<8f", *range(8))
q8_0 = struct.pack("<H", 0x3800) + bytes(range(32))                    # d = 0.5
q4_0 = struct.pack("<H", 0x4000) + bytes((j | (15 - j) << 4) for j in range(16))
q4_k = struct.pack("<HH", 0x3C00, 0x3800) + bytes([1, 2, 3, 196, 0, 1, 2, 131, 69, 86, 103, 31]) + bytes(range(128))
q6_k = bytes(range(128)) + bytes(range(64)) + bytes(range(16)) + struct.pack("<H", 0x3800)
bf16 = struct.pack("<4H", 0x3F80, 0xBF80, 0x4000, 0)
kvs = [kv_str("general.architecture", "deepseek2"), kv_u32("deepseek2.block_count", 1),
       kv_f32("deepseek2.rope.freq_base", 10000.0), kv_str("tokenizer.ggml.model", "gpt2"),
       kv_strs("tokenizer.ggml.tokens", ["a", "b", "ab"]), kv_i32s("tokenizer.ggml.token_type", [1, 1, 1]),
       kv_strs("tokenizer.ggml.merges", ["a b"])]
tensors = [("f32", [4, 2], 0, f32), ("q8_0", [32], 8, q8_0), ("q4_0", [32], 2, q4_0),
           ("q4_K", [256], 12, q4_k), ("q6_K", [256], 14, q6_k), ("bf16", [4], 30, bf16)]
seeds = {
    "all_types.gguf": gguf(kvs, tensors),
    "version2.gguf": gguf(kvs[:2], tensors[:1], version=2),
    "empty.gguf": gguf([], []),
    "aligned64.gguf": gguf([kv_u32("general.alignment", 64)], tensors[:2]),
    "lying_offset.gguf": gguf(kvs[:1], tensors[:1])[:-8],
}
for name, data in seeds.items():
    with open("corpus_gguf/" + name, "wb") as out:
        out.write(data)
