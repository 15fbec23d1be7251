# The controller's image. BASE is any image with Python >= 3.10 and its venv module: the official
# python image by default; the test bed passes its own local Debian base (no registry there).
# Build with scripts/build-image.sh, which first builds the wheels into build/wheels so that the
# image build itself needs no network.
ARG BASE=python:3.12-slim
FROM ${BASE}
LABEL org.opencontainers.image.title=interlock-swarm
ENV PYTHONUNBUFFERED=1 PATH=/opt/interlock/bin:$PATH
COPY build/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/interlock \
 && /opt/interlock/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels interlock-swarm \
 && rm -rf /tmp/wheels \
 && (id interlock >/dev/null 2>&1 || useradd --system --uid 10001 --user-group \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin interlock)
COPY image/entrypoint.sh /usr/local/bin/interlock-entrypoint
EXPOSE 9100
ENTRYPOINT ["interlock-entrypoint"]
CMD ["run"]
