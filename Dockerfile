# syntax=docker/dockerfile:1
# The image of the pipeline's own processes. The entrypoint is the `activity` command:
#   docker run IMAGE migrate | relay | worker enrichment | worker sinks | settings
# Build with `docker build -t activity-pipeline .` from the repository root. Dependencies
# come from uv.lock exactly (`uv sync --frozen`); the image runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- builder: resolve nothing, install the locked dependencies and the four distributions ---
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/activity/venv
WORKDIR /src

# Third-party dependencies first, so this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
COPY schemas/pyproject.toml schemas/pyproject.toml
COPY producer/pyproject.toml producer/pyproject.toml
COPY streams/pyproject.toml streams/pyproject.toml
COPY sinks/pyproject.toml sinks/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# Then the project itself, installed as regular (non-editable) packages.
COPY schemas schemas
COPY producer producer
COPY streams streams
COPY sinks sinks
COPY pipeline pipeline
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the virtual environment only, no build tools, no source tree ---
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 activity \
    && useradd --system --uid 10001 --gid activity --home-dir /var/lib/activity \
       --shell /usr/sbin/nologin activity \
    && mkdir -p /var/lib/activity/faust /var/lib/activity/archive \
    && chown -R activity:activity /var/lib/activity
COPY --from=builder /opt/activity/venv /opt/activity/venv
ENV PATH=/opt/activity/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ACTIVITY_FAUST_DATA_DIR=/var/lib/activity/faust \
    ACTIVITY_ARCHIVE_DIR=/var/lib/activity/archive
WORKDIR /var/lib/activity
USER 10001:10001
ENTRYPOINT ["activity"]
CMD ["--help"]
