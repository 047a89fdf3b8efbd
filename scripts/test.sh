#!/usr/bin/env bash
# The test suite on a fresh machine: build deps, the real models (SHA-256 checked), formatting,
# lints, then every test in release (ggml is C++; a debug build would crawl).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
scripts/fetch-models.sh
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
# Tests that need the real models fail (instead of skipping) when they are missing.
# One test at a time: each engine already uses both cores (ggml threads wait on each other at
# every op, so two engines sharing two cores crawl).
BLOCKSPEC_REQUIRE_MODELS=1 cargo test --release --locked --workspace -- --test-threads=1
# The HTTP server through the official openai Python client (builds on the release binary the
# tests above built).
scripts/test-openai.sh
