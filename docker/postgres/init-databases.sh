#!/usr/bin/env bash
# Runs once, on the first start of an empty PostgreSQL volume (/docker-entrypoint-initdb.d): one role and
# database per consumer, each with its own password from the environment (docker/.env). A re-run on an
# initialised volume never happens; to change a password later use ALTER ROLE.
#   airflow      Airflow metadata DB and the Celery result backend
#   mlflow       MLflow tracking + model registry store
#   mlflow_auth  MLflow basic-auth users and permissions (same role)
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set; copy docker/.env.example to docker/.env and fill it in}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set; copy docker/.env.example to docker/.env and fill it in}"

create() {
  local role=$1 password=$2
  shift 2
  echo "init-databases: role ${role}, databases $*"
  # psql variables (:'pw') quote the password, so any character is safe and nothing lands in argv.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v role="$role" -v pw="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
SQL
  for db in "$@"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v role="$role" -v db="$db" <<'SQL'
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
  done
}

create airflow "$AIRFLOW_DB_PASSWORD" airflow
create mlflow "$MLFLOW_DB_PASSWORD" mlflow mlflow_auth
