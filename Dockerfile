# Pinned to a patch release and its Debian: a rebuild gets the same Python until this line changes.
FROM python:3.11.15-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Check-in schedules and message times are in KENGELE_TIMEZONE: zoneinfo reads the system's zone
# files, which the slim image leaves out.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tzdata \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/kengele
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
COPY gateways ./gateways
COPY keywords ./keywords
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[postgres]" && useradd --system --home /srv/kengele kengele
USER kengele
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
# As `make run`: migrate, the built-in gazetteer into an empty one, the demo network into an empty
# roster, then serve. In production, or with a gateway that texts phones, `demo load --if-empty`
# prints a note and loads nothing (exit 0): the server starts all the same.
CMD ["sh", "-c", "kengele db upgrade && kengele gazetteer import --builtin --if-empty && kengele demo load --if-empty && exec kengele serve --host 0.0.0.0 --port 8000 --workers ${KENGELE_WORKERS:-2}"]
