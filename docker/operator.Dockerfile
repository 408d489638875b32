# The operator image: light (no torch), non-root, read-only root filesystem friendly.
#   docker build -f docker/operator.Dockerfile -t ghcr.io/dpo-operator/dpo-operator:0.1.0 .
# Base image: a tag, not yet a digest (no registry could be reached where this was written), hence its line in
# docker/unpinned-images.txt. `make pin-images` resolves the digest (docker buildx imagetools inspect, or crane) and
# rewrites each FROM as python:3.11-slim@sha256:<digest>.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY operator ./operator
# the operator's dependencies at the versions CI tested (requirements/lock.txt: `make lock`)
RUN pip install --no-cache-dir --prefix=/install -c requirements/lock.txt .

FROM python:3.11-slim
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["dpo-operator"]
CMD ["run", "--standalone"]
