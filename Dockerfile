# OrderFlow image for the docker-compose deployment: the official Airflow image plus the
# pinned lock. dags/, plugins/ and include/ are mounted by docker-compose.yaml.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
COPY --chown=airflow:root requirements.lock /opt/orderflow/requirements.lock
RUN pip install --no-cache-dir -r /opt/orderflow/requirements.lock
ENV PYTHONPATH=/opt/airflow/plugins:/opt/airflow/include \
    ORDERFLOW_HOME=/opt/airflow
