# The ENTRYPOINT shape: muxshim inside your own image. muxshim-run starts
# muxshim, waits until /var/run/usbmuxd accepts, then runs your command as
# the main process (signals forwarded, zombies reaped, its exit status kept).
#
#   docker build -t my-ios-tests -f docker/examples/app-entrypoint.Dockerfile docker/examples
#   docker run --rm -v /var/run:/run/host:ro my-ios-tests            # Linux host
#
# Needs a glibc-based image (glibc 2.34 or later: Debian 12, Ubuntu 22.04,
# UBI 9 ...); libplist and libseccomp travel with muxshim in /opt/muxshim/lib.
ARG MUXSHIM_IMAGE=muxshim
FROM ${MUXSHIM_IMAGE} AS muxshim

FROM debian:bookworm-slim
# Your tooling; idevice_id stands in for it here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libimobiledevice-utils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=muxshim /opt/muxshim /opt/muxshim
# Linux host: the host's /var/run mounted at /run/host. Windows/macOS hosts:
# --upstream tunnel:host.docker.internal:27016 (and --token-file ...).
ENTRYPOINT ["/opt/muxshim/bin/muxshim-run", "--upstream", "unix:/run/host/usbmuxd", "--"]
CMD ["idevice_id", "-l"]
