# Kailash Gateway image: kailash (static) and the pinned Envoy 1.40.0 on
# scratch, running as uid 65532, read-only root filesystem.
#
#   docker build -t kailash:dev .            # needs a registry (golang image)
#   make image                               # no registry: see deploy/image/Containerfile.local
#
# Both lay out the same root filesystem with deploy/image/rootfs.sh. `make
# image` is the path built and tested in CI (docs/deploy.md, "Helm chart and
# image"); this file's first stage needs golang:1.26-bookworm, which the CI
# machine cannot pull.
FROM docker.io/library/golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=${VERSION}" -o /out/kailash ./cmd/kailash \
 && ./envoy/fetch.sh \
 && deploy/image/rootfs.sh /out /out/kailash bin/envoy

FROM scratch
COPY --from=build /out/rootfs/ /
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/kailash/
ENV PATH=/usr/local/bin \
    ENVOY_BIN=/usr/local/bin/envoy \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /var/lib/kailash
VOLUME ["/tmp", "/var/lib/kailash"]
EXPOSE 8080 8443 9191 9192 18000 18001 8081
ENTRYPOINT ["/usr/local/bin/kailash"]
CMD ["up", "-c", "/etc/kailash/kailash.yaml"]
