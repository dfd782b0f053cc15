package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"

	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/lora"
	"github.com/loraft/loraft/trainer/nf4"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Quant is how the frozen Linear weights are stored.
type Quant string

// Storage of the frozen base's Linear weights.
const (
	// NF4 stores them 4-bit with double-quantized block scales (QLoRA).
	NF4 Quant = "nf4"
	// Dense keeps them float32 (the comparison baseline).
	Dense Quant = "fp32"
)

// Options shape a Model beyond its BERT config.
type Options struct {
	Quant Quant
	// Compute is the dtype of the matrix products: gotch.Float or gotch.BFloat16.
	Compute gotch.DType
	Device  gotch.Device
	LoRA    lora.Config
	Labels  int
	// Seed draws the LoRA A matrices (and nothing else).
	Seed uint64
	// Recompute makes Backward keep only each encoder layer's input between
	// forward and backward and run the layer again in backward (the
	// trainer's --grad-checkpoint): far less memory for one more forward
	// pass, and the same gradients.
	Recompute bool
	// ReleaseHost makes New delete each host tensor from the Weights map
	// once it is on the device, and hand the freed memory back to the OS
	// after each layer, so that the host copy shrinks as the device copy
	// grows: building bert-base then peaks near one copy of the weights
	// instead of two. The caller's map is empty afterwards.
	ReleaseHost bool
}

// Param is a named trainable tensor (float32, requires grad).
type Param struct {
	// Name is the HF/PEFT module path without the adapter name, e.g.
	// bert.encoder.layer.0.attention.self.query.lora_A.weight or classifier.weight.
	Name string
	T    *ts.Tensor
}

type encoderLayer struct {
	q, k, v, attnOut, inter, out *lora.Linear
	ln1w, ln1b, ln2w, ln2b       *ts.Tensor
}

// Model is BertForSequenceClassification with a frozen base and trainable
// LoRA adapters and classifier.
type Model struct {
	Config Config
	Opts   Options

	word, pos, typ0, embLNw, embLNb *ts.Tensor
	layers                          []encoderLayer
	pooler                          *lora.Linear
	clsW, clsB                      *ts.Tensor

	linears   []*lora.Linear
	frozen    []*ts.Tensor // dense frozen tensors, dropped by Drop
	nf4s      []*nf4.Weight
	baseBytes int64
	baseN     int64
}

