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
# HTTPS unless PACSGW_HTTP_PLAIN (behind a proxy); a probe of this very container checks no certificate name.
HEALTHCHECK --interval=15s --timeout=6s CMD python -c "import os,ssl,sys,urllib.request as u; s='http' if os.environ.get('PACSGW_HTTP_PLAIN','').lower() in ('1','true','yes','on') else 'https'; sys.exit(u.urlopen(s+'://127.0.0.1:8042/health',context=ssl._create_unverified_context(),timeout=5).status != 200)"
CMD ["pacs-gateway", "serve"]
