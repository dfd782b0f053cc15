#!/bin/sh
# Creates loraft's bucket and the per-role S3 users on MinIO, as MinIO's root user; safe to rerun.
# Runs in the minio/minio image (it ships mc) as compose's minio-init service and the Kubernetes
# Job loraft-minio-init. Environment:
#   MC_HOST_local          https://ROOT_USER:ROOT_PASSWORD@HOST:9000 (mc's alias from the environment)
#   SSL_CERT_FILE          the loraft CA, which signed MinIO's certificate
#   POLICIES               directory holding trainer-policy.json and operator-policy.json
#   TRAINER_S3_USER, TRAINER_S3_SECRET_KEY, OPERATOR_S3_USER, OPERATOR_S3_SECRET_KEY
# Secret keys reach mc on its standard input (printf is a shell builtin), never as arguments.
set -eu
n=0
until mc ready local >/dev/null 2>&1; do
  n=$((n + 1))
  if [ "$n" -gt 60 ]; then echo "minio-init: MinIO is not ready after 60 s" >&2; exit 1; fi
  sleep 1
done
mc mb --ignore-existing local/loraft
printf '%s\n%s\n' "$TRAINER_S3_USER" "$TRAINER_S3_SECRET_KEY" | mc admin user add local
printf '%s\n%s\n' "$OPERATOR_S3_USER" "$OPERATOR_S3_SECRET_KEY" | mc admin user add local
mc admin policy create local loraft-trainer "$POLICIES/trainer-policy.json"
mc admin policy create local loraft-operator "$POLICIES/operator-policy.json"
# attach refuses a policy that is already attached (a rerun): look first.
attach() {
  if ! mc admin user info local "$2" | grep -q "^PolicyName: .*$1"; then
    mc admin policy attach local "$1" --user "$2"
  fi
}
attach loraft-trainer "$TRAINER_S3_USER"
attach loraft-operator "$OPERATOR_S3_USER"
echo "minio-init: bucket loraft; users $TRAINER_S3_USER (loraft-trainer), $OPERATOR_S3_USER (loraft-operator)"
