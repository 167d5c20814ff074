# syntax=docker/dockerfile:1
# nsguard: a minimal, non-root image (distroless, no shell).
#   docker build -t nsguard:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# (Cargo.toml names a bench and a test target: stub them too, or cargo cannot read the manifest.)
RUN mkdir -p src benches tests && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/scale.rs && touch tests/faults.rs \
    && cargo build --release --locked --bin nsguard \
    && rm -rf src benches tests
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin nsguard

# distroless: no shell, no package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/nsguard /usr/local/bin/nsguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nsguard"]
CMD ["run"]
