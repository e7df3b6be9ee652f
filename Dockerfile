FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY task_bridge ./task_bridge
RUN pip install --no-cache-dir .
ENTRYPOINT []