// New builds a model on opts.Device from host weights. The classifier starts
// from clsW/clsB when given, else from ClassifierInit(opts.Seed). Host
// weights are not retained.
func New(c Config, w Weights, clsW, clsB *Tensor, opts Options) (m *Model, err error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := opts.LoRA.Validate(); err != nil {
		return nil, err
	}
	if opts.Labels < 2 {
		return nil, fmt.Errorf("model: %d labels, want at least 2", opts.Labels)
	}
	if opts.Compute != gotch.Float && opts.Compute != gotch.BFloat16 {
		return nil, fmt.Errorf("model: compute dtype %v, want float32 or bfloat16", opts.Compute)
	}
	m = &Model{Config: c, Opts: opts}
	built := m // every error return sets m to nil: free what was built so far
	defer func() {
		if err != nil {
			built.Drop()
		}
	}()
	get := func(name string) (*Tensor, error) {
		t, ok := w[name]
		if !ok {
			return nil, fmt.Errorf("%w: no %s", ErrWeights, name)
		}
		if opts.ReleaseHost {
			delete(w, name) // the caller's copy goes once t is uploaded
		}
		return t, nil
	}
	release := func() {
		if opts.ReleaseHost {
			debug.FreeOSMemory()
		}
	}
	dense := func(name string) (*ts.Tensor, error) {
		h, err := get(name)
		if err != nil {
			return nil, err
		}
		t, err := upload(h, opts.Device)
		if err != nil {
			return nil, fmt.Errorf("uploading %s: %w", name, err)
		}
		m.frozen = append(m.frozen, t)
		return t, nil
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6c6f7261)) // "lora"
	linear := func(name string) (*lora.Linear, error) {
		hw, err := get(name + ".weight")
		if err != nil {
			return nil, err
		}
		l := &lora.Linear{Name: name}
		if l.Bias, err = dense(name + ".bias"); err != nil {
			return nil, err
		}
		shape := [2]int64{hw.Shape[0], hw.Shape[1]}
		switch opts.Quant {
		case NF4:
			q, err := nf4.Quantize(hw.Data, hw.Shape, true)
			if err != nil {
				return nil, fmt.Errorf("quantizing %s: %w", name, err)
			}
			nw, err := q.Upload(opts.Device)
			if err != nil {
				return nil, fmt.Errorf("uploading %s: %w", name, err)
			}
			m.nf4s = append(m.nf4s, nw)
			m.baseBytes += int64(q.StoredBytes())
			l.Base = &nf4Frozen{w: nw, shape: shape}
		case Dense:
			// hw is already out of the map under ReleaseHost: upload it here.
			t, err := upload(hw, opts.Device)
			if err != nil {
				return nil, fmt.Errorf("uploading %s.weight: %w", name, err)
			}
			m.frozen = append(m.frozen, t)
			m.baseBytes += 4 * numel(hw.Shape)
			l.Base = &denseFrozen{t: t, shape: shape}
		default:
			return nil, fmt.Errorf("model: base storage %q, want nf4 or fp32", opts.Quant)
		}
		m.baseN += numel(hw.Shape)
		if opts.LoRA.Matches(name) {
			if err := l.NewAdapter(opts.LoRA, rng, opts.Device); err != nil {
				return nil, err
			}
		}
		m.linears = append(m.linears, l)
		return l, nil
	}

	if m.word, err = dense("bert.embeddings.word_embeddings.weight"); err != nil {
		return nil, err
	}
	if m.pos, err = dense("bert.embeddings.position_embeddings.weight"); err != nil {
		return nil, err
	}
	typ, err := get("bert.embeddings.token_type_embeddings.weight")
	if err != nil {
		return nil, err
	}
	// Single-segment inputs only use token type 0: keep its row.
	if m.typ0, err = upload(&Tensor{Shape: []int64{typ.Shape[1]}, Data: typ.Data[:typ.Shape[1]]}, opts.Device); err != nil {
		return nil, err
	}
	m.frozen = append(m.frozen, m.typ0)
	if m.embLNw, err = dense("bert.embeddings.LayerNorm.weight"); err != nil {
		return nil, err
	}
	if m.embLNb, err = dense("bert.embeddings.LayerNorm.bias"); err != nil {
		return nil, err
	}
	release()
	for i := range c.NumLayers {
		p := fmt.Sprintf("bert.encoder.layer.%d.", i)
		var L encoderLayer
		for _, s := range []struct {
			dst  **lora.Linear
			name string
		}{{&L.q, "attention.self.query"}, {&L.k, "attention.self.key"}, {&L.v, "attention.self.value"},
			{&L.attnOut, "attention.output.dense"}, {&L.inter, "intermediate.dense"}, {&L.out, "output.dense"}} {
			if *s.dst, err = linear(p + s.name); err != nil {
				return nil, err
			}
		}
		for _, s := range []struct {
			dst  **ts.Tensor
			name string
		}{{&L.ln1w, "attention.output.LayerNorm.weight"}, {&L.ln1b, "attention.output.LayerNorm.bias"},
			{&L.ln2w, "output.LayerNorm.weight"}, {&L.ln2b, "output.LayerNorm.bias"}} {
			if *s.dst, err = dense(p + s.name); err != nil {
				return nil, err
			}
		}
		m.layers = append(m.layers, L)
		release()
	}
	if m.pooler, err = linear("bert.pooler.dense"); err != nil {
		return nil, err
	}
	if clsW == nil || clsB == nil {
		clsW, clsB = ClassifierInit(c, opts.Labels, opts.Seed)
	}
	if m.clsW, err = uploadTrainable(clsW, opts.Device); err != nil {
		return nil, err
	}
	if m.clsB, err = uploadTrainable(clsB, opts.Device); err != nil {
		return nil, err
	}
	return m, nil
}

func upload(h *Tensor, device gotch.Device) (*ts.Tensor, error) {
	t, err := libtorch.TensorOf(h.Data, h.Shape)
	if err != nil {
		return nil, err
	}
	if device == gotch.CPU {
		return t, nil
	}
	return t.To(device, true)
}

func uploadTrainable(h *Tensor, device gotch.Device) (*ts.Tensor, error) {
	t, err := libtorch.TensorOf(h.Data, h.Shape)
	if err != nil {
		return nil, err
	}
	return lora.Trainable(t, device)
}

