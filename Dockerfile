# The Tollgate image: `tollgate serve` by default; the same image runs `tollgate migrate` and
# `tollgate listen` (see docker-compose.yml).
#
# Stage one builds a wheel from the files copied below (tests/test_wheel_install.py builds its
# wheel from exactly these COPY lines, installs it into a fresh virtualenv and runs migrate,
# serve and listen from it, so a file or module the wheel lacks fails CI). Stage two installs
# that wheel, without the `local` and `dev` extras, and nothing else of the source tree.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY db ./db
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --no-create-home tollgate
USER tollgate
EXPOSE 8000
CMD ["tollgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
