#!/usr/bin/env python3
"""Generate a tiny llama-architecture GGUF with seeded random weights, for real-engine tests.

    hack/make-tiny-model.py [tiny|small|all] [--seed N] [--out PATH] [--force]

Prints the path of each model on stdout (progress goes to stderr). Models are cached in
``${LLMFLEET_CACHE:-~/.cache/llmfleet}/models/llmfleet-<size>-s<seed>-v<version>.gguf``; a second run
finds the file and only prints its path. The same seed always gives the same bytes.

Sizes:
  tiny   2 layers, hidden 128, f32   (~2.4 MB): fast to load, for protocol tests
  small  8 layers, hidden 512, f16   (~68 MB):  for throughput and latency measurements

The tokenizer is an embedded byte-level BPE (``tokenizer.ggml.model=gpt2``): the 256 byte tokens in
GPT-2's byte-to-unicode spelling, a few merges, and the special tokens ``<|endoftext|>``,
``<|im_start|>``, ``<|im_end|>``; the chat template is ChatML.

The weights are random but arranged so that the model can only ever emit printable ASCII byte
tokens (0x20..0x7e, minus a few characters a chat parser may hold back): never end-of-text, never a
control token, never a merge. Every request therefore runs exactly to ``max_tokens``, one token per
streamed event. How: residual dimension 0 carries a positive constant (embedding column 0 is ``C``
for every token and no layer writes to dimension 0), so after the final RMSNorm dimension 0 is
always positive; every forbidden token's output row is ``-BIG`` on dimension 0 and zero elsewhere,
every allowed token's row is random with 0 on dimension 0. Forbidden logits are then below
``-BIG * g0 * hn0`` (about -10^4), allowed logits are O(1).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERSION = 1  # bump when the layout below changes: it is part of the cache file name

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Characters a chat-output parser might buffer as the start of a tag or a tool call; the model
# never emits them, so each sampled token is streamed as soon as it is decoded.
HELD_BACK = set("<>[]{}`\\|")

MERGES = [
    ("Ġ", "t"), ("Ġ", "a"), ("h", "e"), ("i", "n"), ("r", "e"), ("o", "n"), ("Ġt", "he"),
    ("e", "r"), ("Ġ", "s"), ("a", "t"), ("Ġ", "w"), ("Ġ", "o"), ("e", "n"), ("Ġ", "c"),
    ("i", "t"), ("i", "s"), ("a", "n"), ("o", "r"), ("e", "s"), ("Ġ", "b"),
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    f16: bool


SIZES = {
    "tiny": Size(layers=2, hidden=128, ffn=512, heads=4, kv_heads=4, f16=False),
    "small": Size(layers=8, hidden=512, ffn=2048, heads=8, kv_heads=8, f16=True),
}
CONTEXT_LENGTH = 32768  # training context the model claims; --ctx-size picks the real one


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def vocabulary() -> tuple[list[str], list[int], list[str], list[int], dict[str, int]]:
    """Tokens, token types, merges, the ids the model may emit, and the special token ids."""
    import gguf

    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]  # token id == byte value
    types = [gguf.TokenType.NORMAL] * 256
    merges = []
    for left, right in MERGES:
        assert left in tokens and right in tokens, (left, right)
        merges.append(f"{left} {right}")
        tokens.append(left + right)
        types.append(gguf.TokenType.NORMAL)
    special_ids = {}
    for special in SPECIALS:
        special_ids[special] = len(tokens)
        tokens.append(special)
        types.append(gguf.TokenType.CONTROL)
    allowed = [b for b in range(0x20, 0x7F) if chr(b) not in HELD_BACK]
    return tokens, [int(t) for t in types], merges, allowed, special_ids


def cache_dir() -> Path:
    return Path(os.environ.get("LLMFLEET_CACHE") or Path.home() / ".cache" / "llmfleet") / "models"


def default_path(size: str, seed: int) -> Path:
    return cache_dir() / f"llmfleet-{size}-s{seed}-v{VERSION}.gguf"


def build_tensors(size: Size, seed: int, n_vocab: int, allowed: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f = size.hidden, size.ffn
    head_dim = d // size.heads
    kv_dim = head_dim * size.kv_heads
    wtype = np.float16 if size.f16 else np.float32

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        # numpy shape (out, in) == ggml ne [in, out]
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(wtype)

    c = float(np.sqrt(d))  # the constant carried in residual dimension 0
    embd = rng.standard_normal((n_vocab, d), dtype=np.float32)
    embd[:, 0] = c
    tensors: dict[str, np.ndarray] = {"token_embd.weight": embd.astype(wtype)}
    for i in range(size.layers):
        attn_out = matrix(d, d, 0.5 / np.sqrt(d))
        attn_out[0, :] = 0  # nothing writes residual dimension 0
        ffn_down = matrix(d, f, 0.5 / np.sqrt(f))
        ffn_down[0, :] = 0
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(d, dtype=np.float32),
            f"blk.{i}.attn_q.weight": matrix(d, d, 1 / np.sqrt(d)),
            f"blk.{i}.attn_k.weight": matrix(kv_dim, d, 1 / np.sqrt(d)),
            f"blk.{i}.attn_v.weight": matrix(kv_dim, d, 1 / np.sqrt(d)),
            f"blk.{i}.attn_output.weight": attn_out,
            f"blk.{i}.ffn_norm.weight": np.ones(d, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": matrix(f, d, 1 / np.sqrt(d)),
            f"blk.{i}.ffn_up.weight": matrix(f, d, 1 / np.sqrt(d)),
            f"blk.{i}.ffn_down.weight": ffn_down,
        }
    out_norm = np.ones(d, dtype=np.float32)
    out_norm[0] = 100.0  # g0: amplifies only the forbidden rows' (always positive) dimension 0
    output = np.zeros((n_vocab, d), dtype=np.float32)
    output[:, 0] = -100.0  # forbidden: logit = -100 * g0 * hn0
    allowed_rows = np.array(allowed)
    output[allowed_rows, 1:] = rng.standard_normal((len(allowed), d - 1), dtype=np.float32) * (2.0 / np.sqrt(d))
    output[allowed_rows, 0] = 0.0
    tensors["output_norm.weight"] = out_norm
    tensors["output.weight"] = output.astype(wtype)
    return tensors


def write_model(size_name: str, seed: int, path: Path) -> None:
    import gguf

    size = SIZES[size_name]
    tokens, types, merges, allowed, special_ids = vocabulary()
    tensors = build_tensors(size, seed, len(tokens), allowed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    writer.add_name(f"llmfleet-{size_name}")
    writer.add_description(f"llmfleet test model: random weights, seed {seed}, layout v{VERSION}; emits printable ASCII only")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(size.hidden)
    writer.add_block_count(size.layers)
    writer.add_feed_forward_length(size.ffn)
    writer.add_head_count(size.heads)
    writer.add_head_count_kv(size.kv_heads)
    writer.add_rope_dimension_count(size.hidden // size.heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if size.f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special_ids["<|endoftext|>"])
    writer.add_eos_token_id(special_ids["<|im_end|>"])
    writer.add_eot_token_id(special_ids["<|im_end|>"])
    writer.add_pad_token_id(special_ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)  # atomic: readers see no file or a whole one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("size", nargs="?", default="all", choices=[*SIZES, "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output file (only with a single size)")
    parser.add_argument("--force", action="store_true", help="rewrite the file even if it exists")
    args = parser.parse_args(argv)
    sizes = list(SIZES) if args.size == "all" else [args.size]
    if args.out and len(sizes) != 1:
        parser.error("--out needs a single size")
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("make-tiny-model: the 'gguf' package is missing: pip install 'gguf>=0.10'", file=sys.stderr)
        return 1
    for size in sizes:
        path = args.out or default_path(size, args.seed)
        if path.exists() and not args.force:
            print(path)
            continue
        print(f"make-tiny-model: writing {size} (seed {args.seed}) to {path}", file=sys.stderr)
        write_model(size, args.seed, path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
