package trainer

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"

	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/graph"
	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/loraft/loraft/trainer/metrics"
	"github.com/loraft/loraft/trainer/model"
)

// maxEvalTokens caps the token slots (rows × padded length) of one
// evaluation batch. Memory, not speed, sets it: an encoder layer's
// intermediates grow with the batch's tokens (about 75 KB each for
// bert-base), and a batch of 64×128 made evaluation, not training, the
// process's peak (1.57 GB against 0.75 GB for training steps of 8×128 with
// --grad-checkpoint). Matrix products of 4,096 rows already run at full speed.
const maxEvalTokens = 4096

// Logits runs the model without dropout or gradients over rows of d, batch
// rows at a time (fewer where they would exceed maxEvalTokens token slots),
// and returns each row's class logits, in the order of rows. It visits the
// rows longest first, so each batch, padded to its longest row, holds rows
// of similar length: the answer is the same (up to float rounding), the
// padding mostly gone.
func Logits(ctx context.Context, m *model.Model, d *Data, rows []int, batch int) ([][]float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer libtorch.NoGrad()()

	byLength := make([]int, len(rows)) // positions in rows
	for i := range byLength {
		byLength[i] = i
	}
	slices.SortStableFunc(byLength, func(a, b int) int {
		return cmp.Compare(len(d.Tokens.IDs[rows[b]]), len(d.Tokens.IDs[rows[a]]))
	})
	out := make([][]float64, len(rows))
	chunk := make([]int, 0, batch)
	for _, pos := range evalBatches(byLength, func(p int) int { return len(d.Tokens.IDs[rows[p]]) }, batch) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("evaluate: %w", err)
		}
		chunk = chunk[:0]
		for _, p := range pos {
			chunk = append(chunk, rows[p])
		}
		l, err := batchLogits(m, d.Tokens.Batch(d.DS, chunk, d.PadID))
		if err != nil {
			return nil, err
		}
		for i, p := range pos {
			out[p] = l[i]
		}
	}
	return out, nil
}

// evalBatches cuts byLength (positions, longest row first) into batches of
// at most batch rows and at most maxEvalTokens token slots; a batch's first
// row is its longest and sets its padded length.
func evalBatches(byLength []int, length func(pos int) int, batch int) [][]int {
	var out [][]int
	for lo := 0; lo < len(byLength); {
		fit := max(1, maxEvalTokens/max(1, length(byLength[lo])))
		hi := min(lo+min(batch, fit), len(byLength))
		out = append(out, byLength[lo:hi])
		lo = hi
	}
	return out
}

func batchLogits(m *model.Model, b shard.Batch) ([][]float64, error) {
	g := graph.New()
	defer g.Drop()
	ids, mask, _, err := batchTensors(g, b, m.Opts.Device)
	if err != nil {
		return nil, err
	}
	logits := m.Infer(g, ids, mask)
	if err := g.Err(); err != nil {
		return nil, err
	}
	flat := logits.Float64Values()
	k := len(flat) / b.Size
	out := make([][]float64, b.Size)
	for i := range out {
		out[i] = flat[i*k : (i+1)*k]
	}
	return out, nil
}

// Evaluate computes metrics for rows of d with confidence scores calibrated
// by temperature (1: none). It also returns the raw logits.
func Evaluate(ctx context.Context, m *model.Model, d *Data, rows []int, batch int, temperature float64) (metrics.Report, [][]float64, error) {
	logits, err := Logits(ctx, m, d, rows, batch)
	if err != nil {
		return metrics.Report{}, nil, err
	}
	rep, err := evaluateLogits(logits, labelsOf(d, rows), temperature)
	return rep, logits, err
}

func evaluateLogits(logits [][]float64, labels []int, temperature float64) (metrics.Report, error) {
	rep, err := metrics.Evaluate(labels, metrics.Calibrate(logits, temperature), shard.LabelNames(), metrics.DefaultECEBins)
	if err != nil {
		return rep, err
	}
	rep.Temperature = temperature
	return rep, nil
}

// Prediction is one statement's class and calibrated probabilities.
type Prediction struct {
	Label         string             `json:"label"`
	Confidence    float64            `json:"confidence"`
	Probabilities map[string]float64 `json:"probabilities"`
}

// Encoder tokenizes statements for Predict (wordpiece.Tokenizer).
type Encoder interface {
	Encode(text string, maxLen int) ([]int32, int)
	PadID() int32
}

// Predict classifies texts with the manifest's max length and temperature.
func Predict(ctx context.Context, m *model.Model, tok Encoder, man Manifest, texts []string) ([]Prediction, error) {
	ids := make([][]int32, len(texts))
	for i, s := range texts {
		ids[i], _ = tok.Encode(s, man.Tokenizer.MaxLen)
	}
	var out []Prediction
	const batch = 32
	for lo := 0; lo < len(ids); lo += batch {
		p, err := PredictTokens(ctx, m, tok.PadID(), man, ids[lo:min(lo+batch, len(ids))])
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	return out, nil
}

// PredictTokens classifies one batch of tokenized statements (each at most
// the manifest's max length, [CLS] and [SEP] included), padded to the
// longest of them, with the manifest's temperature. The caller chooses the
// batch: `loraft serve` groups statements of similar length.
func PredictTokens(ctx context.Context, m *model.Model, padID int32, man Manifest, ids [][]int32) ([]Prediction, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer libtorch.NoGrad()()
	t := &shard.Tokens{MaxLen: man.Tokenizer.MaxLen, IDs: ids, FullLen: make([]int32, len(ids))}
	rows := make([]int, len(ids))
	for i := range rows {
		rows[i] = i
	}
	ds := &shard.Dataset{Rows: make([]shard.Row, len(ids))}
	logits, err := batchLogits(m, t.Batch(ds, rows, padID))
	if err != nil {
		return nil, err
	}
	out := make([]Prediction, 0, len(ids))
	for _, probs := range metrics.Calibrate(logits, man.Temperature) {
		p := Prediction{Probabilities: make(map[string]float64, len(probs))}
		for k, v := range probs {
			p.Probabilities[man.Labels[k]] = v
			if v > p.Confidence {
				p.Label, p.Confidence = man.Labels[k], v
			}
		}
		out = append(out, p)
	}
	return out, nil
}
