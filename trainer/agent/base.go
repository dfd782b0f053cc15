package agent

import (
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
	"github.com/loraft/loraft/trainer"
	"github.com/loraft/loraft/trainer/model"
)

// A sweep's base crosses the network by content only (DESIGN invariant 9):
// `sweep launch` reads the spec's train.config and train.weights on the
// launching machine and uploads them with checkpoint.UploadBase; the sweep
// then carries base_sha256, and each trainer fetches and verifies the base
// into its cache (BaseFor). A built-in config name (tiny, base) stays a
// name: a random-init base needs no upload.

// baseConfigFile is the name of a base's model config in the store.
const baseConfigFile = "config.json"

// UploadSweepBase turns the train settings of a parsed spec, whose config
// and weights are paths on this (the launching) machine, into what the
// coordinator accepts: it checks the config, uploads the config.json (if
// train.config is not a built-in name) and the weights (if any) as one
// base, and rewrites ts to name it by BaseSha256 and BaseName, leaving
// Weights empty and Config a built-in name or empty. With no weights and a
// built-in config there is nothing to upload and ts is unchanged. It
// returns the base's sha256 ("" when nothing was uploaded).
func UploadSweepBase(ctx context.Context, store checkpoint.Store, ts *pb.TrainSettings) (string, error) {
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
			return "", fmt.Errorf("sweep train.weights %s: a sharded checkpoint cannot be a sweep's base yet; merge it into one model.safetensors", weights)
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

// BaseFor is the frozen base a sweep's train settings describe, as this
// trainer builds it. With BaseSha256 it fetches the base from store into
// cacheDir (checkpoint.FetchBase verifies every byte); the base's
// config.json, when it has one, shapes the model, else train.config (a
// built-in name) resolves as `loraft train --config` does
// (model.ResolveConfig: base with weights, tiny without). It never opens a
// path the settings name: settings with Weights, or a Config that is not
// built in, are refused, whoever accepted them.
func BaseFor(ctx context.Context, store checkpoint.Store, cacheDir string, ts *pb.TrainSettings) (trainer.Base, error) {
	if w := ts.GetWeights(); w != "" {
		return trainer.Base{}, fmt.Errorf("sweep train.weights %q: a path on the trainer; the sweep must name its base by base_sha256 (sweep launch uploads it)", w)
	}
	if c := ts.GetConfig(); c != "" && !isBuiltinConfig(c) {
		return trainer.Base{}, fmt.Errorf("sweep train.config %q: want one of %s; a config.json travels in the base (base_sha256)", c, strings.Join(coordinator.BuiltinConfigs(), ", "))
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
			return trainer.Base{}, fmt.Errorf("sweep train.config: %w", err)
		}
		b.ConfigName, b.Config = name, cfg
		return b, nil
	}
	dir, man, err := checkpoint.FetchBase(ctx, store, sha, cacheDir)
	if err != nil {
		if errors.Is(err, checkpoint.ErrBadBase) {
			return trainer.Base{}, fmt.Errorf("sweep train.base_sha256: %w", err)
		}
		// The store may be down, or a blob damaged on one replica: another
		// attempt, maybe on another trainer, may succeed.
		return trainer.Base{}, fmt.Errorf("%w: sweep train.base_sha256: %w", ErrRetryable, err)
	}
	var weights *checkpoint.BaseFile
	for i, f := range man.Files {
		if f.Name == baseConfigFile {
			continue
		}
		if weights != nil {
			return trainer.Base{}, fmt.Errorf("sweep base %s: two weights files, %s and %s; want one besides %s", sha, weights.Name, f.Name, baseConfigFile)
		}
		weights = &man.Files[i]
	}
	if _, ok := man.File(baseConfigFile); ok {
		cfg, err := model.LoadConfig(filepath.Join(dir, baseConfigFile))
		if err != nil {
			return trainer.Base{}, fmt.Errorf("sweep base %s: %w", sha, err)
		}
		// Manifests record where the config came from: the store, not
		// this trainer's cache.
		b.ConfigName, b.Config = checkpoint.BaseManifestKey(sha)+" "+baseConfigFile, cfg
	} else {
		name, cfg, err := model.ResolveConfig(ts.GetConfig(), weights != nil)
		if err != nil {
			return trainer.Base{}, fmt.Errorf("sweep train.config: %w", err)
		}
		b.ConfigName, b.Config = name, cfg
	}
	if weights != nil {
		// Verified as it was fetched: the hash is the manifest's.
		b.Weights, b.WeightsSHA256 = filepath.Join(dir, weights.Name), weights.SHA256
		if b.Config.NameOrPath == "" {
			// The model card names the base as the launcher did
			// (baseName), not by this trainer's cache path.
			b.Config.NameOrPath = man.Name
		}
	}
	return b, nil
}
