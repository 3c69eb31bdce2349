# shellcheck shell=sh
# Sourced by the Dockerfile's builder stage, which runs on the build platform: the Rust target and
# the C toolchain for Docker's TARGETARCH, so that one builder cross-compiles every architecture
# of the manifest list without emulation. ring and psm compile C and assembly for the target,
# hence CC and AR next to the linker. The binary is a static musl binary either way: rustc links
# the target's own musl (self-contained), the GNU cross compiler only drives the linking.
#
#   TARGETARCH=arm64 . hack/target-arch.sh
#   -> RUST_TARGET, GNU_TRIPLE, CROSS_PACKAGES (Debian packages when the compiler is not there yet),
#      and exported CC_<target>, AR_<target>, CARGO_TARGET_<TARGET>_LINKER
case "${TARGETARCH:-}" in
  amd64) RUST_TARGET=x86_64-unknown-linux-musl GNU_TRIPLE=x86_64-linux-gnu ;;
  arm64) RUST_TARGET=aarch64-unknown-linux-musl GNU_TRIPLE=aarch64-linux-gnu ;;
  *) echo "TARGETARCH must be amd64 or arm64, got '${TARGETARCH:-}'" >&2; return 1 ;;
esac
# Debian names the cross compiler with dashes (gcc-x86-64-linux-gnu) and its libc by architecture
CROSS_PACKAGES="gcc-$(echo "$GNU_TRIPLE" | tr _ -) libc6-dev-$TARGETARCH-cross"
target_env=$(echo "$RUST_TARGET" | tr - _)
export RUST_TARGET GNU_TRIPLE CROSS_PACKAGES
export "CC_$target_env=$GNU_TRIPLE-gcc" "AR_$target_env=$GNU_TRIPLE-ar"
export "CARGO_TARGET_$(echo "$target_env" | tr '[:lower:]' '[:upper:]')_LINKER=$GNU_TRIPLE-gcc"
unset target_env
