// Package serve is `loraft serve`: a classification service over one
// trained adapter, with dynamic batching, a bounded queue and human-review
// routing, answering HTTP JSON (POST /v1/classify) and gRPC
// (loraft.serve.v1.Classifier).
//
// The classifier is a screening and research aid, never a diagnosis. Every
// answer carries needs_review and the rules that fired: a confidence under
// the adapter's review threshold, a label always reviewed (Suicidal by
// default), or a text unlike the training data.
//
// The pieces, in the order a request meets them:
//
//   - Handler (HTTP) and GRPCServer check the caller, the body and each text
//     and call Service.Classify;
//   - Service pins the current Model for the whole request (a swap to a
//     better adapter never mixes two models in one answer), tokenizes, and
//     queues each text, refusing with ErrOverloaded when the queue is full;
//   - the batcher gathers queued texts for up to MaxWait or MaxBatch texts,
//     groups them by model and length (padding is to each batch's longest),
//     and hands batches to Workers goroutines that share the one Model;
//   - Review marks what a person must see.
//
// Follow keeps a Service on a sweep's best adapter as the sweep improves.
package serve
