#!/usr/bin/env bash
# Install PostgreSQL from Debian's packages if needed, start it on 127.0.0.1:5432, and
# create the CI role and database (password: ci-only-pw; it guards nothing but CI).
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
    pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
done
pg_isready -h 127.0.0.1 -p 5432
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='mlpipe'\"" | grep -q 1 \
    || su postgres -c "psql -qc \"CREATE ROLE mlpipe LOGIN CREATEDB PASSWORD 'ci-only-pw'\""
su postgres -c "psql -qc \"ALTER ROLE mlpipe PASSWORD 'ci-only-pw'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='mlpipe'\"" | grep -q 1 \
    || su postgres -c "psql -qc \"CREATE DATABASE mlpipe OWNER mlpipe\""
# Fresh databases for the tracking stages (through a server; used directly): every CI
# run starts from an empty store.
for store in mlpipe_tracking mlpipe_direct; do
    su postgres -c "psql -qc \"DROP DATABASE IF EXISTS $store WITH (FORCE)\""
    su postgres -c "psql -qc \"CREATE DATABASE $store OWNER mlpipe\""
done
