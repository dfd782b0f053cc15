package agent

import (
	"fmt"
	"testing"

	"github.com/loraft/loraft/trainer"
)

// TestStoreUnreachableRequeues: a job that gave up on an unreachable store
// is not the trial's fault, so the trial goes back to the queue and resumes
// from its last committed checkpoint.
func TestStoreUnreachableRequeues(t *testing.T) {
	err := fmt.Errorf("%w for 10m0s (s3://b at http://h:9000); last committed step 4", trainer.ErrStoreUnreachable)
	if !ringBroken(err) {
		t.Fatalf("ringBroken(%v) = false, want a retryable error", err)
	}
	if ringBroken(fmt.Errorf("bad hyperparameters")) {
		t.Fatal("an ordinary job error counts as retryable")
	}
}