// Forward computes class logits [B, labels] (float32) for token ids and an
// attention mask, both int64 [B, L] on the model's device. train enables
// dropout, drawn from libtorch's generator (seed it per step): one draw
// seeds the embeddings, each layer and the head separately (dropoutSeeds),
// so that Backward's recomputation of a layer repeats its masks exactly.
func (m *Model) Forward(g *graph.Graph, ids, mask *ts.Tensor, train bool) *ts.Tensor {
	seeds := m.dropoutSeeds(g, train)
	in := m.embed(g, ids, mask, train, seeds)
	if in == nil {
		return nil
	}
	h := in.h
	for i := range m.layers {
		h = m.layer(g, i, h, in, train, seeds)
	}
	return m.head(g, h, train, seeds)
}

// encoderInput is the embedded batch and what every layer needs besides
// the hidden states.
type encoderInput struct {
	h, bias *ts.Tensor // [B, L, H] float32; [B, 1, 1, L]
	b, l    int64
}

// embed looks the tokens up and builds the attention bias; nil (with the
// error in g) on bad input.
func (m *Model) embed(g *graph.Graph, ids, mask *ts.Tensor, train bool, seeds dropoutSeeds) *encoderInput {
	c := m.Config
	shape, err := ids.Size()
	if err != nil || len(shape) != 2 {
		g.Fail("model input", fmt.Errorf("ids must be [batch, length], got %v (%v)", shape, err))
		return nil
	}
	B, L := shape[0], shape[1]
	if L > int64(c.MaxPositions) {
		g.Fail("model input", fmt.Errorf("sequence length %d exceeds max_position_embeddings %d", L, c.MaxPositions))
		return nil
	}
	end := ts.IntScalar(L)
	posIDs := g.Own(must(ts.Arange(end, gotch.Int64, m.Opts.Device)))
	end.MustDrop()
	seeds.use(embedSeed)
	emb := g.Add(g.Add(g.Embedding(m.word, ids), g.Embedding(m.pos, posIDs)), m.typ0)
	h := g.Dropout(g.LayerNorm(emb, m.embLNw, m.embLNb, c.LayerNormEps), c.HiddenDropout, train)
	return &encoderInput{h: h, bias: g.AttentionMaskBias(mask, gotch.Float), b: B, l: L}
}

// layer runs encoder layer i on h.
func (m *Model) layer(g *graph.Graph, i int, h *ts.Tensor, in *encoderInput, train bool, seeds dropoutSeeds) *ts.Tensor {
	c, dt, l := m.Config, m.Opts.Compute, m.layers[i]
	B, L := in.b, in.l
	H, nh := int64(c.HiddenSize), int64(c.NumHeads)
	hd := H / nh
	heads := func(x *ts.Tensor) *ts.Tensor { // [B, L, H] → [B, nh, L, hd]
		return g.Permute(g.View(x, B, L, nh, hd), 0, 2, 1, 3)
	}
	seeds.use(i)
	q := heads(l.q.Forward(g, h, dt, train))
	k := heads(l.k.Forward(g, h, dt, train))
	v := heads(l.v.Forward(g, h, dt, train))
	scores := g.Add(g.Scale(g.Matmul(q, g.Transpose(k, -1, -2)), 1/math.Sqrt(float64(hd))), in.bias)
	probs := g.Dropout(g.Softmax(scores, -1), c.AttentionDropout, train)
	ctx := g.View(g.Contiguous(g.Permute(g.Matmul(probs, v), 0, 2, 1, 3)), B, L, H)
	a := g.Dropout(l.attnOut.Forward(g, ctx, dt, train), c.HiddenDropout, train)
	h1 := g.LayerNorm(g.Add(a, h), l.ln1w, l.ln1b, c.LayerNormEps)
	x := g.Gelu(l.inter.Forward(g, h1, dt, train))
	o := g.Dropout(l.out.Forward(g, x, dt, train), c.HiddenDropout, train)
	return g.LayerNorm(g.Add(o, h1), l.ln2w, l.ln2b, c.LayerNormEps)
}

// head pools the first token of the last hidden states and classifies it.
func (m *Model) head(g *graph.Graph, h *ts.Tensor, train bool, seeds dropoutSeeds) *ts.Tensor {
	seeds.use(headSeed)
	pooled := g.Tanh(m.pooler.Forward(g, g.Select(h, 1, 0), m.Opts.Compute, train))
	pooled = g.Dropout(pooled, m.Config.classifierDropout(), train)
	logits := g.Linear(pooled, m.clsW, m.clsB)
	// Leave libtorch's generator in the same state whatever ran after the
	// head (a plain backward, or Backward's recomputation).
	seeds.use(afterSeed)
	return logits
}

// dropoutSeeds derives the libtorch seed of each part of one training
// forward pass from a single draw of libtorch's generator; nil when there
// is no dropout.
type dropoutSeeds []int64

