# Multi-stage build: compile with the Rust image, run on a slim Debian as an
# unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY templates templates
COPY static static
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/dzdesk --create-home dzdesk
COPY --from=build /src/target/release/dzdesk-auth /usr/local/bin/dzdesk-auth
USER dzdesk
WORKDIR /var/lib/dzdesk
ENV DZDESK_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["dzdesk-auth"]
CMD ["serve"]
