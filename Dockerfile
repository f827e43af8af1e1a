# The finpulse image: every service is a subcommand (scorer, monitor, notifier, api, ...).
#
# torch: CPU wheels by default (a ~200 MB torch instead of ~2.5 GB of CUDA libraries).
# CUDA variant, for scorers on NVIDIA GPUs (host needs the NVIDIA container toolkit):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 -t finpulse:cuda .
# (or set FINPULSE_TORCH_INDEX_URL in .env for docker compose, and uncomment the scorer's
# `deploy:` block in docker-compose.yml). An empty TORCH_INDEX_URL installs PyPI's default build.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

ARG TORCH_SPEC="torch>=2.2,<3"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; \
    else pip install "$TORCH_SPEC"; fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY finpulse ./finpulse
COPY ingest ./ingest
COPY models ./models
COPY monitor ./monitor
COPY dashboards ./dashboards
RUN pip install ".[postgres]"

# /models: the shared volume where promoted models live (readable by every scorer).
RUN useradd --create-home finpulse && mkdir -p /models && chown finpulse /models
USER finpulse
VOLUME ["/models"]
ENTRYPOINT ["finpulse"]
CMD ["scorer"]
