FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY storage ./storage
RUN pip install --no-cache-dir '.[codecs]'
ENV PACSGW_DATA_DIR=/data
VOLUME /data
EXPOSE 11112 8042
HEALTHCHECK --interval=15s --timeout=6s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8042/health').status != 200)"
CMD ["pacs-gateway", "serve"]
