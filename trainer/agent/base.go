package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/loraft/loraft/checkpoint"
	"github.com/loraft/loraft/coordinator"
	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard/wordpiece"
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/model"
	"github.com/loraft/loraft/trainer/model/hub"
)

// A sweep's base crosses the network by content only (DESIGN invariant 9):
// `sweep launch` reads the spec's train.base (a model directory, an HF hub
// id in the local HF cache, or a weights file), or its train.config and
// train.weights, on the launching machine and uploads them with
// checkpoint.UploadBase; the sweep then carries base_sha256, and each
// trainer fetches and verifies the base into its cache (BaseFor). A
// built-in config name (tiny, base) stays a name: a random-init base needs
// no upload. A base keeps HF's file names, so its vocab.txt and
// tokenizer_config.json give every trainer the base's own tokenizer.

// baseConfigFile is the name of a base's model config in the store.
const baseConfigFile = hub.ConfigFile

// maxVocabBytes bounds a base's vocab.txt, read whole into memory on every
// trainer: bert-base's is 232 kB, multilingual BERT's under 1 MB.
const maxVocabBytes = 64 << 20

// isTokenizerFile reports whether a base file is part of its tokenizer
// (or its config) rather than its weights.
func isTokenizerFile(name string) bool {
	return name == baseConfigFile || name == hub.VocabFile || name == hub.TokenizerConfigFile
}

// UploadSweepBase turns the train settings of a parsed spec, whose base,
// config and weights are paths (or a hub id) on this (the launching)
// machine, into what the coordinator accepts. With train.base it resolves
// the base as `loraft train --base` does (hub.Resolve), checks its
// config.json, vocab.txt and tokenizer_config.json, and uploads them with
// its weights (every shard of a sharded checkpoint) as one base named by
// the hub id or config.json's _name_or_path. Otherwise it checks the
// config and uploads the config.json (if train.config is not a built-in
// name) and the weights (if any) as one base. Either way it rewrites ts to
// name the base by BaseSha256 and BaseName, leaving Base and Weights empty
// and Config a built-in name or empty. With no base, no weights and a
// built-in config there is nothing to upload and ts is unchanged. It
// returns the base's sha256 ("" when nothing was uploaded).
func UploadSweepBase(ctx context.Context, store checkpoint.Store, ts *pb.TrainSettings) (string, error) {
	if ts.GetBase() != "" {
		return uploadHubBase(ctx, store, ts)
	}
	cfgSpec, weights := ts.GetConfig(), ts.GetWeights()
	builtin := cfgSpec == "" || isBuiltinConfig(cfgSpec)
	if builtin && weights == "" {
		return "", nil
	}
	// Fail here, naming the field, rather than on every trainer; and read
	// no device or directory as a config (reading /dev/zero never ends).
	for _, f := range []struct{ field, path string }{{"config", cfgSpec}, {"weights", weights}} {
		if f.path == "" || (f.field == "config" && builtin) {
			continue
		}
		info, err := os.Stat(f.path)
		if err != nil {
			return "", fmt.Errorf("sweep train.%s: %w", f.field, err)
		}
		if !info.Mode().IsRegular() {
			return "", fmt.Errorf("sweep train.%s %s: not a regular file (%s)", f.field, f.path, info.Mode().Type())
		}
	}
	_, cfg, err := model.ResolveConfig(cfgSpec, weights != "")
	if err != nil {
		return "", fmt.Errorf("sweep train.config: %w", err)
	}
	files := map[string]string{}
	if !builtin {
		files[baseConfigFile] = cfgSpec
	}
	weightsName := ""
	if weights != "" {
		if strings.HasSuffix(weights, ".index.json") {
			return "", fmt.Errorf("sweep train.weights %s: a sharded checkpoint; name it (or its directory) as train.base, which uploads every shard", weights)
		}
		weightsName = filepath.Base(weights)
		if checkpoint.ValidateBaseFileName(weightsName) != nil || weightsName == baseConfigFile {
			// A name the store cannot hold: HF's, keeping the format's extension.
			weightsName = "model.safetensors"
			if filepath.Ext(weights) == ".bin" {
				weightsName = "pytorch_model.bin"
			}
		}
		files[weightsName] = weights
	}
	name := baseName(cfg, cfgSpec, weightsName, builtin)
	sha, err := checkpoint.UploadBase(ctx, store, name, files)
	if err != nil {
		return "", fmt.Errorf("sweep train base: %w", err)
	}
	if !builtin {
		ts.Config = ""
	}
	ts.Weights, ts.BaseSha256, ts.BaseName = "", sha, name
	return sha, nil
}

