#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_safetensors into corpus_safetensors/ (valid and invalid files).

Run from anywhere; the files are committed, so this only needs re-running to change the seeds.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus_safetensors")


def st(header, data=b"", pad=True):
    text = header if isinstance(header, (bytes, str)) else json.dumps(header, separators=(",", ":"))
    text = text.encode() if isinstance(text, str) else text
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def main():
    os.makedirs(OUT, exist_ok=True)
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 448.0)
    seeds = {
        # Valid files.
        "valid_f32": st({"w": entry("F32", [2, 2], 0, 16)}, f32),
        "valid_metadata": st({"__metadata__": {"format": "pt"}, "w": entry("F32", [4], 0, 16)}, f32),
        "valid_all_dtypes": st(
            {
                "a": entry("F8_E4M3", [3], 0, 3),
                "b": entry("U8", [1], 3, 4),
                "c": entry("BF16", [2], 4, 8),
                "d": entry("F16", [2], 8, 12),
                "e": entry("I32", [1], 12, 16),
                "f": entry("I64", [], 16, 24),
                "g": entry("F32", [0, 3], 24, 24),
                "h": entry("F32", [], 24, 28),
            },
            bytes(range(28)),
        ),
        "valid_fp8_scaled": st(
            {"w": entry("F8_E4M3", [2, 3], 0, 6), "w_scale_inv": entry("F32", [1, 1], 8, 12)},
            bytes([0x38, 0x7E, 0xB8, 0x3C, 0x00, 0x01, 0, 0]) + struct.pack("<f", 0.5),
        ),
        "valid_empty": st({}),
        # Invalid files, one problem each.
        "bad_short": b"\x02\x00\x00",
        "bad_header_len": struct.pack("<Q", 1 << 20) + b"{}",
        "bad_not_json": st('{"w": {"dtype": "F32", '),
        "bad_not_object": st("[1, 2, 3]"),
        "bad_dtype": st({"w": entry("F64", [1], 0, 8)}, bytes(8)),
        "bad_negative_shape": st('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', bytes(4)),
        "bad_reversed": st({"w": entry("F32", [1], 4, 0)}, bytes(8)),
        "bad_out_of_range": st({"w": entry("F32", [4], 0, 16)}, bytes(12)),
        "bad_size_mismatch": st({"w": entry("BF16", [4], 0, 16)}, bytes(16)),
        "bad_overlap": st({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12)),
        "bad_overlap_empty_between": st(
            {"a": entry("F32", [4], 0, 16), "e": entry("U8", [0], 4, 4), "z": entry("F32", [1], 8, 12)}, bytes(16)
        ),
        "bad_metadata": st({"__metadata__": {"n": 1}}),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
