# The image runs what a wheel of the project installs, nothing from the source tree:
# the first stage builds the wheel, the second installs it (with the codecs) and nothing else.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/pacs_gateway-*.whl)[codecs]" && rm -rf /wheels
ENV PACSGW_DATA_DIR=/data
VOLUME /data
WORKDIR /data
EXPOSE 11112 8042
HEALTHCHECK --interval=15s --timeout=6s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8042/health').status != 200)"
CMD ["pacs-gateway", "serve"]
