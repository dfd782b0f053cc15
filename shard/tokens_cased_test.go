package shard

import "testing"

// casedEncoder is spaceEncoder reporting do_lower_case as set.
type casedEncoder struct {
	spaceEncoder
	lower bool
}

func (e *casedEncoder) LowerCase() bool { return e.lower }

// TestTokensKeyCased: a cased tokenizer on the same vocabulary gets its own
// cache entry (it gives other ids); an uncased one keeps the key it always
// had, so existing caches stay valid.
func TestTokensKeyCased(t *testing.T) {
	ds := tokensFixture(t)
	plain := TokensKey(ds, &spaceEncoder{}, 6)
	if got := TokensKey(ds, &casedEncoder{lower: true}, 6); got != plain {
		t.Errorf("uncased key %s, want the plain encoder's %s", got, plain)
	}
	if got := TokensKey(ds, &casedEncoder{lower: false}, 6); got == plain {
		t.Errorf("cased key %s equals the uncased one", got)
	}
}
