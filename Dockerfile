# syntax=docker/dockerfile:1
# nsguard: a minimal, non-root image (distroless, no shell).
#   docker build -t nsguard:0.1.0 .
# tests/image.rs runs this file's build steps (as `cargo check`) on exactly the files it copies, so
# a COPY or a stub missing here fails `make test`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Cargo reads every target Cargo.toml declares before it builds one: stub each of them (the library,
# the binary, bench `scale`, tests `faults` and `guard`) and build the dependencies. The bench and
# test stubs stay (never compiled: only `--bin nsguard` is built); the source replaces the others.
RUN mkdir -p src benches tests && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/scale.rs && touch tests/faults.rs tests/guard.rs \
    && cargo build --release --locked --bin nsguard \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin nsguard

# distroless: no shell, no package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/nsguard /usr/local/bin/nsguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nsguard"]
CMD ["run"]
