# syntax=docker/dockerfile:1
# Image of `tunnel` (server and client): a static Go binary on distroless,
# running as an unprivileged user. Build from the repository root:
#   docker build -f build/tunnel.Dockerfile -t ghcr.io/l5d-tunnel/tunnel:v0.1.0 .
# (Not built in this repository's CI: no container engine there.)
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY internal/ internal/
COPY pkg/ pkg/
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w" -o /out/tunnel ./cmd/tunnel

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tunnel /tunnel
USER 65532:65532
ENTRYPOINT ["/tunnel"]
