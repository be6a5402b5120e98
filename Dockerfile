# syntax=docker/dockerfile:1

# shoal's container image: a static binary on a distroless base that runs as a non-root user.
#
#   docker build -t shoal --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run -v shoal-data:/var/lib/shoal -p 127.0.0.1:5080:5080 -p 127.0.0.1:5081:5081 shoal
#
# The default command mirrors Docker Hub and listens on every interface of the container (a
# published port cannot reach a server bound to the container's loopback): the /v2 mirror
# on 5080, the admin endpoints (/metrics, /healthz, /readyz, /status) on 5081, and libp2p
# on 5082. A command
# given to `docker run` replaces it, flags included, so a replacement repeats the listen
# flags it needs, e.g.
#
#   docker run ... shoal node --registry-addr=0.0.0.0:5080 --admin-addr=0.0.0.0:5081
#     --p2p-listen=/ip4/0.0.0.0/tcp/5082 --origin=http://registry.example:5000
#
# or puts them in a YAML file given with --config (see docker-compose.yml). The cache and the
# node's p2p identity live in /var/lib/shoal, declared a volume: give it a named volume
# (which takes the directory's owner, the image's non-root user 65532) or a directory that
# user can write.
#
# The same image runs the optional tracker, whose defaults listen on every interface too:
# its HTTP API on 5090 and libp2p on 5091.
#
#   docker run -v shoal-tracker:/var/lib/shoal-tracker -p 127.0.0.1:5090:5090 shoal tracker
#
# Its data directory, /var/lib/shoal-tracker, holds only its p2p identity and is not declared
# a volume (a node has no use for it): mount a named volume there to keep the identity.

ARG GO_VERSION=1.26

# The build stage runs on the builder's own platform and cross-compiles, so a multi-platform
# build (docker buildx build --platform linux/amd64,linux/arm64) needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, in their own layer, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
# VERSION is what `shoal version` and /status report; the Makefile passes `git describe`.
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o /out/shoal ./cmd/shoal
# The data directories of the node and the tracker, created here because the final image
# has no shell to create them.
RUN mkdir -p /out/data /out/tracker-data

# distroless static: CA certificates (for HTTPS upstreams), /etc/passwd with the nonroot
# user, tzdata; no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shoal /shoal
COPY --from=build --chown=65532:65532 /out/data /var/lib/shoal
COPY --from=build --chown=65532:65532 /out/tracker-data /var/lib/shoal-tracker
USER 65532:65532
VOLUME ["/var/lib/shoal"]
# 5080: the /v2 mirror; 5081: admin (/metrics, /healthz, /readyz, /status; also where
# --bootstrap-dns asks peers for their addresses); 5082: libp2p (TCP). The tracker's: 5090,
# its HTTP API; 5091, libp2p (TCP).
EXPOSE 5080 5081 5082 5090 5091
ENTRYPOINT ["/shoal"]
CMD ["node", "--registry-addr=0.0.0.0:5080", "--admin-addr=0.0.0.0:5081", "--p2p-listen=/ip4/0.0.0.0/tcp/5082", "--upstream=docker.io"]
