// Package optim holds what turns gradients into parameter updates: AdamW
// (PyTorch's torch.optim.AdamW, decoupled weight decay, bias-corrected
// moments) and HF's linear warmup/decay learning-rate schedule.
//
// The optimizer works on the trainable tensors of a trainer/model.Model
// (model.Param) with gotch tensor ops, in place, and copies its moments to
// and from the host for checkpoints (Moments, Restore), so a resumed run
// takes exactly the updates an uninterrupted one would. The training loop in
// package trainer owns when it is called; optim knows nothing of data,
// checkpoints or the network.
package optim
