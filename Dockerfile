# The Tollgate API. Migrations run with `tollgate migrate` (see docker-compose.yml).
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY db ./db
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --system tollgate
USER tollgate
EXPOSE 8000
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
