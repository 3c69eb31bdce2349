# The extension image: a static binary on a minimal, non-root base, for linux/amd64.
#   docker buildx build --platform linux/amd64 -t <registry>/gardener/extensions/runtime-kata:v0.1.0 .
# (make release writes the exact command.) arm64 is not built: see docs/operations.md, "arm64 pools".
# Tags follow the extension's version (vX.Y.Z, Cargo.toml); the same image runs in the seed and as
# the node labeler next to kata-deploy in shoots (subcommand node-labeler).
FROM rust:1.95-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY imagevector ./imagevector
COPY examples ./examples
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin gardener-extension-runtime-kata

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /src/target/x86_64-unknown-linux-musl/release/gardener-extension-runtime-kata /gardener-extension-runtime-kata
USER 65532:65532
ENTRYPOINT ["/gardener-extension-runtime-kata"]