// uploadHubBase uploads the base ts.Base names (see UploadSweepBase).
func uploadHubBase(ctx context.Context, store checkpoint.Store, ts *pb.TrainSettings) (string, error) {
	spec := ts.GetBase()
	if ts.GetConfig() != "" || ts.GetWeights() != "" {
		return "", fmt.Errorf("sweep train.base %s with train.config %q and train.weights %q: give train.base alone (it brings its config.json and weights)", spec, ts.GetConfig(), ts.GetWeights())
	}
	hb, err := hub.Resolve(spec)
	if err != nil {
		return "", fmt.Errorf("sweep train.base: %w", err)
	}
	// Check here what every trainer will read, so a bad base fails once,
	// naming the field, and not on every trainer.
	var cfg model.Config
	if hb.Config != "" {
		cfg, err = hb.ModelConfig()
	} else {
		// A lone weights file: bert-base's shape, as `loraft train --base` assumes.
		_, cfg, err = model.ResolveConfig("", true)
	}
	if err != nil {
		return "", fmt.Errorf("sweep train.base %s: %w", spec, err)
	}
	if _, err := hb.LowerCase(); err != nil {
		return "", fmt.Errorf("sweep train.base %s: %w", spec, err)
	}
	if hb.Vocab != "" {
		if _, _, err := readVocab(hb, cfg); err != nil {
			return "", fmt.Errorf("sweep train.base %s: %w", spec, err)
		}
	}
	files := map[string]string{}
	for name, path := range hb.Files {
		files[name] = path
	}
	weightsName := filepath.Base(hb.Weights)
	if strings.HasSuffix(hb.Weights, ".index.json") {
		if len(files) > checkpoint.MaxBaseFiles {
			shards := 0
			for n := range files {
				if !isTokenizerFile(n) && n != weightsName {
					shards++
				}
			}
			return "", fmt.Errorf("sweep train.base %s: %d files with its %d shards, a sweep's base holds at most %d; merge the shards into one model.safetensors",
				spec, len(files), shards, checkpoint.MaxBaseFiles)
		}
	} else if checkpoint.ValidateBaseFileName(weightsName) != nil || isTokenizerFile(weightsName) {
		// A lone weights file under a name the store cannot hold: HF's,
		// keeping the format's extension (the shards of an index keep
		// theirs, which the index names).
		delete(files, weightsName)
		weightsName = "model.safetensors"
		if filepath.Ext(hb.Weights) == ".bin" {
			weightsName = "pytorch_model.bin"
		}
		files[weightsName] = hb.Weights
	}
	name := hb.Name
	if filepath.IsAbs(name) {
		// A path on the launcher means nothing elsewhere: keep its last element.
		name = filepath.Base(name)
	}
	sha, err := checkpoint.UploadBase(ctx, store, name, files)
	if err != nil {
		return "", fmt.Errorf("sweep train.base %s: %w", spec, err)
	}
	ts.Base, ts.BaseSha256, ts.BaseName = "", sha, name
	return sha, nil
}

// readVocab reads and parses hb's vocab.txt, which must fit cfg's
// embeddings, and returns its tokenizer and bytes.
func readVocab(hb hub.Base, cfg model.Config) (*wordpiece.Tokenizer, []byte, error) {
	st, err := os.Stat(hb.Vocab)
	if err != nil {
		return nil, nil, fmt.Errorf("reading vocabulary: %w", err)
	}
	if st.Size() > maxVocabBytes {
		return nil, nil, fmt.Errorf("%s is %d bytes, over the %d a vocab.txt may have", hub.VocabFile, st.Size(), maxVocabBytes)
	}
	data, err := hb.VocabBytes()
	if err != nil {
		return nil, nil, err
	}
	tok, err := wordpiece.New(bytes.NewReader(data), hb.Spec+" "+hub.VocabFile)
	if err != nil {
		return nil, nil, err
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, nil, fmt.Errorf("vocabulary %s has %d tokens, the model's vocab_size is %d", hub.VocabFile, tok.VocabSize(), cfg.VocabSize)
	}
	return tok, data, nil
}

// baseName is the name a base's manifest records for the model card: the
// config's _name_or_path when it has one; with weights, what an adapter
// trained on them names as its base (trainer.Base.NameOrPath, which gives
// bert-base-uncased for its shape, else the weights file's name); else the
// config file's name.
func baseName(cfg model.Config, cfgSpec, weightsName string, builtinCfg bool) string {
	switch {
	case cfg.NameOrPath != "":
		return cfg.NameOrPath
	case weightsName != "":
		return trainer.Base{Config: cfg, Weights: weightsName}.NameOrPath()
	case !builtinCfg:
		return filepath.Base(cfgSpec)
	}
	return cfgSpec
}

