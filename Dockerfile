# medic's image. Dependencies are installed from wheels built on the host by
# scripts/build-image, so the build needs no package index and works offline.
#
#   scripts/build-image                          # default base: python:3.11-slim
#   BASE_IMAGE=medic-test/bookworm-python scripts/build-image   # any Debian with python3-venv
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: a virtualenv with medic and its dependencies, installed from the wheels.
# pip itself is removed afterwards; the wheels never reach the final image.
FROM ${BASE_IMAGE} AS build
RUN python3 -m venv /opt/medic
COPY build/wheels /tmp/wheels
RUN /opt/medic/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheels medic \
 && /opt/medic/bin/pip uninstall --yes --quiet pip setuptools

# Stage 2: the same base with only the virtualenv, the bundled playbooks, and git
# (fix branches are made in MEDIC_REPO by running git). No recommended packages and no
# apt lists are kept, so git adds only itself and its few libraries.
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/medic /opt/medic
COPY playbooks /opt/medic/playbooks

# medic runs as its own user (uid and gid 10001), or as the uid:gid that owns the
# mounted repository (MEDIC_USER/MEDIC_GROUP in compose/medic.yml), so that fix
# branches can be written into its .git. To reach the Docker socket either needs the
# socket's group: compose/medic.yml adds it with group_add (DOCKER_GID, see README).
# The state folder is writable by any uid, like /tmp (the sticky bit keeps each uid's
# files its own), because a named volume mounted there starts as a copy of it, mode
# included. HOME points there too, so git and Python need no passwd entry for the uid.
RUN groupadd --system --gid 10001 medic \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/medic --no-create-home medic \
 && mkdir -p /var/lib/medic \
 && chmod 1777 /var/lib/medic

ENV PATH=/opt/medic/bin:$PATH \
    HOME=/var/lib/medic \
    MEDIC_PLAYBOOKS=/opt/medic/playbooks \
    MEDIC_STATE_DIR=/var/lib/medic \
    MEDIC_HTTP_PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/medic
EXPOSE 8080

# The health check asks /healthz with bash alone (its /dev/tcp): starting a Python
# interpreter every 30 s cost more CPU than medic's own idle loop.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${MEDIC_HTTP_PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 line <&3 && [[ $line == 'HTTP/1.'?' 200 '* ]]"]

ENTRYPOINT ["medic"]
CMD ["run"]
