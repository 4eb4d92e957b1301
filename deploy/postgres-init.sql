-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
-- MLflow's tracking and registry tables go to their own database on the same server, beside
-- the `shipyard` database of the metadata tables (POSTGRES_DB).
CREATE DATABASE shipyard_mlflow OWNER shipyard;