// isBuiltinConfig reports whether name is a config every trainer knows by
// name; the coordinator accepts no other train.config.
func isBuiltinConfig(name string) bool {
	return slices.Contains(coordinator.BuiltinConfigs(), name)
}

// sweepBase is what a trainer builds from a sweep's base: the frozen
// model, and the tokenizer and vocab.txt its vocabulary gives.
type sweepBase struct {
	base trainer.Base
	// tok is the base's vocab.txt with its do_lower_case, else
	// bert-base-uncased's embedded vocabulary (with the base's
	// do_lower_case, when it has a tokenizer_config.json).
	tok *wordpiece.Tokenizer
	// vocab is tok's vocab.txt, stored with every checkpoint and adapter.
	vocab []byte
}

// BaseFor is the frozen base a sweep's train settings describe, as this
// trainer builds it. With BaseSha256 it fetches the base from store into
// cacheDir (checkpoint.FetchBase verifies every byte); the base's
// config.json, when it has one, shapes the model, else train.config (a
// built-in name) resolves as `loraft train --config` does
// (model.ResolveConfig: base with weights, tiny without). Its weights are
// one weights file, or a shard index and every shard it names. It never
// opens a path the settings name: settings with Base or Weights, or a
// Config that is not built in, are refused, whoever accepted them.
func BaseFor(ctx context.Context, store checkpoint.Store, cacheDir string, ts *pb.TrainSettings) (trainer.Base, error) {
	sb, err := sweepBaseFor(ctx, store, cacheDir, ts)
	return sb.base, err
}

// sweepBaseFor is BaseFor with the tokenizer the base gives.
func sweepBaseFor(ctx context.Context, store checkpoint.Store, cacheDir string, ts *pb.TrainSettings) (sweepBase, error) {
	if b := ts.GetBase(); b != "" {
		return sweepBase{}, fmt.Errorf("sweep train.base %q: a path or hub id on the launcher; the sweep must name its base by base_sha256 (sweep launch uploads it)", b)
	}
	if w := ts.GetWeights(); w != "" {
		return sweepBase{}, fmt.Errorf("sweep train.weights %q: a path on the trainer; the sweep must name its base by base_sha256 (sweep launch uploads it)", w)
	}
	if c := ts.GetConfig(); c != "" && !isBuiltinConfig(c) {
		return sweepBase{}, fmt.Errorf("sweep train.config %q: want one of %s; a config.json travels in the base (base_sha256)", c, strings.Join(coordinator.BuiltinConfigs(), ", "))
	}
	q := model.Quant(ts.GetQuant())
	if q == "" {
		q = model.NF4
	}
	b := trainer.Base{Quant: q, Compute: "fp32"}
	sha := ts.GetBaseSha256()
	if sha == "" {
		name, cfg, err := model.ResolveConfig(ts.GetConfig(), false)
		if err != nil {
			return sweepBase{}, fmt.Errorf("sweep train.config: %w", err)
		}
		b.ConfigName, b.Config = name, cfg
		return withTokenizer(b, hub.Base{})
	}
	dir, man, err := checkpoint.FetchBase(ctx, store, sha, cacheDir)
	if err != nil {
		if errors.Is(err, checkpoint.ErrBadBase) {
			return sweepBase{}, fmt.Errorf("sweep train.base_sha256: %w", err)
		}
		// The store may be down, or a blob damaged on one replica: another
		// attempt, maybe on another trainer, may succeed.
		return sweepBase{}, fmt.Errorf("%w: sweep train.base_sha256: %w", ErrRetryable, err)
	}
	weights, err := baseWeights(dir, man)
	if err != nil {
		return sweepBase{}, fmt.Errorf("sweep base %s: %w", sha, err)
	}
	if _, ok := man.File(baseConfigFile); ok {
		cfg, err := model.LoadConfig(filepath.Join(dir, baseConfigFile))
		if err != nil {
			return sweepBase{}, fmt.Errorf("sweep base %s: %w", sha, err)
		}
		// Manifests record where the config came from: the store, not
		// this trainer's cache.
		b.ConfigName, b.Config = checkpoint.BaseManifestKey(sha)+" "+baseConfigFile, cfg
	} else {
		name, cfg, err := model.ResolveConfig(ts.GetConfig(), weights != nil)
		if err != nil {
			return sweepBase{}, fmt.Errorf("sweep train.config: %w", err)
		}
		b.ConfigName, b.Config = name, cfg
	}
	if weights != nil {
		// Verified as it was fetched: the hash is the manifest's (a
		// sharded base's is its index's, as for `loraft train --base`).
		b.Weights, b.WeightsSHA256 = filepath.Join(dir, weights.Name), weights.SHA256
		if man.Name != "" {
			// The model card names the base as the launcher did
			// (baseName, or train.base's hub id or _name_or_path), not by
			// this trainer's cache path.
			b.Config.NameOrPath = man.Name
		}
	}
	// The base's tokenizer files keep their HF names, so hub reads them
	// here as it does from a model directory.
	hb := hub.Base{Spec: "sweep base " + sha[:12]}
	if _, ok := man.File(hub.VocabFile); ok {
		hb.Vocab = filepath.Join(dir, hub.VocabFile)
	}
	if _, ok := man.File(hub.TokenizerConfigFile); ok {
		hb.TokenizerConfig = filepath.Join(dir, hub.TokenizerConfigFile)
	}
	sb, err := withTokenizer(b, hb)
	if err != nil {
		return sweepBase{}, fmt.Errorf("sweep base %s: %w", sha, err)
	}
	return sb, nil
}