// Parts of the forward pass with a seed of their own besides the layers
// (which use their index).
const (
	embedSeed = -1
	headSeed  = -2
	afterSeed = -3
)

func (m *Model) dropoutSeeds(g *graph.Graph, train bool) dropoutSeeds {
	if !train || g.Err() != nil {
		return nil
	}
	t, err := ts.Randint(math.MaxInt32, []int64{1}, gotch.Int64, gotch.CPU)
	if err != nil {
		g.Fail("dropout seed", err)
		return nil
	}
	base, err := t.Int64Value([]int64{0})
	t.MustDrop()
	if err != nil {
		g.Fail("dropout seed", err)
		return nil
	}
	seeds := make(dropoutSeeds, len(m.layers)+3)
	for i := range seeds {
		// splitmix64 of (draw, part): distinct, well-spread seeds.
		z := uint64(base)*0x9e3779b97f4a7c15 + uint64(i+1)*0xbf58476d1ce4e5b9
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		seeds[i] = int64((z ^ z>>31) >> 1)
	}
	return seeds
}

// use seeds libtorch's generator for part (a layer index, or embedSeed,
// headSeed, afterSeed).
func (s dropoutSeeds) use(part int) {
	if s == nil {
		return
	}
	libtorch.ManualSeed(s[(part+3)%len(s)])
}

// must unwraps an op result for Graph.Own (which ignores a nil tensor after
// recording nothing): errors here are impossible for valid scalars.
func must(t *ts.Tensor, err error) *ts.Tensor {
	if err != nil {
		return nil
	}
	return t
}

// Params lists the trainable tensors in a fixed order: LoRA A and B of each
// adapted Linear in model order, then the classifier weight and bias.
func (m *Model) Params() []Param {
	var ps []Param
	for _, l := range m.linears {
		if l.A != nil {
			ps = append(ps, Param{l.Name + ".lora_A.weight", l.A}, Param{l.Name + ".lora_B.weight", l.B})
		}
	}
	return append(ps, Param{"classifier.weight", m.clsW}, Param{"classifier.bias", m.clsB})
}

// AdaptedModules lists the names of the Linear modules that carry LoRA.
func (m *Model) AdaptedModules() []string {
	var names []string
	for _, l := range m.linears {
		if l.A != nil {
			names = append(names, l.Name)
		}
	}
	return slices.Clip(names)
}

// BaseBytes is the storage of the frozen Linear weights (NF4 codes and
// scales, or float32), and BaseParams their parameter count.
func (m *Model) BaseBytes() int64  { return m.baseBytes }
func (m *Model) BaseParams() int64 { return m.baseN }

// Drop frees every tensor of the model.
func (m *Model) Drop() {
	for _, t := range m.frozen {
		_ = t.Drop()
	}
	for _, w := range m.nf4s {
		w.Drop()
	}
	for _, l := range m.linears {
		for _, p := range l.Params() {
			_ = p.Drop()
		}
	}
	for _, t := range []*ts.Tensor{m.clsW, m.clsB} {
		if t != nil {
			_ = t.Drop()
		}
	}
	m.frozen, m.nf4s, m.linears = nil, nil, nil
}

// denseFrozen is a float32 frozen weight.
type denseFrozen struct {
	t     *ts.Tensor
	shape [2]int64
}

func (d *denseFrozen) Weight(g *graph.Graph, dtype gotch.DType) *ts.Tensor { return g.To(d.t, dtype) }
func (d *denseFrozen) Shape() [2]int64                                     { return d.shape }

// nf4Frozen dequantizes an NF4 weight on the fly for each forward pass.
type nf4Frozen struct {
	w     *nf4.Weight
	shape [2]int64
}

func (n *nf4Frozen) Weight(g *graph.Graph, dtype gotch.DType) *ts.Tensor {
	if g.Err() != nil {
		return nil
	}
	t, err := n.w.Dequantize(dtype)
	if err != nil {
		g.Fail("nf4 dequantize", err)
		return nil
	}
	return g.Own(t)
}
func (n *nf4Frozen) Shape() [2]int64 { return n.shape }

// Linear is the layer by nf4.Weight.Linear: backward dequantizes the weight
// again, so autograd keeps only the packed 4-bit weight.
func (n *nf4Frozen) Linear(g *graph.Graph, x, bias *ts.Tensor) *ts.Tensor {
	if g.Err() != nil {
		return nil
	}
	t, err := n.w.Linear(x, bias)
	if err != nil {
		g.Fail("nf4 linear", err)
		return nil
	}
	return g.Own(t)
}
