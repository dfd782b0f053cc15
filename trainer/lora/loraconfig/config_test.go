package loraconfig

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestDefault(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"query", "value"}}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("Default() = %+v, want %+v", d, want)
	}
	// experiments/rank-alpha.md: α/r of 2–4 learns, ≤ 1 stalls.
	if s := d.Scaling(); s < 2 || s > 4 {
		t.Fatalf("default scaling α/r = %v, want 2..4", s)
	}
}

func TestValidate(t *testing.T) {
	ok := Default()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"rank 0", func(c *Config) { c.Rank = 0 }, "invalid lora config: rank 0, want 1..1024"},
		{"rank too big", func(c *Config) { c.Rank = MaxRank + 1 }, "rank 1025"},
		{"alpha 0", func(c *Config) { c.Alpha = 0 }, "alpha 0, want > 0"},
		{"alpha NaN", func(c *Config) { c.Alpha = math.NaN() }, "alpha NaN"},
		{"alpha Inf", func(c *Config) { c.Alpha = math.Inf(1) }, "alpha +Inf"},
		{"dropout 1", func(c *Config) { c.Dropout = 1 }, "dropout 1, want in [0, 1)"},
		{"dropout NaN", func(c *Config) { c.Dropout = math.NaN() }, "dropout NaN"},
		{"dropout 0", func(c *Config) { c.Dropout = 0 }, ""},
		{"no targets", func(c *Config) { c.Targets = ParseTargets(" , ") }, "no target modules"},
	} {
		c := ok
		tc.edit(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Validate() = %v, want ErrConfig with %q", tc.name, err, tc.want)
		}
	}
}
