# The magqb service image: one image, the command picks the role (ingress, worker, sandbox).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV MAGQB_DATA_DIR=/data PYTHONUNBUFFERED=1
VOLUME /data
ENTRYPOINT ["magqb"]
