# syntax=docker/dockerfile:1
# The pagerbridge container image: built with the Rust toolchain the project is tested with,
# run on a minimal image (no shell, no package manager) as a non-root user.
#
#   docker build -t registry.example.com/pagerbridge:0.1.0 .
#   docker run --rm -p 9095:9095 -e PAGERBRIDGE_LISTEN=0.0.0.0:9095 \
#     -v "$PWD/pagerbridge.yaml:/etc/pagerbridge/pagerbridge.yaml:ro" \
#     registry.example.com/pagerbridge:0.1.0
#
# The Kubernetes manifests (deploy/kubernetes/, docs/kubernetes.md) run this image with the
# same user id and the same config path. crates/pagerbridge/tests/deploy.rs checks that the
# builder's Rust is at least the workspace's rust-version, that builder and runtime are the same
# Debian release (the binary links glibc dynamically), and that the user is the one the
# manifests expect.

# Build: Debian 12 "bookworm", like the runtime below. aws-lc-sys and the bundled SQLite need
# only the C compiler this image has.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds (BuildKit); the
# binary is copied out of the cached target/ so that the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pagerbridge \
    && install -D -m 0755 target/release/pagerbridge /out/usr/local/bin/pagerbridge \
    && install -d -m 0750 /out/var/lib/pagerbridge

# Run: glibc, libgcc, OpenSSL's libraries (unused: TLS is rustls), CA certificates and tzdata;
# no shell, no package manager. `nonroot` is user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/pagerbridge /usr/local/bin/pagerbridge
# The SQLite store's directory, owned by the user that runs the bridge (its parent is copied so
# that the directory itself, not only its contents, gets the owner). On Kubernetes a volume is
# mounted over it (the single overlay's PersistentVolumeClaim).
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
# Numeric, so that Kubernetes can check runAsNonRoot against the image itself.
USER 65532:65532
WORKDIR /var/lib/pagerbridge
EXPOSE 9095
ENTRYPOINT ["/usr/local/bin/pagerbridge"]
CMD ["serve", "--config", "/etc/pagerbridge/pagerbridge.yaml"]
