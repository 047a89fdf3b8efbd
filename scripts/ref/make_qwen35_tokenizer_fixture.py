#!/usr/bin/env python3
"""llama.cpp reference fixture for the `qwen35` pre-tokenizer (Qwen3.5 / Qwen3.6 GGUFs).

No Qwen3.5 GGUF is at hand, so this reuses the Qwen2.5-Coder-0.5B vocabulary (byte-level BPE,
151k tokens and merges) with `tokenizer.ggml.pre` rewritten from "qwen2" to "qwen35": the two
pre-tokenizers differ only in how they split text around Unicode combining marks (\\p{M}), and
with real merges that changes the ids. Steps:

  1. copy the model GGUF to a temporary file with `tokenizer.ggml.pre = "qwen35"` (stdlib GGUF
     rewrite: the metadata is re-serialized, the tensor data copied unchanged);
  2. start the llama.cpp reference server on the copy, POST /tokenize and /detokenize every
     line of tests/fixtures/tokenizer_corpus.txt, the multi-line cases of
     make_llama_fixtures.py and the mark-heavy cases below (parse_special true and false);
  3. start it again on the unmodified model and record, per case, whether llama.cpp's qwen2
     pre-tokenizer gives other ids (`differs_from_qwen2`), which shows that the cases reach
     the difference.

Output: tests/fixtures/llama/tokenizer-qwen35-<model>.json (same case format as
tokenizer-<model>.json), checked by crates/blockspec/tests/tokenizer_qwen35.rs.

Server binary and model directory as in make_llama_fixtures.py ($LLAMA_SERVER,
$BLOCKSPEC_LLAMA_REF, $BLOCKSPEC_MODELS). Python 3.11 stdlib only; loopback traffic only.

Usage: scripts/ref/make_qwen35_tokenizer_fixture.py [--model qwen05]
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

import make_llama_fixtures as mlf  # same folder
from llama_server import http

# Cases where \\p{M} (combining marks) sits next to letters, digits, spaces, punctuation,
# apostrophes and newlines: the places where [\\p{L}\\p{M}]+ and
# [^\\s\\p{L}\\p{M}\\p{N}]+ (qwen35) split differently from \\p{L}+ and [^\\s\\p{L}\\p{N}]+ (qwen2).
MARK_CASES = [
    ("decomposed_accents", "cafe\u0301 re\u0301sume\u0301 nai\u0308ve fian\u0303cee"),
    ("mark_after_space", "a \u0301b and \u0308x"),
    ("mark_at_start", "\u0301abc"),
    ("mark_after_digit", "1\u0301 2\u0308 3\u20dd 10\u0301"),
    ("mark_after_punct", "!\u0301 ?\u0308 .\u0300,\u0301"),
    ("mark_after_apostrophe", "it'\u0301s don'\u0308t I'\u0300ll"),
    ("marks_only", "\u0301\u0302\u0303 \u0300\u0301"),
    ("mark_newline", "e\u0301\n\u0301e\r\n\u0308"),
    ("devanagari", "हिन्दी भाषा में संयुक्ताक्षर क्ष त्र ज्ञ श्र"),
    ("bengali", "বাংলা ভাষা আমার"),
    ("tamil", "தமிழ் மொழி வணக்கம்"),
    ("thai_marks", "ภาษาไทย น้ำ ที่นี่ ไม้"),
    ("arabic_harakat", "اَلْعَرَبِيَّةُ لُغَةٌ جَمِيلَةٌ"),
    ("hebrew_niqqud", "שָׁלוֹם עוֹלָם"),
    ("vietnamese_nfd", "Tie\u0302\u0301ng Vie\u0302\u0323t"),
    ("korean_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab"),
    ("emoji_vs16", "❤️ ☺️ ✌️ 1️⃣ #️⃣ ©️"),
    ("combining_enclosing", "a\u20dd b\u20de c\u20e3"),
    ("zalgo", "H\u0335\u0321\u0328e\u0336\u031b\u0327l\u0334\u0322l\u0337o\u0338 w\u0335orld"),
    ("code_with_marks", "let nai\u0308ve = \"cafe\u0301\"; // re\u0301sume\u0301\n"),
    ("mark_after_symbol", "$\u0301 €\u0308 +\u0301 =\u0300"),
    ("mark_between_letters_digits", "x\u03011 1\u0301x a1\u0301b"),
    ("cjk_with_marks", "漢\u0301字 かな\u3099 カ\u309a"),
    ("long_mark_run", "o" + "\u0301\u0308\u0300\u0302" * 8 + " end"),
    ("thai_sentence", "ผมชอบกินข้าวผัดกุ้งที่ร้านนี้มากที่สุด เพราะอร่อยและราคาไม่แพง"),
    ("arabic_vocalized", "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ، قَالَ الْمُعَلِّمُ"),
    ("hebrew_vocalized", "בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם וְאֵת הָאָרֶץ"),
    ("myanmar", "မြန်မာဘာသာစကား"),
    ("khmer", "ភាសាខ្មែរ"),
    ("lao", "ພາສາລາວ"),
    ("telugu", "తెలుగు భాష"),
    ("malayalam", "മലയാളം ഭാഷ"),
    ("gujarati", "ગુજરાતી ભાષા"),
    ("sinhala", "සිංහල භාෂාව"),
]

GGUF_STRING = 8
GGUF_ARRAY = 9
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(data: bytes, pos: int, vtype: int) -> int:
    if vtype == GGUF_STRING:
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n
    if vtype == GGUF_ARRAY:
        etype, n = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if etype in SCALAR_SIZES:
            return pos + n * SCALAR_SIZES[etype]
        for _ in range(n):
            pos = _skip_value(data, pos, etype)
        return pos
    return pos + SCALAR_SIZES[vtype]


def rewrite_pre(src: Path, dst: Path, pre: str) -> None:
    """Copy the GGUF `src` to `dst` with tokenizer.ggml.pre set to `pre` (tensor data unchanged)."""
    with open(src, "rb") as f:
        head = f.read(64 << 20)  # metadata + tensor infos of a 151k-token vocabulary fit easily
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", head, 0)
    if magic != b"GGUF" or version != 3:
        raise ValueError(f"{src}: not a GGUF v3 file")
    pos = 24
    out = bytearray(head[:24])
    alignment = 32
    found = False
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", head, pos)
        key = head[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<I", head, pos)
        end = _skip_value(head, pos + 4, vtype)
        if key == "tokenizer.ggml.pre":
            if vtype != GGUF_STRING:
                raise ValueError("tokenizer.ggml.pre is not a string")
            v = pre.encode()
            out += head[start:pos + 4] + struct.pack("<Q", len(v)) + v
            found = True
        else:
            if key == "general.alignment":
                (alignment,) = struct.unpack_from("<I", head, pos + 4)
            out += head[start:end]
        pos = end
    if not found:
        raise ValueError(f"{src}: no tokenizer.ggml.pre")
    infos_start = pos
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", head, pos)
        pos += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", head, pos)
        pos += 4 + 8 * n_dims + 4 + 8  # dims, type, offset (relative to the data section)
    out += head[infos_start:pos]
    data_start = -(-pos // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(out)
        f.seek(data_start)
        while chunk := f.read(1 << 24):
            g.write(chunk)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen05", choices=sorted(mlf.MODELS), help="model key (its vocabulary)")
    args = ap.parse_args()
    fname, sha = mlf.MODELS[args.model]
    model = mlf.MODELS_DIR / fname
    if not model.is_file():
        sys.exit(f"missing {model}; run scripts/fetch-models.sh")
    if mlf.sha256_file(model) != sha:
        sys.exit(f"{model}: sha256 mismatch; re-run scripts/fetch-models.sh")
    binary = mlf.find_server()
    version = mlf.server_version(binary)
    print(f"server: {binary}\n{version}", file=sys.stderr)
    stem = model.name.removesuffix(".gguf")

    mlf.MULTILINE_CASES = mlf.MULTILINE_CASES + [(f"marks_{n}", s) for n, s in MARK_CASES]
    with tempfile.TemporaryDirectory(prefix="qwen35-pre-") as tmp:
        copy = Path(tmp) / f"{stem}-pre-qwen35.gguf"
        rewrite_pre(model, copy, "qwen35")
        with mlf.Server(binary, copy) as srv:
            props = http(srv.base, "/props")
            meta = mlf.common_meta("tokenizer", args.model, model, binary, version, srv, props)
            meta, cases = mlf.tokenizer_fixture(srv, meta)
    meta["server_cmd_note"] = ("the server ran on a temporary copy of the model whose tokenizer.ggml.pre is "
                               "\"qwen35\" (rewrite_pre in the script); `model` is the unmodified file")
    meta["llama_cpp"]["server_cmd"] = meta["llama_cpp"]["server_cmd"].replace(str(copy), f"<{stem}-pre-qwen35.gguf>")
    with mlf.Server(binary, model) as srv:
        n_diff = 0
        for c in cases:
            ids = http(srv.base, "/tokenize", {"content": c["text"], **mlf.TOKENIZE_REQ})["tokens"]
            c["differs_from_qwen2"] = ids != c["ids"]
            n_diff += c["differs_from_qwen2"]
    meta["generated_by"] = "scripts/ref/make_qwen35_tokenizer_fixture.py"
    meta["pre_tokenizer"] = "qwen35"
    meta["differs_from_qwen2"] = (f"{n_diff} of {len(cases)} cases tokenize differently with the unmodified "
                                  "model (pre-tokenizer qwen2)")
    print(f"  {meta['differs_from_qwen2']}", file=sys.stderr)
    mlf.write_fixture(mlf.FIXTURES / f"tokenizer-qwen35-{stem}.json", meta, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
