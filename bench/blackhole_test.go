package bench

import (
	"testing"
	"time"
)

// TestIdleIn: the time no span covers inside the window, when the running
// job stopped and when one ran again.
func TestIdleIn(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const never = -1
	cases := []struct {
		name                   string
		spans                  []span
		idleMS, stopMS, runsMS int
	}{
		{"never stopped", []span{{at(-500), at(10000)}}, 0, never, never},
		{"stopped and ran again", []span{{at(-500), at(1600)}, {at(2100), at(10000)}}, 500, 1600, 2100},
		{"stopped for good", []span{{at(-500), at(7000)}}, 3000, 7000, never},
		{"two gaps", []span{{at(-500), at(1000)}, {at(1200), at(3000)}, {at(3500), at(10000)}}, 700, 1000, 1200},
		{"overlapping spans", []span{{at(-500), at(2000)}, {at(1000), at(4000)}, {at(4000), at(10000)}}, 0, never, never},
		{"nothing ran", nil, 10000, 0, never},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			idle, stopped, resumed := idleIn(c.spans, t0, at(10000))
			rel := func(x time.Time) int {
				if x.IsZero() {
					return never
				}
				return int(x.Sub(t0).Milliseconds())
			}
			if idle != time.Duration(c.idleMS)*time.Millisecond || rel(stopped) != c.stopMS || rel(resumed) != c.runsMS {
				t.Fatalf("idle %v, stopped %d, ran again %d; want %d ms, %d, %d", idle, rel(stopped), rel(resumed), c.idleMS, c.stopMS, c.runsMS)
			}
		})
	}
}
