// Package checkpoint owns loraft's checkpoint format and the Store interface
// with its S3 (MinIO via minio-go) and local-directory implementations:
// atomic commit (a checkpoint exists once its manifest does), integrity
// (sizes and sha256 verified on load), retention, best selection, and where
// a resumed run continues (LoadLatest, LoadAtOrBefore). It stores opaque
// named objects: what a training checkpoint holds is trainer.State's
// business. It knows nothing of raft or tensors.
//
// Sub-packages: peft writes the HF PEFT adapter directory and model card a
// user gets back; safetensors reads and writes the tensor file format;
// miniotest starts real MinIO servers for tests.
package checkpoint
