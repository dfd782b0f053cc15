package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/loraft/loraft/checkpoint/safetensors"
	"github.com/loraft/loraft/trainer/model/torchbin"
)

// tensorFile is a weights file's tensors by name, whatever its format.
type tensorFile interface {
	Names() []string
	Shape(name string) ([]int64, error)
	Float32(name string) ([]float32, []int64, error)
}

type safetensorsFile struct{ *safetensors.File }

func (f safetensorsFile) Shape(name string) ([]int64, error) {
	info, err := f.Info(name)
	return info.Shape, err
}

type torchFile struct{ *torchbin.File }

func (f torchFile) Shape(name string) ([]int64, error) {
	info, err := f.Info(name)
	return info.Shape, err
}

// openTensorFile opens a safetensors or torch.save file, told apart by
// their first bytes (a zip or a pickle for torch; safetensors starts with
// its header length).
func openTensorFile(path string) (tensorFile, error) {
	if isTorchFile(path) {
		f, err := torchbin.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading weights %s: %w", path, err)
		}
		return torchFile{f}, nil
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	return safetensorsFile{f}, nil
}

func isTorchFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false // safetensors.Open reports the error
	}
	defer f.Close()
	var head [4]byte
	if n, _ := f.Read(head[:]); n < 4 {
		return false
	}
	return bytes.Equal(head[:], []byte("PK\x03\x04")) || head[0] == 0x80
}

// MaxShardIndexBytes bounds a *.index.json (bert-large's is ~40 KB).
const MaxShardIndexBytes = 16 << 20

// ReadShardIndex reads an HF sharded-checkpoint index
// (pytorch_model.bin.index.json or model.safetensors.index.json) and returns
// the paths of its shards, in the order they first appear in its sorted
// weight map. Shards must be plain file names in the index's directory.
func ReadShardIndex(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading shard index: %w", err)
	}
	if st.Size() > MaxShardIndexBytes {
		return nil, fmt.Errorf("shard index %s is %d bytes, over the %d limit", path, st.Size(), MaxShardIndexBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading shard index: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("shard index %s: %w", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("shard index %s: empty or missing weight_map", path)
	}
	keys := make([]string, 0, len(idx.WeightMap))
	for k := range idx.WeightMap {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var shards []string
	seen := map[string]bool{}
	for _, k := range keys {
		s := idx.WeightMap[k]
		if s == "" || s != filepath.Base(s) || s == "." || s == ".." || strings.ContainsAny(s, `/\`) {
			return nil, fmt.Errorf("shard index %s: tensor %s names shard %q, want a file name in the same directory", path, k, s)
		}
		if !seen[s] {
			seen[s] = true
			shards = append(shards, filepath.Join(filepath.Dir(path), s))
		}
	}
	return shards, nil
}
