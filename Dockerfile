FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv/kengele
COPY pyproject.toml README.md ./
COPY app ./app
COPY gateways ./gateways
COPY keywords ./keywords
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[postgres]" && useradd --system --home /srv/kengele kengele
USER kengele
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["sh", "-c", "kengele db upgrade && exec kengele serve --host 0.0.0.0 --port 8000 --workers ${KENGELE_WORKERS:-2}"]
