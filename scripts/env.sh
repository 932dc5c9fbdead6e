# Sourced by the scripts: puts rustup's cargo on PATH. Under sudo that is
# the invoking user's toolchain (sudo makes HOME root's and drops
# ~/.cargo/bin from PATH), unless root has one of its own.
_lethe_home="$HOME"
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    _lethe_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
fi
export CARGO_HOME="${CARGO_HOME:-$_lethe_home/.cargo}"
if [ -z "${RUSTUP_HOME:-}" ] && [ -d "$_lethe_home/.rustup" ]; then
    export RUSTUP_HOME="$_lethe_home/.rustup"
fi
export PATH="$CARGO_HOME/bin:$PATH"
unset _lethe_home
