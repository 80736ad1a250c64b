# quorum's server in a container (docs/deployment.md, "A container").
#
#   docker build -t quorum .
#   head -c 24 /dev/urandom | base64 > token    # at least 16 characters, no spaces
#   docker run --rm -p 127.0.0.1:8000:8000 -v quorum-data:/var/lib/quorum \
#       -v "$PWD/token:/run/secrets/quorum_token:ro" quorum
#
# The build reaches the network for the two base images and the crate
# registry only (`cargo fetch`); the build itself runs --offline. The builder
# is the toolchain the project is tested with, on Debian bookworm with g++
# (build.rs compiles the GPU kernels' emulator); no CUDA is needed to build
# or to run: the binary loads the CUDA driver at run time when a GPU is given
# (`docker run --gpus all ... serve --backend cuda`), else serves on the CPU.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo fetch --locked
RUN cargo build --release --locked --offline --bin quorum

# The runtime: glibc and libstdc++ as the builder's (bookworm), nothing else.
FROM debian:bookworm-slim
COPY --from=build /src/target/release/quorum /usr/local/bin/quorum
RUN useradd --system --home-dir /var/lib/quorum --create-home quorum
USER quorum
WORKDIR /var/lib/quorum
VOLUME /var/lib/quorum
EXPOSE 8000
# The health check the orchestrator polls is GET /health/ready (or KServe's
# /v2/health/ready); the image has no HTTP client of its own to run one.
ENTRYPOINT ["quorum", "--log-format", "json"]
# Inside the container the server binds every address, so it needs the token;
# publish the port on the host's loopback (-p 127.0.0.1:8000:8000) unless a
# TLS proxy stands in front. Models: DATA/weights, the repository that
# `quorum train --data /var/lib/quorum` publishes into.
CMD ["serve", "--bind", "0.0.0.0:8000", "--allow-remote", "--allow-host", "localhost", \
     "--token-file", "/run/secrets/quorum_token", "--data", "/var/lib/quorum"]
