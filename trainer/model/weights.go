package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Tensor is a host-side float32 tensor.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// Weights are a model's parameters by HF name, on the host.
type Weights map[string]*Tensor

// ErrWeights reports a weights file that does not fit the configuration.
var ErrWeights = errors.New("weights do not match the model")

// expectedShapes lists every base parameter of BertForSequenceClassification
// (classifier excluded: it is trained) with its shape under c.
func expectedShapes(c Config) map[string][]int64 {
	H, I := int64(c.HiddenSize), int64(c.IntermediateSize)
	m := map[string][]int64{
		"bert.embeddings.word_embeddings.weight":       {int64(c.VocabSize), H},
		"bert.embeddings.position_embeddings.weight":   {int64(c.MaxPositions), H},
		"bert.embeddings.token_type_embeddings.weight": {int64(c.TypeVocabSize), H},
		"bert.embeddings.LayerNorm.weight":             {H},
		"bert.embeddings.LayerNorm.bias":               {H},
		"bert.pooler.dense.weight":                     {H, H},
		"bert.pooler.dense.bias":                       {H},
	}
	for i := range c.NumLayers {
		p := fmt.Sprintf("bert.encoder.layer.%d.", i)
		for _, lin := range []struct {
			name    string
			out, in int64
		}{
			{"attention.self.query", H, H}, {"attention.self.key", H, H}, {"attention.self.value", H, H},
			{"attention.output.dense", H, H}, {"intermediate.dense", I, H}, {"output.dense", H, I},
		} {
			m[p+lin.name+".weight"] = []int64{lin.out, lin.in}
			m[p+lin.name+".bias"] = []int64{lin.out}
		}
		for _, ln := range []string{"attention.output.LayerNorm", "output.LayerNorm"} {
			m[p+ln+".weight"] = []int64{H}
			m[p+ln+".bias"] = []int64{H}
		}
	}
	return m
}

// RandomWeights initialises a base model as HF's BertPreTrainedModel does:
// Linear and Embedding weights ~ N(0, initializer_range) (the padding row of
// the word embeddings zero), biases 0, LayerNorm weight 1. The draws come from
// a PCG seeded with seed, so every machine builds identical bytes.
func RandomWeights(c Config, seed uint64) Weights {
	rng := rand.New(rand.NewPCG(seed, 0x6c6f72616674)) // "loraft"
	shapes := expectedShapes(c)
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	slices.Sort(names) // fixed draw order
	w := Weights{}
	for _, n := range names {
		shape := shapes[n]
		t := &Tensor{Shape: shape, Data: make([]float32, numel(shape))}
		switch {
		case strings.HasSuffix(n, "LayerNorm.weight"):
			for i := range t.Data {
				t.Data[i] = 1
			}
		case strings.HasSuffix(n, ".bias"):
		default:
			fillNormal(rng, t.Data, c.InitializerRange)
			if n == "bert.embeddings.word_embeddings.weight" && c.PadTokenID >= 0 && c.PadTokenID < c.VocabSize {
				clear(t.Data[int64(c.PadTokenID)*shape[1] : int64(c.PadTokenID+1)*shape[1]])
			}
		}
		w[n] = t
	}
	return w
}

// ClassifierInit returns the classifier head's initial weight [labels, H] and
// bias [labels]: N(0, initializer_range) and zeros, drawn from seed.
func ClassifierInit(c Config, labels int, seed uint64) (*Tensor, *Tensor) {
	rng := rand.New(rand.NewPCG(seed, 0x636c6173)) // "clas"
	w := &Tensor{Shape: []int64{int64(labels), int64(c.HiddenSize)}, Data: make([]float32, labels*c.HiddenSize)}
	fillNormal(rng, w.Data, c.InitializerRange)
	return w, &Tensor{Shape: []int64{int64(labels)}, Data: make([]float32, labels)}
}

