package optim

import (
	"fmt"
	"math"

	"github.com/loraft/loraft/trainer/model"
	"github.com/sugarme/gotch/ts"
)

// AdamW is PyTorch's torch.optim.AdamW (decoupled weight decay, bias-corrected
// moments), written with tensor ops so its moments can be checkpointed and a
// resumed run takes exactly the steps an uninterrupted one would.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	// Step is the number of updates applied so far.
	Step int64
	// M and V are the first and second moments, one per parameter.
	M, V []*ts.Tensor

	params []model.Param
}

// NewAdamW creates zero moments for params with PyTorch's default betas and eps.
func NewAdamW(params []model.Param, weightDecay float64) (*AdamW, error) {
	o := &AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay, params: params}
	for _, p := range params {
		m, err := p.T.ZerosLike(false)
		if err != nil {
			o.Drop()
			return nil, fmt.Errorf("adamw moments for %s: %w", p.Name, err)
		}
		v, err := p.T.ZerosLike(false)
		if err != nil {
			m.MustDrop()
			o.Drop()
			return nil, fmt.Errorf("adamw moments for %s: %w", p.Name, err)
		}
		o.M, o.V = append(o.M, m), append(o.V, v)
	}
	return o, nil
}

// Update applies one AdamW step with learning rate lr to every parameter
// from its .grad. The caller must have disabled grad mode.
func (o *AdamW) Update(lr float64) error {
	o.Step++
	bc1 := 1 - math.Pow(o.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(o.Beta2, float64(o.Step))
	stepSize := lr / bc1
	for i, p := range o.params {
		if err := o.update(p, o.M[i], o.V[i], lr, stepSize, math.Sqrt(bc2)); err != nil {
			return fmt.Errorf("adamw step %d on %s: %w", o.Step, p.Name, err)
		}
	}
	return nil
}

func (o *AdamW) update(p model.Param, m, v *ts.Tensor, lr, stepSize, sqrtBC2 float64) error {
	g, err := p.T.Grad(false)
	if err != nil {
		return err
	}
	defer g.MustDrop()
	if ok, _ := g.Defined(); !ok {
		return nil // no gradient reached this parameter
	}
	sc := func(x float64) *ts.Scalar { return ts.FloatScalar(x) }
	// p ← p·(1 − lr·wd)
	if o.WeightDecay != 0 {
		s := sc(1 - lr*o.WeightDecay)
		err := p.T.MulScalar_(s)
		s.MustDrop()
		if err != nil {
			return err
		}
	}
	// m ← β1·m + (1−β1)·g
	s := sc(o.Beta1)
	if err := m.MulScalar_(s); err != nil {
		return err
	}
	s.MustDrop()
	s = sc(1 - o.Beta1)
	gs, err := g.MulScalar(s, false)
	s.MustDrop()
	if err != nil {
		return err
	}
	err = m.Add_(gs)
	gs.MustDrop()
	if err != nil {
		return err
	}
	// v ← β2·v + (1−β2)·g²
	s = sc(o.Beta2)
	if err := v.MulScalar_(s); err != nil {
		return err
	}
	s.MustDrop()
	g2, err := g.Mul(g, false)
	if err != nil {
		return err
	}
	s = sc(1 - o.Beta2)
	err = g2.MulScalar_(s)
	s.MustDrop()
	if err == nil {
		err = v.Add_(g2)
	}
	g2.MustDrop()
	if err != nil {
		return err
	}
	// p ← p − stepSize · m / (√v/√bc2 + eps)
	denom, err := v.Sqrt(false)
	if err != nil {
		return err
	}
	defer denom.MustDrop()
	s = sc(sqrtBC2)
	err = denom.DivScalar_(s)
	s.MustDrop()
	if err != nil {
		return err
	}
	s = sc(o.Eps)
	err = denom.AddScalar_(s)
	s.MustDrop()
	if err != nil {
		return err
	}
	upd, err := m.Div(denom, false)
	if err != nil {
		return err
	}
	defer upd.MustDrop()
	s = sc(stepSize)
	err = upd.MulScalar_(s)
	s.MustDrop()
	if err != nil {
		return err
	}
	return p.T.Sub_(upd)
}

// Drop frees the moments.
func (o *AdamW) Drop() {
	for _, t := range append(o.M, o.V...) {
		_ = t.Drop()
	}
	o.M, o.V = nil, nil
}

// Moments copies the first and second moments to the host, by parameter name.
func (o *AdamW) Moments() (m, v map[string]*model.Tensor, err error) {
	m, v = map[string]*model.Tensor{}, map[string]*model.Tensor{}
	for i, p := range o.params {
		if m[p.Name], err = model.HostCopy(o.M[i]); err != nil {
			return nil, nil, fmt.Errorf("adamw moments of %s: %w", p.Name, err)
		}
		if v[p.Name], err = model.HostCopy(o.V[i]); err != nil {
			return nil, nil, fmt.Errorf("adamw moments of %s: %w", p.Name, err)
		}
	}
	return m, v, nil
}

// Restore sets the moments and the update count from a checkpoint.
func (o *AdamW) Restore(m, v map[string]*model.Tensor, step int64) error {
	for i, p := range o.params {
		mi, ok1 := m[p.Name]
		vi, ok2 := v[p.Name]
		if !ok1 || !ok2 {
			return fmt.Errorf("adamw restore: checkpoint has no moments for %s", p.Name)
		}
		if err := model.Assign(o.M[i], mi); err != nil {
			return fmt.Errorf("adamw restore %s: %w", p.Name, err)
		}
		if err := model.Assign(o.V[i], vi); err != nil {
			return fmt.Errorf("adamw restore %s: %w", p.Name, err)
		}
	}
	o.Step = step
	return nil
}
