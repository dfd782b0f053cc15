// Package trainer runs one training job: it builds the QLoRA model a job
// describes, resumes it from a checkpoint, trains it (alone or as one rank
// of a data-parallel ring), checkpoints it, evaluates and calibrates it, and
// writes the trained adapter. `loraft train`, each rank of `loraft trainer`
// and the trainer agent (trainer/agent, which turns coordinator assignments
// into jobs and reports back) all go through RunJob. It knows nothing of
// raft or gRPC.
//
// DESIGN.md's package table gives this package the agent loop too; it lives
// in trainer/agent instead because it speaks the coordinator's gRPC API, so
// that `loraft train` and every test of the training math build without a
// coordinator client, and a job runs the same whoever launched it.
//
// Where things are:
//
//	job.go       Job and RunJob: build the model, pick the checkpoint to resume
//	             (checkpoint.LoadLatest / LoadAtOrBefore), train, save each
//	             checkpoint to the Store and apply its Retention
//	train.go     Hyper, Options, Result and Train: the training loop, in named
//	             steps (startRun, run.epoch, run.stepOn, run.checkpoint, run.finish)
//	step.go      one optimizer step: micro-batches, the gradients' all-reduce
//	             through a Reducer (trainer/allreduce), clipping, AdamW
//	state.go     State: what a checkpoint holds for an exact resume, and its files
//	manifest.go  Manifest, Base and Tokenizer: what a run trains with (loraft.json)
//	adapter.go   WriteAdapter and OpenAdapter: the adapter directory a user gets,
//	             in PEFT's format (checkpoint/peft) plus loraft's own files
//	evaluate.go  Evaluate, Logits and Predict
//	build.go     devices, compute dtypes and the frozen base's weights
//	bench.go     synthetic data and a step timer for benchmarks
//
// Its parts live in sub-packages: model (BERT in gotch), lora, nf4, graph
// (tensor ownership per forward pass), optim (AdamW and the learning-rate
// schedule), allreduce (the ring), metrics, libtorch (thread and seed
// control) and agent.
package trainer
