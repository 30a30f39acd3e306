# coffer in a container: `coffer daemon` with its metrics on port 9464.
#
#   docker build -t coffer .
#   docker run -d --name coffer \
#     -v /srv/coffer/policies:/etc/coffer/policies:ro \
#     -v coffer-state:/var/lib/coffer \
#     --env-file /etc/coffer/secrets.env \
#     -p 127.0.0.1:9464:9464 coffer
#
# The policies must keep their state in the volume:
#   [settings]
#   state_dir = "/var/lib/coffer"
# Local tiers are further volumes mounted where the policies name them.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin coffer \
    && strip target/release/coffer \
    && ./target/release/coffer --version

FROM debian:bookworm-slim
# ca-certificates: TLS to vCenter, ESXi, S3 and SMTP with public CAs;
# e2fsprogs: the drills' file-system checks (e2fsck).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates e2fsprogs \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/coffer --create-home coffer
COPY --from=build /src/target/release/coffer /usr/local/bin/coffer
USER coffer
WORKDIR /var/lib/coffer
VOLUME ["/var/lib/coffer"]
ENV COFFER_POLICIES=/etc/coffer/policies
EXPOSE 9464
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/coffer"]
CMD ["daemon", "--metrics", "0.0.0.0:9464"]
