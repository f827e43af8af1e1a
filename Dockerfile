# The finpulse image: every service is a subcommand (scorer, monitor, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Pick the torch build: the default is PyPI's; pass e.g.
# --build-arg TORCH_INDEX_URL=<a CPU-only wheel index> for a smaller image.
ARG TORCH_SPEC="torch>=2.2,<3"
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; \
    else pip install "$TORCH_SPEC"; fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY finpulse ./finpulse
COPY ingest ./ingest
COPY models ./models
COPY monitor ./monitor
RUN pip install ".[postgres]"

RUN useradd --create-home finpulse
USER finpulse
ENTRYPOINT ["finpulse"]
CMD ["scorer"]
