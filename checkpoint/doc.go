// Package checkpoint will own loraft's checkpoint format and the Store
// interface with its S3 (MinIO via minio-go) and local-directory
// implementations: atomic commit, integrity, retention, best selection and
// PEFT export. Its sub-package miniotest starts real MinIO servers for tests.
package checkpoint
