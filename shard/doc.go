// Package shard owns every row of a dataset from the file on disk to the token
// batches a trainer consumes: the Kaggle "Combined Data.csv" reader and its
// row policy (empty, duplicate, bad-label and malformed rows; UTF-8 repair),
// the label map, the deterministic stratified split, the per-epoch row order
// and each rank's share of it, and the tokenized, cached, padded batches.
//
// Everything here is a pure function of the file bytes and the seeds, so every
// trainer reproduces the same split and shards without talking to the others.
// The package knows nothing of tensors: batches are plain int64 slices.
package shard
