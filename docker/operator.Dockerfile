# The operator image: light (no torch), non-root, read-only root filesystem friendly.
#   docker build -f docker/operator.Dockerfile -t ghcr.io/dpo-operator/dpo-operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["dpo-operator"]
CMD ["run", "--standalone"]
