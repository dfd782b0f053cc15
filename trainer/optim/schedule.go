package optim

// LinearSchedule is HF's get_linear_schedule_with_warmup: the learning rate
// rises linearly from 0 to peak over warmup steps, then falls linearly to 0
// at total steps. step is 0-based (the rate for the update about to happen),
// so with warmup the first update has rate 0, exactly as in HF's Trainer.
func LinearSchedule(peak float64, step, warmup, total int) float64 {
	if step < warmup {
		return peak * float64(step) / float64(warmup)
	}
	if total <= warmup {
		return peak
	}
	return peak * max(0, float64(total-step)/float64(total-warmup))
}
