package model

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/loraft/loraft/trainer/libtorch"
	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// ParamValues copies the trainable tensors to the host, by Param name.
func (m *Model) ParamValues() (map[string]*Tensor, error) {
	out := map[string]*Tensor{}
	for _, p := range m.Params() {
		t, err := hostCopy(p.T)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p.Name, err)
		}
		out[p.Name] = t
	}
	return out, nil
}

func hostCopy(t *ts.Tensor) (*Tensor, error) {
	shape, err := t.Size()
	if err != nil {
		return nil, err
	}
	c := t
	if dev, _ := t.Device(); dev != gotch.CPU || t.DType() != gotch.Float {
		if c, err = t.To(gotch.CPU, false); err != nil {
			return nil, err
		}
		defer c.MustDrop()
		if c.DType() != gotch.Float {
			f, err := c.Totype(gotch.Float, false)
			if err != nil {
				return nil, err
			}
			defer f.MustDrop()
			c = f
		}
	}
	data := make([]float32, numel(shape))
	if err := c.CopyData(data, uint(len(data))); err != nil {
		return nil, err
	}
	return &Tensor{Shape: shape, Data: data}, nil
}

// SetParams overwrites the trainable tensors with vals (by Param name). Every
// parameter must be present with its shape; extra names are an error.
func (m *Model) SetParams(vals map[string]*Tensor) error {
	params := m.Params()
	known := map[string]bool{}
	for _, p := range params {
		known[p.Name] = true
		v, ok := vals[p.Name]
		if !ok {
			return fmt.Errorf("%w: no value for %s", ErrWeights, p.Name)
		}
		shape, err := p.T.Size()
		if err != nil {
			return err
		}
		if !slices.Equal(shape, v.Shape) {
			return fmt.Errorf("%w: %s has shape %v, want %v", ErrWeights, p.Name, v.Shape, shape)
		}
		src, err := upload(v, m.Opts.Device)
		if err != nil {
			return err
		}
		err = copyNoGrad(p.T, src)
		src.MustDrop()
		if err != nil {
			return fmt.Errorf("setting %s: %w", p.Name, err)
		}
	}
	for n := range vals {
		if !known[n] {
			return fmt.Errorf("%w: unexpected parameter %s (adapter for another configuration?)", ErrWeights, n)
		}
	}
	return nil
}

// copyNoGrad copies src into dst in place with grad mode off (dst may be a
// leaf that requires grad). gotch's own Copy_ calls log.Fatal on error.
func copyNoGrad(dst, src *ts.Tensor) error {
	runtime.LockOSThread() // grad mode and gotch's error string are per thread
	defer runtime.UnlockOSThread()
	defer libtorch.NoGrad()()
	lib.AtCopy_(lib.Ctensor(dst.Ctensor()), lib.Ctensor(src.Ctensor()))
	return ts.TorchErr()
}

// HostCopy copies a device tensor to a host float32 Tensor.
func HostCopy(t *ts.Tensor) (*Tensor, error) { return hostCopy(t) }

// Assign overwrites dst in place (grad mode off) with host values of the same shape.
func Assign(dst *ts.Tensor, v *Tensor) error {
	shape, err := dst.Size()
	if err != nil {
		return err
	}
	if !slices.Equal(shape, v.Shape) {
		return fmt.Errorf("%w: shape %v, want %v", ErrWeights, v.Shape, shape)
	}
	dev, err := dst.Device()
	if err != nil {
		return err
	}
	src, err := upload(v, dev)
	if err != nil {
		return err
	}
	defer src.MustDrop()
	return copyNoGrad(dst, src)
}