// fillNormal draws N(0, std) with the Box–Muller transform from rng's raw
// 64-bit output (not math/rand's NormFloat64, whose algorithm may change).
func fillNormal(rng *rand.Rand, out []float32, std float64) {
	for i := 0; i < len(out); i += 2 {
		u1 := (float64(rng.Uint64()>>11) + 1) / (1 << 53) // (0, 1]
		u2 := float64(rng.Uint64()>>11) / (1 << 53)
		r := math.Sqrt(-2 * math.Log(u1))
		out[i] = float32(std * r * math.Cos(2*math.Pi*u2))
		if i+1 < len(out) {
			out[i+1] = float32(std * r * math.Sin(2*math.Pi*u2))
		}
	}
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// ignoredKey reports keys a bert-base-uncased checkpoint carries that a
// classifier does not use: the pre-training heads and buffers.
func ignoredKey(k string) bool {
	return strings.HasPrefix(k, "cls.") || strings.HasSuffix(k, "position_ids")
}

// LoadWeights reads a base model's weights for c from path: an HF
// model.safetensors, a PyTorch pytorch_model.bin (read by package torchbin,
// which never runs pickled code), or the *.index.json of a sharded
// checkpoint of either kind (its shards in the same directory). It takes
// BertForPreTraining, BertModel (no "bert." prefix) and
// BertForSequenceClassification layouts, F32/F16/BF16 (F64 in .bin files),
// and TF-era LayerNorm gamma/beta names. It fails with one error listing
// every missing, unexpected and mis-shaped key. When the file has a
// classifier of the right shape it is returned too (else nil).
func LoadWeights(path string, c Config, labels int) (w Weights, classifierW, classifierB *Tensor, err error) {
	paths := []string{path}
	if strings.HasSuffix(path, ".index.json") {
		if paths, err = ReadShardIndex(path); err != nil {
			return nil, nil, nil, err
		}
	}
	return LoadWeightFiles(paths, c, labels)
}

// LoadWeightFiles is LoadWeights over the shards of one checkpoint: every
// tensor must be in exactly one of them.
func LoadWeightFiles(paths []string, c Config, labels int) (w Weights, classifierW, classifierB *Tensor, err error) {
	if len(paths) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: no weights files", ErrWeights)
	}
	type named struct {
		file tensorFile
		key  string
	}
	var keys []named
	from := map[string]string{}
	for _, p := range paths {
		f, err := openTensorFile(p)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, k := range f.Names() {
			if prev, dup := from[k]; dup {
				return nil, nil, nil, fmt.Errorf("%w: tensor %s is in both %s and %s", ErrWeights, k, prev, p)
			}
			from[k] = p
			keys = append(keys, named{f, k})
		}
	}
	path := strings.Join(paths, ", ")
	want := expectedShapes(c)
	canon := func(k string) string {
		if !strings.HasPrefix(k, "bert.") && !strings.HasPrefix(k, "cls.") && !strings.HasPrefix(k, "classifier.") {
			k = "bert." + k
		}
		k = strings.Replace(k, "LayerNorm.gamma", "LayerNorm.weight", 1)
		return strings.Replace(k, "LayerNorm.beta", "LayerNorm.bias", 1)
	}
	var missing, unexpected, misshaped []string
	w = Weights{}
	seen := map[string]bool{}
	for _, nk := range keys {
		f, k := nk.file, nk.key
		name := canon(k)
		infoShape, err := f.Shape(k)
		if err != nil {
			return nil, nil, nil, err
		}
		shape, ok := want[name]
		switch {
		case name == "classifier.weight" || name == "classifier.bias":
			wantShape := []int64{int64(labels), int64(c.HiddenSize)}
			if name == "classifier.bias" {
				wantShape = []int64{int64(labels)}
			}
			if !slices.Equal(infoShape, wantShape) {
				// A head for other labels is not ours: train a fresh one, as HF does with ignore_mismatched_sizes.
				continue
			}
			data, _, err := f.Float32(k)
			if err != nil {
				return nil, nil, nil, err
			}
			t := &Tensor{Shape: infoShape, Data: data}
			if name == "classifier.weight" {
				classifierW = t
			} else {
				classifierB = t
			}
			continue
		case !ok:
			if !ignoredKey(name) {
				unexpected = append(unexpected, k)
			}
			continue
		case !slices.Equal(infoShape, shape):
			misshaped = append(misshaped, fmt.Sprintf("%s %v (want %v)", k, infoShape, shape))
			continue
		}
		data, _, err := f.Float32(k)
		if err != nil {
			return nil, nil, nil, err
		}
		w[name] = &Tensor{Shape: shape, Data: data}
		seen[name] = true
	}
	for n := range want {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	if len(missing)+len(unexpected)+len(misshaped) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %d missing, %d unexpected, %d mis-shaped keys for a %d-layer, %d-wide BERT", path, len(missing), len(unexpected), len(misshaped), c.NumLayers, c.HiddenSize)
		for _, l := range []struct {
			what string
			keys []string
		}{{"missing", missing}, {"unexpected", unexpected}, {"mis-shaped", misshaped}} {
			if len(l.keys) > 0 {
				shown := l.keys
				if len(shown) > 8 {
					shown = append(slices.Clone(shown[:8]), fmt.Sprintf("… %d more", len(l.keys)-8))
				}
				fmt.Fprintf(&b, "; %s: %s", l.what, strings.Join(shown, ", "))
			}
		}
		return nil, nil, nil, fmt.Errorf("%w: %s", ErrWeights, b.String())
	}
	if (classifierW == nil) != (classifierB == nil) {
		classifierW, classifierB = nil, nil
	}
	return w, classifierW, classifierB, nil
}
