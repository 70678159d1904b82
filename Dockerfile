# The sluice broker image: a release build with etcd support on Debian slim.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-server --features etcd && cp target/release/sluice /sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /sluice /usr/local/bin/sluice
EXPOSE 9092 9644
ENTRYPOINT ["sluice", "serve"]
