# The worker image for docker-compose.yml.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 iptables nftables \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vpcq ./vpcq
RUN pip install --no-cache-dir .
ENTRYPOINT []
