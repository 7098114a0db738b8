# The production image: Airflow's official image at the pinned version, plus this project.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml README.md /opt/crm/
COPY --chown=airflow:root crm_pipeline /opt/crm/crm_pipeline
# the demo source generator, for compose's demo mode (CRM_DEMO_SOURCE)
COPY --chown=airflow:root crm_devtools /opt/crm/crm_devtools
# SQL and settings: the installed package finds them through CRM_INCLUDE_DIR (compose points
# it at the mounted, editable copy instead)
COPY --chown=airflow:root include /opt/crm/include
ENV CRM_INCLUDE_DIR=/opt/crm/include
# compose's airflow-init (migrate, pool, UI login, demo source)
COPY --chown=airflow:root scripts/compose/airflow-init.sh /opt/crm/airflow-init.sh
RUN pip install --no-cache-dir -r /opt/crm/requirements.txt -c /opt/crm/constraints.txt \
 && pip install --no-cache-dir --no-deps /opt/crm
