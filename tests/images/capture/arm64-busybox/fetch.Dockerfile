# Fetches Debian's static busybox for arm64 (an ordinary amd64 build: apt only
# downloads and unpacks the package). tests/images/build copies /out/busybox
# out of it into the context of ./Dockerfile and removes this image.
FROM medic-test/bookworm-base:latest
WORKDIR /fetch
RUN set -eux; \
	dpkg --add-architecture arm64; \
	apt-get update; \
	apt-get download busybox-static:arm64; \
	dpkg-deb -x busybox-static_*_arm64.deb /unpacked; \
	mkdir /out; \
	cp /unpacked/bin/busybox /out/busybox; \
	rm -rf /var/lib/apt/lists/* /fetch/*.deb /unpacked