// withTokenizer adds to b the tokenizer of hb's vocab.txt and
// do_lower_case; without a vocab.txt, bert-base-uncased's embedded one.
func withTokenizer(b trainer.Base, hb hub.Base) (sweepBase, error) {
	lower, err := hb.LowerCase()
	if err != nil {
		return sweepBase{}, err
	}
	sb := sweepBase{base: b}
	if hb.Vocab != "" {
		if sb.tok, sb.vocab, err = readVocab(hb, b.Config); err != nil {
			return sweepBase{}, err
		}
	} else {
		if sb.tok, err = wordpiece.BertBaseUncased(); err != nil {
			return sweepBase{}, err
		}
		sb.vocab = wordpiece.BertBaseUncasedVocab()
		if sb.tok.VocabSize() > b.Config.VocabSize {
			return sweepBase{}, fmt.Errorf("bert-base-uncased's vocabulary has %d tokens, the model's vocab_size is %d; the base needs its own %s", sb.tok.VocabSize(), b.Config.VocabSize, hub.VocabFile)
		}
	}
	sb.tok = sb.tok.WithLowerCase(lower)
	return sb, nil
}

// baseWeights is the weights file of a fetched base: its one file besides
// config.json, vocab.txt and tokenizer_config.json, or a shard index (to
// hand model.LoadWeights) when the others are exactly the shards it
// names; nil for a random-init base.
func baseWeights(dir string, man checkpoint.BaseManifest) (*checkpoint.BaseFile, error) {
	var weights []checkpoint.BaseFile
	for _, f := range man.Files {
		if !isTokenizerFile(f.Name) {
			weights = append(weights, f)
		}
	}
	if len(weights) == 0 {
		return nil, nil
	}
	var index *checkpoint.BaseFile
	for i, f := range weights {
		if strings.HasSuffix(f.Name, ".index.json") {
			if index != nil {
				return nil, fmt.Errorf("two shard indexes, %s and %s", index.Name, f.Name)
			}
			index = &weights[i]
		}
	}
	if index == nil {
		if len(weights) > 1 {
			return nil, fmt.Errorf("two weights files, %s and %s; want one besides %s, %s and %s (or a shard index and its shards)",
				weights[0].Name, weights[1].Name, baseConfigFile, hub.VocabFile, hub.TokenizerConfigFile)
		}
		return &weights[0], nil
	}
	// The index names the files the loader opens: each must be a shard
	// of this base, verified as it was fetched, and each shard named.
	shards, err := model.ReadShardIndex(filepath.Join(dir, index.Name))
	if err != nil {
		return nil, err
	}
	named := map[string]bool{}
	for _, p := range shards {
		n := filepath.Base(p)
		if _, ok := man.File(n); !ok || isTokenizerFile(n) || n == index.Name {
			return nil, fmt.Errorf("shard index %s names %s, which is not a shard of the base", index.Name, n)
		}
		named[n] = true
	}
	for _, f := range weights {
		if f.Name != index.Name && !named[f.Name] {
			return nil, fmt.Errorf("%s is neither a shard %s names nor one of %s, %s and %s", f.Name, index.Name, baseConfigFile, hub.VocabFile, hub.TokenizerConfigFile)
		}
	}
	return index, nil
}
