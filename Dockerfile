# The DIMSE gateway (python -m gateway): the same image runs as an Azure Container App and on-premises.
#   docker build -t dicomflow-gateway .
#   docker run -p 11112:11112 -e DicomStorage__blobServiceUri=... -e DicomStorage__tableServiceUri=... dicomflow-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DICOMFLOW_GATEWAY_HOST=0.0.0.0 DICOMFLOW_GATEWAY_PORT=11112
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# Only what the gateway runs: its package and the shared domain library.
COPY shared/ shared/
COPY gateway/ gateway/
RUN useradd --system --uid 10001 gateway && mkdir -p /certs && chown gateway /certs
USER 10001
EXPOSE 11112
ENTRYPOINT ["python", "-m", "gateway"]
