# syntax=docker/dockerfile:1
# The dcr-operator image: one static binary on scratch, run as a non-root numeric user, no
# shell. For registries and multi-arch builds:
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t <registry>/dcr-operator:<version> .
# Offline (no base image can be pulled), `make image` builds the same final stage from a
# binary built on the host: `--build-arg BINARY_FROM=prebuilt`, which leaves the builder
# stage unused (see sandbox/scripts/build-image.sh).

ARG BINARY_FROM=builder

FROM docker.io/library/rust:1.89-bookworm AS builder
ARG TARGETARCH
ARG GIT_COMMIT=unknown
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "$triple" \
    && DCR_GIT_COMMIT="$GIT_COMMIT" cargo build --release --locked --target "$triple" \
         -p dcr-operator --bin dcr-operator \
    && mkdir -p /out/etc/ssl/certs \
    && cp "target/$triple/release/dcr-operator" /out/dcr-operator \
    && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

# The offline path: /out laid out on the host (target/image/rootfs) by `make image`.
FROM scratch AS prebuilt
COPY target/image/rootfs/ /out/

FROM ${BINARY_FROM} AS binary

FROM scratch
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="dcr-operator" \
      org.opencontainers.image.description="Registers OAuth clients at an identity provider and delivers their credentials as Kubernetes Secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/dcr-operator"
COPY --from=binary /out/ /
USER 65532:65532
ENTRYPOINT ["/dcr-operator"]
CMD ["run"]
