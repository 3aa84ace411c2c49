# One image for the producer and every consumer of dwcp-stream; docker-compose.yml picks the
# module to run with `command: python -m <module>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY stream ./stream
COPY models ./models
COPY producers ./producers
COPY consumers ./consumers
COPY schemas ./schemas
COPY data ./data
# The versions in uv.lock, as on every other machine (no dev tools in the image).
RUN pip install "uv==0.13.9" && uv sync --frozen --no-editable --extra fast
ENV PATH="/app/.venv/bin:$PATH"
# numba's compiled reliability loops, cached in the image (no consumer compiles them at start)
RUN python -c "import models.reliability as r; r.precompile()"

# Checkpoints and other state live here; mount a volume to keep them across restarts.
ENV DWCP_STATE_DIR=/var/lib/dwcp
VOLUME ["/var/lib/dwcp"]

CMD ["python", "-m", "consumers.ingest", "--help"]
