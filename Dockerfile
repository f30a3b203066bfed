# steplog worker/API image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
COPY connectors ./connectors
COPY schemas ./schemas
COPY examples ./examples
RUN pip install --no-cache-dir -e .
ENV STEPLOG_DATA_DIR=/data
EXPOSE 8288
CMD ["steplog", "--help"]
