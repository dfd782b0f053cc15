package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/model/hub/hubtest"
	"github.com/sugarme/gotch"
)

// torchDir is a small cased BERT as an HF model directory: weights real
// PyTorch wrote, a 99-token vocab.txt holding both "Hello" and "hello",
// tokenizer_config.json with do_lower_case false, and _name_or_path
// loraft/torch-bert-micro (trainer/model/testdata/gen_torch.py).
const torchDir = "../model/testdata/torchbert"

// torchName is torchDir's config.json _name_or_path.
const torchName = "loraft/torch-bert-micro"

// copyFiles copies the named files of src into dst (created) and returns dst.
func copyFiles(t *testing.T, dst, src string, names ...string) string {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(n)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// torchModelDir is a model directory as a user has it from the hub:
// config.json, pytorch_model.bin, vocab.txt and tokenizer_config.json.
func torchModelDir(t *testing.T) string {
	return copyFiles(t, filepath.Join(t.TempDir(), "cased-micro"), torchDir, "config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json")
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	sha, err := checkpoint.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

// encode is tok's ids for text, without [CLS] and [SEP].
func encode(tok *wordpiece.Tokenizer, text string) []int32 {
	ids, _ := tok.Encode(text, 16)
	return ids[1 : len(ids)-1]
}

// TestSweepBaseFromHub: a sweep's train.base names its base as `loraft
// train --base` does, and every trainer then tokenizes with that base's own
// vocab.txt and do_lower_case, trains on its weights and names it on the
// model card.
func TestSweepBaseFromHub(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HOME", "")
	// The hub's files name no _name_or_path: the card names the hub id.
	hubSrc := copyFiles(t, t.TempDir(), torchDir, "pytorch_model.bin", "vocab.txt", "tokenizer_config.json")
	var cfg map[string]any
	if data, err := os.ReadFile(filepath.Join(torchDir, "config.json")); err != nil || json.Unmarshal(data, &cfg) != nil {
		t.Fatalf("reading %s/config.json: %v", torchDir, err)
	}
	delete(cfg, "_name_or_path")
	if data, err := json.Marshal(cfg); err != nil || os.WriteFile(filepath.Join(hubSrc, "config.json"), data, 0o644) != nil {
		t.Fatal(err)
	}
	hubtest.WriteRepo(t, cache, hubtest.Folder("acme/cased-micro"), "3f1c2a7e9b0d4c5a6e8f7a9b1c2d3e4f5a6b7c8d",
		hubtest.Files(hubSrc, "config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json"))

	sharded := copyFiles(t, filepath.Join(t.TempDir(), "sharded"), torchDir, "config.json", "vocab.txt", "tokenizer_config.json",
		"sharded/pytorch_model.bin.index.json", "sharded/pytorch_model-00001-of-00002.bin", "sharded/pytorch_model-00002-of-00002.bin")
	// An uncased base without a vocab.txt keeps the embedded bert-base-uncased vocabulary.
	_, plainWeights := writeBase(t, smallConfig())
	plain := filepath.Dir(plainWeights)

	casedVocab := filepath.Join(torchDir, "vocab.txt")
	embedded, err := wordpiece.BertBaseUncased()
	if err != nil {
		t.Fatal(err)
	}
	lone := torchModelDir(t)
	tests := []struct {
		name      string
		base      string
		wantName  string // the base manifest's, ts.BaseName and the model card's
		weights   string // the base's weights file in the store
		wantVocab string // the sha256 of the trainer's vocab.txt
		wantLower bool
		wantHello []int32 // the trainer's ids for "Hello hello"
		hidden    int
	}{
		{"cased model directory", torchModelDir(t), torchName, "pytorch_model.bin", fileSHA(t, casedVocab), false, []int32{5, 6}, 32},
		{"hub id from the HF cache", "acme/cased-micro", "acme/cased-micro", "pytorch_model.bin", fileSHA(t, casedVocab), false, []int32{5, 6}, 32},
		{"weights file with its neighbours", filepath.Join(lone, "pytorch_model.bin"), torchName, "pytorch_model.bin", fileSHA(t, casedVocab), false, []int32{5, 6}, 32},
		{"sharded model directory", sharded, torchName, "pytorch_model.bin.index.json", fileSHA(t, casedVocab), false, []int32{5, 6}, 32},
		{"no vocab.txt: embedded", plain, smallConfig().NameOrPath, "model.safetensors", embedded.VocabSHA256(), true, encode(embedded, "hello hello"), 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := &pb.TrainSettings{Base: tc.base, Quant: "nf4"}
			sha, err := UploadSweepBase(ctx, store, ts)
			if err != nil {
				t.Fatal(err)
			}
			if sha == "" || ts.GetBase() != "" || ts.GetBaseSha256() != sha || ts.GetBaseName() != tc.wantName || ts.GetConfig() != "" || ts.GetWeights() != "" {
				t.Fatalf("after upload (sha %q): %v; want base cleared, base_sha256 set, base_name %q", sha, ts, tc.wantName)
			}
			trainerCache := t.TempDir()
			sb, err := sweepBaseFor(ctx, store, trainerCache, ts)
			if err != nil {
				t.Fatal(err)
			}
			b := sb.base
			if got := filepath.Base(b.Weights); got != tc.weights || !strings.HasPrefix(b.Weights, filepath.Join(trainerCache, "bases", sha)) {
				t.Errorf("trainer's weights %s, want %s under its cache", b.Weights, tc.weights)
			}
			if b.Config.HiddenSize != tc.hidden || b.NameOrPath() != tc.wantName {
				t.Errorf("trainer's base: hidden %d, card %q; want %d, %q", b.Config.HiddenSize, b.NameOrPath(), tc.hidden, tc.wantName)
			}
			if _, _, _, err := model.LoadWeights(b.Weights, b.Config, 7); err != nil {
				t.Errorf("loading the fetched weights: %v", err)
			}
			if got := sha256.Sum256(sb.vocab); hex.EncodeToString(got[:]) != tc.wantVocab || sb.tok.VocabSHA256() != tc.wantVocab {
				t.Errorf("trainer's vocab.txt sha256 %x (tokenizer %s), want %s", got, sb.tok.VocabSHA256(), tc.wantVocab)
			}
			if sb.tok.LowerCase() != tc.wantLower {
				t.Errorf("trainer's tokenizer lowercases: %v, want %v", sb.tok.LowerCase(), tc.wantLower)
			}
			if got := encode(sb.tok, "Hello hello"); !slices.Equal(got, tc.wantHello) {
				t.Errorf("trainer's ids for %q: %v, want %v", "Hello hello", got, tc.wantHello)
			}
		})
	}
	// A sharded base loads the same tensors as the single file it was cut from.
	ts := &pb.TrainSettings{Base: sharded}
	if _, err := UploadSweepBase(ctx, store, ts); err != nil {
		t.Fatal(err)
	}
	b, err := BaseFor(ctx, store, t.TempDir(), ts)
	if err != nil {
		t.Fatal(err)
	}
	fromShards, _, _, err := model.LoadWeights(b.Weights, b.Config, 3)
	if err != nil {
		t.Fatal(err)
	}
	whole, _, _, err := model.LoadWeights(filepath.Join(torchDir, "pytorch_model.bin"), b.Config, 3)
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range whole {
		if s := fromShards[k]; s == nil || !slices.Equal(s.Data, w.Data) {
			t.Errorf("tensor %s differs between the sharded base and pytorch_model.bin", k)
		}
	}
}

// TestSweepBaseRefusals: what train.base cannot be fails at launch, naming
// the field, before anything is uploaded; and a trainer refuses a stored
// base whose shard index names files the base does not hold.
func TestSweepBaseRefusals(t *testing.T) {
	ctx := context.Background()
	t.Setenv("HF_HUB_CACHE", t.TempDir())
	dir := torchModelDir(t)
	noShard := copyFiles(t, filepath.Join(t.TempDir(), "half-sharded"), torchDir, "config.json",
		"sharded/pytorch_model.bin.index.json", "sharded/pytorch_model-00001-of-00002.bin")
	// An index of 15 shards: with it and its config, 17 files, one more than a base holds.
	many := copyFiles(t, filepath.Join(t.TempDir(), "many-shards"), torchDir, "config.json")
	weightMap := map[string]string{}
	for i := range 15 {
		n := filepath.Join(many, "model-"+string(rune('a'+i))+".safetensors")
		if err := os.WriteFile(n, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		weightMap[string(rune('a'+i))] = filepath.Base(n)
	}
	if data, err := json.Marshal(map[string]any{"weight_map": weightMap}); err != nil || os.WriteFile(filepath.Join(many, "model.safetensors.index.json"), data, 0o644) != nil {
		t.Fatal(err)
	}
	bigVocab := copyFiles(t, filepath.Join(t.TempDir(), "big-vocab"), torchDir, "config.json", "pytorch_model.bin")
	if err := os.WriteFile(filepath.Join(bigVocab, "vocab.txt"), wordpiece.BertBaseUncasedVocab(), 0o644); err != nil {
		t.Fatal(err)
	}
	badTok := copyFiles(t, filepath.Join(t.TempDir(), "bad-tokenizer"), torchDir, "config.json", "pytorch_model.bin", "vocab.txt")
	if err := os.WriteFile(filepath.Join(badTok, "tokenizer_config.json"), []byte(`{"do_lower_case": false, "strip_accents": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	noConfig := copyFiles(t, filepath.Join(t.TempDir(), "no-config"), torchDir, "pytorch_model.bin", "vocab.txt")
	tests := []struct {
		name string
		ts   *pb.TrainSettings
		want string
	}{
		{"base and weights", &pb.TrainSettings{Base: dir, Weights: filepath.Join(dir, "pytorch_model.bin")}, "sweep train.base " + dir + " with train.config \"\" and train.weights"},
		{"base and config", &pb.TrainSettings{Base: dir, Config: "tiny"}, "give train.base alone"},
		{"missing directory", &pb.TrainSettings{Base: filepath.Join(t.TempDir(), "nope")}, "sweep train.base: base model not found"},
		{"hub id not in the cache", &pb.TrainSettings{Base: "acme/absent"}, "is not in the Hugging Face cache"},
		{"sharded, a shard missing", &pb.TrainSettings{Base: noShard}, "pytorch_model-00002-of-00002.bin of"},
		{"sharded, too many shards", &pb.TrainSettings{Base: many}, "17 files with its 15 shards, a sweep's base holds at most 16"},
		{"vocab larger than the model's", &pb.TrainSettings{Base: bigVocab}, "has 30522 tokens, the model's vocab_size is 99"},
		{"unsupported tokenizer config", &pb.TrainSettings{Base: badTok}, "strip_accents true with do_lower_case false"},
		{"model directory without config.json", &pb.TrainSettings{Base: noConfig}, "has no config.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			store, err := checkpoint.NewDirStore(root)
			if err != nil {
				t.Fatal(err)
			}
			_, err = UploadSweepBase(ctx, store, tc.ts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "sweep train.base") {
				t.Fatalf("UploadSweepBase(%v) = %v, want an error naming sweep train.base and %q", tc.ts, err, tc.want)
			}
			if keys, err := store.List(ctx, ""); err != nil || len(keys) != 0 {
				t.Errorf("store holds %v (%v) after a refused base, want nothing", keys, err)
			}
		})
	}

	// A base no launcher of ours uploads: an index naming files outside it.
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	index := func(shards ...string) string {
		m := map[string]string{}
		for i, s := range shards {
			m[string(rune('a'+i))] = s
		}
		p := filepath.Join(t.TempDir(), "model.safetensors.index.json")
		if data, err := json.Marshal(map[string]any{"weight_map": m}); err != nil || os.WriteFile(p, data, 0o644) != nil {
			t.Fatal(err)
		}
		return p
	}
	shard := filepath.Join(t.TempDir(), "model-1.safetensors")
	if err := os.WriteFile(shard, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(torchDir, "config.json")
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"index names a file the base lacks", map[string]string{"config.json": cfgPath, "model.safetensors.index.json": index("model-2.safetensors")}, "names model-2.safetensors, which is not a shard"},
		{"index names the cache's manifest", map[string]string{"config.json": cfgPath, "model.safetensors.index.json": index(".base.json")}, "names .base.json"},
		{"index names the config", map[string]string{"config.json": cfgPath, "model.safetensors.index.json": index("config.json")}, "names config.json"},
		{"a file the index does not name", map[string]string{"config.json": cfgPath, "model.safetensors.index.json": index("model-1.safetensors"), "model-1.safetensors": shard, "extra.bin": shard}, "extra.bin is neither a shard"},
		{"two weights files", map[string]string{"config.json": cfgPath, "model.safetensors": shard, "pytorch_model.bin": shard}, "two weights files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sha, err := checkpoint.UploadBase(ctx, store, "odd", tc.files)
			if err != nil {
				t.Fatal(err)
			}
			_, err = BaseFor(ctx, store, t.TempDir(), &pb.TrainSettings{BaseSha256: sha})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("BaseFor = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestRunnerTrainsCasedBase: a sweep on a cased base from a model
// directory tokenizes with the base's vocab.txt, keeping case; its token
// cache is its own; and the adapter exported from its checkpoint carries
// that vocab.txt and names the base.
func TestRunnerTrainsCasedBase(t *testing.T) {
	ctx := context.Background()
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := torchModelDir(t)
	spec, err := coordinator.ParseSweepSpec([]byte("name: cased\ntrain:\n  base: "+dir+
		"\n  epochs: 1\n  batch_size: 32\n  max_len: 32\n  checkpoint_every: 1000\n"), "cased.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dataPath := "../../experiments/data/demo.csv"
	dataSHA, _, _, err := checkpoint.UploadDataset(ctx, store, dataPath)
	if err != nil {
		t.Fatal(err)
	}
	sw := spec.Sweep(nil, dataSHA, time.Unix(0, 0))
	if sw.GetTrain().GetBase() != dir {
		t.Fatalf("spec's train.base %q, want %q", sw.GetTrain().GetBase(), dir)
	}
	if _, err := UploadSweepBase(ctx, store, sw.GetTrain()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil { // the trainer has no copy of its own
		t.Fatal(err)
	}
	tr := sw.GetTrials()[0]
	a := &pb.Assignment{Trial: tr, Train: sw.GetTrain(), DatasetSha256: dataSHA, Metric: sw.GetMetric(), Generation: 1, World: 1}
	cache := t.TempDir()
	if _, err := (&JobRunner{Store: store, CacheDir: cache, Device: gotch.CPU}).Run(ctx, a, &nopReporter{}); err != nil {
		t.Fatal(err)
	}

	// The token cache holds this base's tokens only, keyed by its vocabulary and case.
	vocab, err := os.ReadFile(filepath.Join(torchDir, "vocab.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cased, err := wordpiece.Load(filepath.Join(torchDir, "vocab.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cased = cased.WithLowerCase(false)
	ds, err := shard.ReadFile(dataPath, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := wordpiece.BertBaseUncased()
	if err != nil {
		t.Fatal(err)
	}
	want, other := shard.TokensKey(ds, cased, 32)+".tokens", shard.TokensKey(ds, embedded, 32)+".tokens"
	entries, err := os.ReadDir(filepath.Join(cache, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{want}) || want == other || shard.TokensKey(ds, cased.WithLowerCase(true), 32) == shard.TokensKey(ds, cased, 32) {
		t.Errorf("token cache holds %v, want only %s (the embedded vocabulary's would be %s)", names, want, other)
	}

	_, files, err := checkpoint.LoadLatest(ctx, store, tr.GetName(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := trainer.StateFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := trainer.WriteAdapterFromCheckpoint(files, tr.GetName(), st.Step, out); err != nil {
		t.Fatal(err)
	}
	gotVocab, err := os.ReadFile(filepath.Join(out, trainer.VocabFile))
	if err != nil {
		t.Fatal(err)
	}
	var peftCfg struct {
		Base string `json:"base_model_name_or_path"`
	}
	if data, err := os.ReadFile(filepath.Join(out, "adapter_config.json")); err != nil || json.Unmarshal(data, &peftCfg) != nil {
		t.Fatalf("reading the adapter's adapter_config.json: %v", err)
	}
	man := st.Manifest
	if string(gotVocab) != string(vocab) || man.Tokenizer.VocabSHA256 != cased.VocabSHA256() || man.Tokenizer.LowerCase {
		t.Errorf("adapter's vocab.txt is the base's: %v; manifest tokenizer %+v, want vocab sha256 %s, do_lower_case false",
			string(gotVocab) == string(vocab), man.Tokenizer, cased.VocabSHA256())
	}
	if peftCfg.Base != torchName || man.Base.NameOrPath() != torchName || man.Base.WeightsSHA256 != fileSHA(t, filepath.Join(torchDir, "pytorch_model.bin")) {
		t.Errorf("adapter's base_model_name_or_path %q, manifest base %q (weights sha256 %s); want %q and pytorch_model.bin's sha256",
			peftCfg.Base, man.Base.NameOrPath(), man.Base.WeightsSHA256, torchName)
	}
	if !strings.Contains(string(mustRead(t, filepath.Join(out, "README.md"))), torchName) {
		t.Errorf("adapter's model card does not name %s", torchName)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
