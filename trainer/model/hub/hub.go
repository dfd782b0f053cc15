// Package hub resolves a base model as users have it from the Hugging Face
// hub — a model directory, a hub id in the local HF cache, or a single
// weights file — to the files on this machine, and reads them: config.json,
// vocab.txt, tokenizer_config.json's do_lower_case, and the weights
// (model.safetensors, pytorch_model.bin or their sharded *.index.json).
// It never downloads anything: a hub id resolves offline from the cache, as
// transformers does with HF_HUB_OFFLINE=1.
package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/loraft/loraft/trainer/model"
)

// File names in an HF model directory.
const (
	ConfigFile          = "config.json"
	VocabFile           = "vocab.txt"
	TokenizerConfigFile = "tokenizer_config.json"
)

// weightFiles are the weights files of a model directory in the order
// transformers prefers them (safetensors first).
var weightFiles = []string{
	"model.safetensors", "model.safetensors.index.json",
	"pytorch_model.bin", "pytorch_model.bin.index.json",
}

// ErrNotFound reports a base that is neither a path nor in the HF cache.
var ErrNotFound = errors.New("base model not found")

// Base is a resolved base model: files on this machine.
type Base struct {
	// Spec is the --base value as given.
	Spec string
	// Name names the base for an adapter's base_model_name_or_path and model
	// card: the hub id when resolved from the cache, else config.json's
	// _name_or_path, else the directory or file path.
	Name string
	// HubID is the hub id when Spec was one ("" for paths).
	HubID string
	// Revision is the cache snapshot's commit ("" for paths).
	Revision string
	// Dir is the directory holding the files (a snapshot for a hub id).
	Dir string
	// Config, Vocab and TokenizerConfig are the paths of those files, ""
	// when the base has none (a lone weights file without neighbours).
	Config, Vocab, TokenizerConfig string
	// Weights is the path to hand model.LoadWeights: one weights file or a
	// sharded checkpoint's *.index.json.
	Weights string
	// Files maps each file of the base, by its name relative to Dir, to its
	// path: the config and tokenizer files present, the weights file and,
	// when sharded, the index and every shard. Hash these to name the base.
	Files map[string]string
}

// Resolve finds a base: an existing directory (a model directory), an
// existing file (a weights file; config.json, vocab.txt and
// tokenizer_config.json next to it are used when present), or a hub id such
// as bert-base-uncased or google-bert/bert-base-uncased, looked up in the HF
// cache (HF_HUB_CACHE, else HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub).
func Resolve(spec string) (Base, error) {
	if spec == "" {
		return Base{}, fmt.Errorf("%w: empty base", ErrNotFound)
	}
	if st, err := os.Stat(spec); err == nil {
		abs, err := filepath.Abs(spec)
		if err != nil {
			return Base{}, fmt.Errorf("resolving base %s: %w", spec, err)
		}
		if st.IsDir() {
			b, err := fromDir(spec, abs)
			if err != nil {
				return Base{}, err
			}
			return b, nil
		}
		return fromFile(spec, abs)
	}
	if !hubID.MatchString(spec) || strings.Contains(spec, "..") {
		return Base{}, fmt.Errorf("%w: %s is not a file, a directory or a hub id (org/name)", ErrNotFound, spec)
	}
	return fromCache(spec)
}

