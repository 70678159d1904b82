# The sluice broker image: a release build on Debian slim (cargo alone builds it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-server && cp target/release/sluice /sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /sluice /usr/local/bin/sluice
# Any uid works (k8s/ runs it as 10001); state goes under --data-dir.
RUN useradd --uid 10001 --user-group --no-create-home sluice && mkdir /data && chown 10001:10001 /data
USER 10001
WORKDIR /data
EXPOSE 9092 9644
ENTRYPOINT ["sluice", "serve"]
