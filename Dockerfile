# The extension image: a static binary on a minimal, non-root base, one manifest list for
# linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/gardener/extensions/runtime-kata:v0.1.0 --push .
# (make release writes the exact command.) The builder runs on the build platform and cross-compiles
# for each TARGETARCH (hack/target-arch.sh), so no stage runs under emulation; only the final stage is
# per platform. Tags follow the extension's version (vX.Y.Z, Cargo.toml); the same image runs in the
# seed and as the node labeler next to kata-deploy in shoots (subcommand node-labeler).
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS builder
ARG TARGETARCH
COPY hack/target-arch.sh /usr/local/lib/target-arch.sh
# the target's Rust standard library, and a C cross compiler unless the build platform is the target
RUN . /usr/local/lib/target-arch.sh \
 && if ! command -v "$GNU_TRIPLE-gcc" >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends $CROSS_PACKAGES && rm -rf /var/lib/apt/lists/*; \
    fi \
 && rustup target add "$RUST_TARGET"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY imagevector ./imagevector
COPY examples ./examples
COPY benches ./benches
COPY tests ./tests
# the binary goes to a path that does not depend on the target, for the final stage
RUN . /usr/local/lib/target-arch.sh \
 && cargo build --release --locked --target "$RUST_TARGET" --bin gardener-extension-runtime-kata \
 && mkdir -p /out && cp "target/$RUST_TARGET/release/gardener-extension-runtime-kata" /out/

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /out/gardener-extension-runtime-kata /gardener-extension-runtime-kata
USER 65532:65532
ENTRYPOINT ["/gardener-extension-runtime-kata"]
