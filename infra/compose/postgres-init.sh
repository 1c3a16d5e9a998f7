#!/bin/sh
# First start of the compose PostgreSQL: the runtime role the API and workers connect as (the
# migrations grant it its rights; see the README's "Database roles").
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set app_password="$NIMBUS_APP_PASSWORD" <<'SQL'
create role nimbus_app login password :'app_password';
SQL
