package serve

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loraft/loraft/internal/bearer"
	"github.com/loraft/loraft/proto/servepb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// writeAdapter writes a real adapter directory: the tiny BERT shape on a
// random base (seeded, so two seeds give two different classifiers), NF4,
// LoRA on every linear layer, with a validation report whose review
// threshold is reviewBelow.
func writeAdapter(t *testing.T, seed uint64, reviewBelow float64) string {
	t.Helper()
	adaptersMu.Lock()
	defer adaptersMu.Unlock()
	key := fmt.Sprint(seed, reviewBelow)
	if dir, ok := adapters[key]; ok {
		return dir
	}
	m, man := tinyAdapter(t, seed)
	defer m.Drop()
	res := &trainer.Result{Temperature: 1, Val: metrics.Report{N: 10, ReviewBelow: reviewBelow, ReviewTarget: 0.9}}
	dir := filepath.Join(adapterRoot, key)
	if err := trainer.SaveAdapter(dir, m, man, res, wordpiece.BertBaseUncasedVocab()); err != nil {
		t.Fatal(err)
	}
	adapters[key] = dir
	return dir
}

// tinyAdapter is the tiny BERT shape on a random base, NF4, with LoRA
// (rank 4, alpha 8) on every linear layer and the LoRA and classifier
// initialized from seed, plus the manifest that describes it. The caller
// drops the model.
func tinyAdapter(t *testing.T, seed uint64) (*model.Model, trainer.Manifest) {
	t.Helper()
	c := model.Tiny()
	l := lora.Config{Rank: 4, Alpha: 8, Targets: []string{lora.AllLinear}}
	m, err := model.New(c, model.RandomWeights(c, 0), nil, nil, model.Options{Quant: model.NF4, Compute: gotch.Float,
		Device: gotch.CPU, LoRA: l, Labels: shard.NumLabels, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	man := trainer.Manifest{Base: trainer.Base{ConfigName: "tiny", Config: c, Quant: model.NF4, Compute: "fp32"},
		LoRA: l, Hyper: trainer.DefaultHyper(), Temperature: 1, Labels: shard.LabelNames(),
		Tokenizer: trainer.Tokenizer{MaxLen: 32, LowerCase: true}}
	man.Hyper.Seed = seed
	return m, man
}

// Adapters are written once per test binary: each takes a model build.
var (
	adaptersMu  sync.Mutex
	adapters    = map[string]string{}
	adapterRoot string
)

func TestMain(m *testing.M) {
	var err error
	if adapterRoot, err = os.MkdirTemp("", "serve-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(adapterRoot)
	os.Exit(code)
}

func openAdapter(t *testing.T, dir, name string) *Model {
	t.Helper()
	m, err := OpenAdapter(dir, "", name, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newService(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

var statements = []string{
	"i have not slept in three days and my thoughts are racing",
	"exams next week and my boss wants the report by friday",
	"had a nice walk in the park with my dog",
	"i feel empty and nothing matters anymore, i just want it all to stop",
	"why does my heart pound every time the phone rings",
	"ok",
}

func TestReviewRules(t *testing.T) {
	m := &Model{MaxLen: 32, ReviewBelow: 0.6}
	r := DefaultReview()
	tests := []struct {
		name  string
		label string
		conf  float64
		sig   textSignals
		rules []string
	}{
		{"confident and ordinary", "Normal", 0.9, textSignals{fullLen: 10, pieces: 8}, nil},
		{"under the adapter's threshold", "Normal", 0.59, textSignals{fullLen: 10, pieces: 8}, []string{RuleLowConfidence}},
		{"always-reviewed label", "Suicidal", 0.99, textSignals{fullLen: 10, pieces: 8}, []string{RuleReviewLabel}},
		{"empty text", "Normal", 0.9, textSignals{empty: true, fullLen: 2}, []string{RuleOutOfDistribution}},
		{"far longer than the max length", "Normal", 0.9, textSignals{fullLen: 129, pieces: 30}, []string{RuleOutOfDistribution}},
		{"mostly unknown word pieces", "Anxiety", 0.3, textSignals{fullLen: 12, pieces: 10, unk: 5}, []string{RuleLowConfidence, RuleOutOfDistribution}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, rr := range r.reasons(m, tt.label, tt.conf, tt.sig) {
				got = append(got, rr.Rule)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.rules) {
				t.Errorf("rules %v, want %v", got, tt.rules)
			}
		})
	}
	// --review-below overrides the adapter's threshold; an adapter without
	// one falls back to FallbackReviewBelow.
	r.Below = 0.2
	if got := r.reasons(m, "Normal", 0.3, textSignals{fullLen: 10, pieces: 8}); len(got) != 0 {
		t.Errorf("confidence 0.3 with --review-below 0.2: %v, want no review", got)
	}
	r.Below = -1
	if got := r.threshold(&Model{}); got != FallbackReviewBelow {
		t.Errorf("threshold without an adapter value = %v, want %v", got, FallbackReviewBelow)
	}
}

// The service answers what the model answers alone, text by text, whatever
// the batching; confidences are calibrated probabilities.
func TestClassifyMatchesUnbatchedModel(t *testing.T) {
	dir := writeAdapter(t, 1, 0.3)
	ref := openAdapter(t, dir, "ref")
	defer ref.retire()
	cfg := DefaultConfig()
	cfg.MaxWait = 20 * time.Millisecond
	s := newService(t, cfg)
	s.SetModel(openAdapter(t, dir, "a"))

	var wg sync.WaitGroup
	answers := make([]Answer, 8)
	errs := make([]error, 8)
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = s.Classify(context.Background(), statements)
		}()
	}
	wg.Wait()
	for i, text := range statements {
		ids, _ := ref.enc.Encode(text, ref.MaxLen)
		want, err := ref.cls.ClassifyTokens(context.Background(), [][]int32{ids})
		if err != nil {
			t.Fatal(err)
		}
		for j, a := range answers {
			if errs[j] != nil {
				t.Fatalf("request %d: %v", j, errs[j])
			}
			got := a.Results[i]
			if got.Label != want[0].Label || math.Abs(got.Confidence-want[0].Confidence) > 1e-5 {
				t.Errorf("request %d text %d: %s %.6f, unbatched %s %.6f", j, i, got.Label, got.Confidence, want[0].Label, want[0].Confidence)
			}
			sum := 0.0
			for _, p := range got.Probabilities {
				sum += p
			}
			if len(got.Probabilities) != shard.NumLabels || math.Abs(sum-1) > 1e-4 {
				t.Errorf("probabilities %v (sum %v), want %d summing to 1", got.Probabilities, sum, shard.NumLabels)
			}
		}
	}
	if n := testutilCount(t, s, "loraft_serve_texts_total"); n != float64(len(statements)*len(answers)) {
		t.Errorf("texts classified %v, want %d", n, len(statements)*len(answers))
	}
}

// While the model is swapped again and again, no request fails and none is
// answered by a mix of the two adapters: every answer equals, text by
// text, what the adapter it names gives.
func TestSwapNeverMixesModels(t *testing.T) {
	dirs := map[string]string{"A": writeAdapter(t, 1, 0.3), "B": writeAdapter(t, 2, 0.3)}
	want := map[string][]string{}
	for name, dir := range dirs {
		m := openAdapter(t, dir, name)
		for _, text := range statements {
			ids, _ := m.enc.Encode(text, m.MaxLen)
			p, err := m.cls.ClassifyTokens(context.Background(), [][]int32{ids})
			if err != nil {
				t.Fatal(err)
			}
			want[name] = append(want[name], fmt.Sprintf("%s %.5f", p[0].Label, p[0].Confidence))
		}
		m.retire()
	}
	if fmt.Sprint(want["A"]) == fmt.Sprint(want["B"]) {
		t.Fatal("the two adapters answer alike: the test could not see a mix")
	}
	cfg := DefaultConfig()
	cfg.MaxBatch = 4 // a request's texts span several batches
	s := newService(t, cfg)
	s.SetModel(openAdapter(t, dirs["A"], "A"))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	var failures []string
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a, err := s.Classify(context.Background(), statements)
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					seen[a.Model]++
					for i, r := range a.Results {
						if got := fmt.Sprintf("%s %.5f", r.Label, r.Confidence); got != want[a.Model][i] {
							failures = append(failures, fmt.Sprintf("text %d answered %q, but %s gives %q", i, got, a.Model, want[a.Model][i]))
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range 6 {
		name := []string{"B", "A"}[i%2]
		s.SetModel(openAdapter(t, dirs[name], name))
	}
	cancel()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d failures during swaps, first: %s", len(failures), failures[0])
	}
	if seen["A"] == 0 || seen["B"] == 0 {
		t.Fatalf("answers by model: %v, want both", seen)
	}
}

// blockingClassifier holds every batch until released: it fills the queue.
type blockingClassifier struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingClassifier) ClassifyTokens(ctx context.Context, ids [][]int32) ([]trainer.Prediction, error) {
	b.started <- struct{}{}
	<-b.release
	out := make([]trainer.Prediction, len(ids))
	for i := range out {
		out[i] = trainer.Prediction{Label: "Normal", Confidence: 1, Probabilities: map[string]float64{"Normal": 1}}
	}
	return out, nil
}

// idleClassifier answers at once, counting the texts of each batch.
type idleClassifier struct {
	mu      sync.Mutex
	batches []int
}

func (c *idleClassifier) ClassifyTokens(ctx context.Context, ids [][]int32) ([]trainer.Prediction, error) {
	c.mu.Lock()
	c.batches = append(c.batches, len(ids))
	c.mu.Unlock()
	out := make([]trainer.Prediction, len(ids))
	for i := range out {
		out[i] = trainer.Prediction{Label: "Normal", Confidence: 1, Probabilities: map[string]float64{"Normal": 1}}
	}
	return out, nil
}

// A lone request on an idle service does not wait MaxWait for company: the
// worker would only sit idle. Its deadline is shorter than MaxWait, so a
// batcher that waited would fail it (a worker drops texts whose request
// gave up).
func TestIdleServiceDoesNotWait(t *testing.T) {
	tok, err := wordpiece.BertBaseUncased()
	if err != nil {
		t.Fatal(err)
	}
	cls := &idleClassifier{}
	s := newService(t, Config{MaxBatch: 8, MaxWait: time.Second, Workers: 1, QueueTexts: 16, MaxTexts: 8, MaxTextBytes: 100, Review: DefaultReview()})
	s.SetModel(NewModel("idle", shard.LabelNames(), 16, cls, tok, nil))
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		_, err := s.Classify(ctx, []string{fmt.Sprintf("alone %d", i)})
		cancel()
		if err != nil {
			t.Fatalf("a lone request on an idle service: %v (did it wait MaxWait?)", err)
		}
	}
	cls.mu.Lock()
	defer cls.mu.Unlock()
	if !slices.Equal(cls.batches, []int{1, 1, 1}) {
		t.Fatalf("batches %v, want three of one text", cls.batches)
	}
}

// A full queue answers ErrOverloaded at once instead of growing; once the
// model catches up, requests are answered again.
func TestQueueBoundsAndOverload(t *testing.T) {
	tok, err := wordpiece.BertBaseUncased()
	if err != nil {
		t.Fatal(err)
	}
	cls := &blockingClassifier{started: make(chan struct{}, 16), release: make(chan struct{})}
	// The longest MaxWait (1 s) makes every batch exactly
	// MaxBatch texts, whatever order the requests' texts interleave in, so
	// the state below is the same on a loaded machine.
	cfg := Config{MaxBatch: 2, MaxWait: time.Second, Workers: 1, QueueTexts: 4, MaxTexts: 4, MaxTextBytes: 100, Review: DefaultReview()}
	s := newService(t, cfg)
	s.SetModel(NewModel("block", shard.LabelNames(), 16, cls, tok, nil))
	// Registered after newService's cleanup, so it runs first: a failed
	// check below must not leave Close waiting on a held worker.
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(cls.release) }) }
	t.Cleanup(release)

	results := make(chan error, 8)
	go func() { _, err := s.Classify(context.Background(), []string{"a", "b"}); results <- err }()
	<-cls.started // the worker holds one batch of 2; the batcher will block on the next
	waitFor := func(queued int64, batches int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for s.queued.Load() != queued || len(s.work) != batches {
			if time.Now().After(deadline) {
				t.Fatalf("queue never reached %d texts and %d batches: %d texts queued, %d batches waiting",
					queued, batches, s.queued.Load(), len(s.work))
			}
			time.Sleep(time.Millisecond)
		}
	}
	// One request at a time, so each is admitted: the worker holds {a b},
	// {c d} waits for it, the batcher holds {e f} and {g h} are queued.
	go func() { _, err := s.Classify(context.Background(), []string{"c", "d"}); results <- err }()
	waitFor(0, 1)
	go func() { _, err := s.Classify(context.Background(), []string{"e", "f", "g", "h"}); results <- err }()
	waitFor(2, 1)
	_, err = s.Classify(context.Background(), []string{"x", "y", "z", "w"})
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a request past the queue bound: %v, want ErrOverloaded", err)
	}
	release()
	for range 3 {
		if err := <-results; err != nil {
			t.Fatalf("a queued request: %v", err)
		}
	}
	if _, err := s.Classify(context.Background(), []string{"after", "drain"}); err != nil {
		t.Fatalf("after the queue drained: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	s := newService(t, DefaultConfig())
	o := DefaultHTTPOptions()
	o.MaxBodyBytes = 4096
	o.Tokens = tokens(t, "s3cret")
	srv := httptest.NewServer(Handler(s, o))
	defer srv.Close()

	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := do("GET", "/readyz", "", ""); code != http.StatusServiceUnavailable {
		t.Errorf("readyz before a model: %d, want 503", code)
	}
	if code, _ := do("POST", "/v1/classify", "s3cret", `{"texts":["hi"]}`); code != http.StatusServiceUnavailable {
		t.Errorf("classify before a model: %d, want 503", code)
	}
	s.SetModel(openAdapter(t, writeAdapter(t, 1, 0.3), "a@1"))

	tests := []struct {
		name, token, body string
		code              int
		want              string // substring of the body
	}{
		{"classifies", "s3cret", `{"texts":["i cannot stop worrying","a fine day"]}`, 200, `"model":"a@1"`},
		{"no token", "", `{"texts":["hi"]}`, 401, "bearer token"},
		{"wrong token", "guess", `{"texts":["hi"]}`, 401, "bearer token"},
		{"empty list", "s3cret", `{"texts":[]}`, 400, "texts: empty list"},
		{"no texts field", "s3cret", `{}`, 400, "texts: empty list"},
		{"invalid UTF-8", "s3cret", "{\"texts\":[\"a\xffb\"]}", 400, "invalid UTF-8 at byte 12"},
		{"unknown field", "s3cret", `{"text":"hi"}`, 400, `unknown field`},
		{"not JSON", "s3cret", `texts=hi`, 400, "body:"},
		{"two values", "s3cret", `{"texts":["a"]}{"texts":["b"]}`, 400, "more than one JSON value"},
		{"body too large", "s3cret", `{"texts":["` + strings.Repeat("a", 5000) + `"]}`, 413, "body over 4096 bytes"},
		{"empty text goes to review", "s3cret", `{"texts":["   "]}`, 200, `"detail":"empty text"`},
		{"too many texts", "s3cret", `{"texts":[` + strings.Repeat(`"a",`, 256) + `"a"]}`, 400, "texts: 257 texts, want at most 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do("POST", "/v1/classify", tt.token, tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("%d %s, want %d containing %q", code, body, tt.code, tt.want)
			}
		})
	}
	_, body := do("POST", "/v1/classify", "s3cret", `{"texts":["`+strings.Repeat("word ", 200)+`"]}`)
	var ans classifyResponse
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if r := ans.Results[0]; !r.TokensTruncated || ans.Disclaimer == "" {
		t.Errorf("a 200-word text: tokens_truncated %v, disclaimer %q", r.TokensTruncated, ans.Disclaimer)
	}
	if code, body := do("GET", "/readyz", "", ""); code != 200 || !strings.Contains(body, "a@1") {
		t.Errorf("readyz: %d %s", code, body)
	}
	if code, _ := do("GET", "/metrics", "", ""); code != 401 {
		t.Errorf("metrics without a token: %d, want 401", code)
	}
	code, metricsText := do("GET", "/metrics", "s3cret", "")
	for _, want := range []string{`loraft_serve_requests_total{code="401",front="http"}`, "loraft_serve_batch_size_bucket",
		`loraft_serve_review_total{rule="out_of_distribution"}`, "loraft_serve_queue_texts", "loraft_serve_request_duration_seconds_bucket"} {
		if code != 200 || !strings.Contains(metricsText, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}

// A text past the byte cap is cut at a character boundary and reported.
func TestTruncation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTextBytes = 10
	s := newService(t, cfg)
	s.SetModel(openAdapter(t, writeAdapter(t, 1, 0.3), "a"))
	a, err := s.Classify(context.Background(), []string{"ééééééé", "short"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Results[0].Truncated || a.Results[1].Truncated {
		t.Errorf("truncated = %v, %v; want true, false", a.Results[0].Truncated, a.Results[1].Truncated)
	}
	if got := cutUTF8("ééééééé", 10); got != "ééééé" {
		t.Errorf("cutUTF8 = %q", got)
	}
}

func TestGRPC(t *testing.T) {
	s := newService(t, DefaultConfig())
	s.SetModel(openAdapter(t, writeAdapter(t, 1, 0.3), "a@1"))
	o := DefaultHTTPOptions()
	o.Tokens = tokens(t, "s3cret")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	NewGRPCServer(s, o).Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := servepb.NewClassifierClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")

	resp, err := cl.Classify(authed, &servepb.ClassifyRequest{Texts: []string{"my mood swings are wild", ""}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetModel() != "a@1" || len(resp.GetResults()) != 2 || resp.GetDisclaimer() == "" {
		t.Fatalf("answer %v", resp)
	}
	if r := resp.GetResults()[1]; !r.GetNeedsReview() || r.GetReviewReasons()[len(r.GetReviewReasons())-1].GetRule() != RuleOutOfDistribution {
		t.Errorf("empty text: %v, want needs_review for out_of_distribution", r)
	}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		req  *servepb.ClassifyRequest
		code codes.Code
	}{
		{"no token", ctx, &servepb.ClassifyRequest{Texts: []string{"hi"}}, codes.Unauthenticated},
		{"empty list", authed, &servepb.ClassifyRequest{}, codes.InvalidArgument},
	} {
		if _, err := cl.Classify(tt.ctx, tt.req); status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
}

// testutilCount reads a counter's value from the service's registry.
func testutilCount(t *testing.T, s *Service, name string) float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			total := 0.0
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
			return total
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// tokens is a tokens file admitting each of toks.
func tokens(t *testing.T, toks ...string) *bearer.Set {
	t.Helper()
	var file strings.Builder
	for _, tok := range toks {
		fmt.Fprintf(&file, "%x\n", sha256.Sum256([]byte(tok)))
	}
	set, err := bearer.Parse(strings.NewReader(file.String()), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// dirSource serves whichever adapter directory best names, by copying it.
type dirSource struct {
	mu   sync.Mutex
	best string
	dirs map[string]string
}

func (d *dirSource) Best(context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.best, nil
}

func (d *dirSource) Export(_ context.Context, id, dir string) error {
	return os.CopyFS(dir, os.DirFS(d.dirs[id]))
}

// FollowOnce loads the source's best when it changes, and only then.
func TestFollowSwapsToTheBetterAdapter(t *testing.T) {
	src := &dirSource{best: "t1@10", dirs: map[string]string{"t1@10": writeAdapter(t, 1, 0.3), "t2@20": writeAdapter(t, 2, 0.4)}}
	s := newService(t, DefaultConfig())
	opens := 0
	open := func(dir, id string) (*Model, error) { opens++; return OpenAdapter(dir, "", id, gotch.CPU) }
	work := t.TempDir()
	for _, step := range []struct {
		best      string
		wantOpens int
	}{{"t1@10", 1}, {"t1@10", 1}, {"t2@20", 2}} {
		src.mu.Lock()
		src.best = step.best
		src.mu.Unlock()
		if err := FollowOnce(context.Background(), s, src, open, work); err != nil {
			t.Fatal(err)
		}
		if m := s.Model(); m == nil || m.Name != step.best || opens != step.wantOpens {
			t.Fatalf("after best %s: serving %v with %d loads, want %s with %d", step.best, m, opens, step.best, step.wantOpens)
		}
	}
	if got := s.Model().ReviewBelow; got != 0.4 {
		t.Errorf("review threshold %v, want the new adapter's 0.4", got)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("exported adapters left in the work dir: %v", left)
	}
}