// hubID is a repository id: name or org/name.
var hubID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$`)

// fromDir resolves a model directory.
func fromDir(spec, dir string) (Base, error) {
	b := Base{Spec: spec, Dir: dir, Files: map[string]string{}}
	for _, w := range weightFiles {
		if p := filepath.Join(dir, w); fileExists(p) {
			b.Weights = p
			break
		}
	}
	if b.Weights == "" {
		return Base{}, fmt.Errorf("%w: model directory %s has none of %s", ErrNotFound, dir, strings.Join(weightFiles, ", "))
	}
	if err := b.addFiles(); err != nil {
		return Base{}, err
	}
	if b.Config == "" {
		return Base{}, fmt.Errorf("%w: model directory %s has no %s", ErrNotFound, dir, ConfigFile)
	}
	b.Name = b.nameOrPath(dir)
	return b, nil
}

// fromFile resolves a lone weights file (or a sharded checkpoint's index).
func fromFile(spec, path string) (Base, error) {
	b := Base{Spec: spec, Dir: filepath.Dir(path), Weights: path, Files: map[string]string{}}
	if err := b.addFiles(); err != nil {
		return Base{}, err
	}
	b.Name = b.nameOrPath(path)
	return b, nil
}

// addFiles records the config, tokenizer and weights files found in b.Dir
// (every shard of a sharded checkpoint).
func (b *Base) addFiles() error {
	for _, f := range []struct {
		name string
		dst  *string
	}{{ConfigFile, &b.Config}, {VocabFile, &b.Vocab}, {TokenizerConfigFile, &b.TokenizerConfig}} {
		p := filepath.Join(b.Dir, f.name)
		if fileExists(p) {
			*f.dst = p
			b.Files[f.name] = p
		} else if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%w: %s is a broken link (an interrupted download?)", ErrNotFound, p)
		}
	}
	if !fileExists(b.Weights) {
		return fmt.Errorf("%w: weights %s are missing or a broken link (an interrupted download?)", ErrNotFound, b.Weights)
	}
	b.Files[filepath.Base(b.Weights)] = b.Weights
	if strings.HasSuffix(b.Weights, ".index.json") {
		shards, err := model.ReadShardIndex(b.Weights)
		if err != nil {
			return err
		}
		for _, s := range shards {
			if !fileExists(s) {
				return fmt.Errorf("%w: shard %s of %s is missing or a broken link", ErrNotFound, s, b.Weights)
			}
			b.Files[filepath.Base(s)] = s
		}
	}
	return nil
}

// nameOrPath is config.json's _name_or_path when it is set, else path.
func (b *Base) nameOrPath(path string) string {
	if b.Config != "" {
		var c struct {
			Name string `json:"_name_or_path"`
		}
		if data, err := os.ReadFile(b.Config); err == nil && json.Unmarshal(data, &c) == nil && c.Name != "" {
			return c.Name
		}
	}
	return path
}

func fileExists(p string) bool {
	st, err := os.Stat(p) // follows the cache's snapshot → blob links
	return err == nil && st.Mode().IsRegular()
}

// CacheDir is the HF hub cache transformers reads: HF_HUB_CACHE, else
// HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub.
func CacheDir() string {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub")
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "huggingface", "hub")
	}
	return filepath.Join(home, ".cache", "huggingface", "hub")
}

// canonicalOrgs maps the prefixes of the hub's original un-namespaced model
// ids to the organisations they were moved into (bert-base-uncased is now
// google-bert/bert-base-uncased); a cache may hold either spelling.
var canonicalOrgs = []struct{ prefix, org string }{
	{"bert-", "google-bert"}, {"distilbert-", "distilbert"}, {"roberta-", "FacebookAI"}, {"xlm-roberta-", "FacebookAI"},
}

// cacheNames lists the cache folders a hub id may live in.
func cacheNames(id string) []string {
	names := []string{id}
	org, name, namespaced := strings.Cut(id, "/")
	for _, c := range canonicalOrgs {
		switch {
		case namespaced && org == c.org && strings.HasPrefix(name, c.prefix):
			names = append(names, name)
		case !namespaced && strings.HasPrefix(id, c.prefix):
			names = append(names, c.org+"/"+id)
		}
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "models--" + strings.ReplaceAll(n, "/", "--")
	}
	return out
}

// fromCache resolves a hub id from the cache: models--<org>--<name>/refs/main
// names the snapshot under snapshots/<revision>/.
func fromCache(id string) (Base, error) {
	cache := CacheDir()
	var looked []string
	for _, folder := range cacheNames(id) {
		repo := filepath.Join(cache, folder)
		looked = append(looked, repo)
		if _, err := os.Stat(repo); err != nil {
			continue
		}
		rev, err := os.ReadFile(filepath.Join(repo, "refs", "main"))
		if err != nil {
			return Base{}, fmt.Errorf("%w: %s has no refs/main (was it downloaded with a revision other than main? pass --base %s/snapshots/<revision>)", ErrNotFound, repo, repo)
		}
		r := strings.TrimSpace(string(rev))
		if r == "" || strings.ContainsAny(r, `/\`) || r == "." || r == ".." {
			return Base{}, fmt.Errorf("%w: %s/refs/main holds %q, want a commit hash", ErrNotFound, repo, r)
		}
		dir := filepath.Join(repo, "snapshots", r)
		b, err := fromDir(id, dir)
		if err != nil {
			return Base{}, fmt.Errorf("hub id %s (snapshot %s): %w", id, r, err)
		}
		b.Name, b.HubID, b.Revision = id, id, r
		return b, nil
	}
	return Base{}, fmt.Errorf("%w: %s is not in the Hugging Face cache; looked in %s (HF_HUB_CACHE or HF_HOME choose another cache). "+
		"loraft never downloads: on a machine with network run `huggingface-cli download %s` and copy its cache folder (%s) into %s here, or pass --base a model directory",
		ErrNotFound, id, strings.Join(looked, ", "), id, filepath.Join("~/.cache/huggingface/hub", cacheNames(id)[0]), cache)
}
