# syntax=docker/dockerfile:1.7
#
# fapiao-bridge image: one image, every role (api, worker, beat, flower, simulator, migrate);
# docker-compose.yml picks the role with its command.
#
#   builder  python + uv: resolve exactly what uv.lock pins (no dev group) into /app/.venv,
#            then install the project itself into it as a regular (non-editable) wheel.
#   runtime  python slim + that venv, nothing else: no uv, no compilers, no source tree;
#            runs as the unprivileged user "fapiao" (uid/gid 10001).
#
# Build: docker build -t fapiao-bridge:local .   (the build context is the allow-list in
# .dockerignore, so tenants.toml and deploy/fapiao.env never reach the daemon).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

COPY --from=uv /uv /usr/local/bin/uv

# Use the image's interpreter (never download one): the venv's python symlink must point at a
# path that exists in the runtime stage too, which is the same base image.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    uv sync --frozen --no-dev --no-install-project

COPY pyproject.toml uv.lock README.md ./
COPY schemas ./schemas
COPY store ./store
COPY worker ./worker
COPY producers ./producers
COPY simulator ./simulator
COPY migrations ./migrations

# The project as a wheel into site-packages (not a link to /src, which the runtime lacks).
# --reinstall-package: the cache mount outlives builds, and uv keys a local project's built
# wheel on pyproject.toml alone, so a changed source tree would otherwise ship the old wheel.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --reinstall-package fapiao-bridge

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="fapiao-bridge" \
      org.opencontainers.image.description="ERP → Kingdee Invoice Cloud (金蝶发票云) middleware" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid so bind-mounted files (the tenants file) can be made readable to it alone.
# /var/lib/fapiao/* are created here, owned by that user, because a named volume mounted on
# an existing directory starts with the directory's ownership: Flower's history and the
# simulator's state file stay writable without running anything as root.
RUN groupadd --system --gid 10001 fapiao \
    && useradd --system --uid 10001 --gid fapiao --no-create-home \
        --home-dir /var/lib/fapiao --shell /usr/sbin/nologin fapiao \
    && mkdir -p /etc/fapiao /var/lib/fapiao/flower /var/lib/fapiao/simulator \
    && chown -R fapiao:fapiao /var/lib/fapiao

COPY --from=builder /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FAPIAO_TENANTS_FILE=/etc/fapiao/tenants.toml

WORKDIR /var/lib/fapiao
USER fapiao:fapiao

EXPOSE 8000 5555 8765

CMD ["fapiao", "--help"]
