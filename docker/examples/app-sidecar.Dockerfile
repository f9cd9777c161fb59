# An app image for the sidecar shape: it runs no muxshim of its own. The
# muxshim container shares its socket through a volume mounted at
# /run/muxshim; this one symlink makes it appear at /var/run/usbmuxd, where
# every usbmuxd client looks.
#
#   docker build -t my-ios-app -f docker/examples/app-sidecar.Dockerfile docker/examples
FROM debian:bookworm-slim
# Your tooling; idevice_id stands in for it here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libimobiledevice-utils \
 && rm -rf /var/lib/apt/lists/*
RUN ln -s /run/muxshim/usbmuxd /var/run/usbmuxd
CMD ["idevice_id", "-l"]
