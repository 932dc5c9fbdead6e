#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test.
#
#   1. pure Rust tests (Maglev properties, flow hash, config, ABI layout);
#   2. privileged tests (root): packet fixtures and the kernel-vs-model
#      comparison through BPF_PROG_TEST_RUN on the real XDP program, map
#      updates and atomic table swaps, attach modes. Each privileged test
#      runs in its own anonymous network namespace, removed by the kernel
#      when the test ends, also when it fails;
#   3. end to end (tests/e2e.rs, tests/doctor.rs): the lab of
#      scripts/lab.sh under a prefix unique to the test — real TCP through
#      every mode, kill -9 and upgrades under traffic, health, ECMP over two
#      LBs — removed (pins included) when the test ends, also on failure.
#
# Also checks formatting and clippy, so the tree stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
. scripts/env.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the privileged tests need root (BPF programs, network namespaces)" >&2
    exit 1
fi

step() { printf '\n== %s\n' "$*"; }

step "format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --all-targets --locked

step "pure tests (no privileges)"
cargo test --locked

step "privileged tests: BPF_PROG_TEST_RUN on the real program, netns"
# One at a time so the fixture table and comparison summary read cleanly.
cargo test --locked -- --ignored --nocapture --test-threads=1

step "all tests passed"
