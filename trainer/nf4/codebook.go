package nf4

import "slices"

// BlockSize is the number of weights that share one absmax.
const BlockSize = 64

// AbsmaxBlockSize is the number of absmax values that share one fp32 scale
// under double quantization (bitsandbytes fixes it at 256).
const AbsmaxBlockSize = 256

// zeroCode is the NF4 code of 0.0.
const zeroCode = 7

// codebook is bitsandbytes' NF4 data type, index = code
// (functional.py get_4bit_type("nf4"), the same values as csrc/kernels.cu).
var codebook = [16]float32{
	-1.0,
	-0.6961928009986877,
	-0.5250730514526367,
	-0.39491748809814453,
	-0.28444138169288635,
	-0.18477343022823334,
	-0.09105003625154495,
	0.0,
	0.07958029955625534,
	0.16093020141124725,
	0.24611230194568634,
	0.33791524171829224,
	0.44070982933044434,
	0.5626170039176941,
	0.7229568362236023,
	1.0,
}

// nf4Thresholds[k] separates code k from code k+1: the float literals of
// bitsandbytes' CUDA decision tree dQuantizeNF4 (csrc/kernels.cu), which are
// the exact midpoints of adjacent codes written as decimals and rounded to
// float32. Where a midpoint falls between two float32 values the literal's
// rounding picked one of them (for 0|1, 8|9, 12|13 and 14|15 not the one
// round-half-even would), so the thresholds are copied, not recomputed.
var nf4Thresholds = [15]float32{
	-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
	-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
	0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
	0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
}

// Codebook returns the 16 NF4 values; the index is the 4-bit code.
func Codebook() [16]float32 { return codebook }

// quantizeNF4 returns the NF4 code of a normalised value x: the number of
// thresholds x is strictly above, found with the same four comparisons as
// dQuantizeNF4, so a value equal to a threshold takes the lower code and NaN
// takes code 0 as it does on the GPU.
func quantizeNF4(x float32) uint8 {
	t := &nf4Thresholds
	var q uint8
	if x > t[7] {
		q = 8
	}
	if x > t[q+3] {
		q += 4
	}
	if x > t[q+1] {
		q += 2
	}
	if x > t[q] {
		q++
	}
	return q
}

// dynamicMap is bitsandbytes' create_dynamic_map(signed=True) (max_exponent_bits
// 7, total_bits 8).
var dynamicMap = buildDynamicMap()

// dynamicZeroCode is the index of 0.0 in dynamicMap.
const dynamicZeroCode = 127

// DynamicMap returns bitsandbytes' signed 8-bit dynamic quantization map,
// create_dynamic_map(signed=True): 256 ascending values in [-0.99296875, 1]
// that include 0 and 1. Double quantization stores absmax codes as indices
// into it.
//
// The construction is reproduced in float32 as PyTorch evaluates it: for
// i = 0..6, torch.linspace(0.1, 1, 2^i+1) (start + step*k below the halfway
// point, end - step*(steps-1-k) above it), the means of adjacent points, times
// float32(10^(i-6)), with both signs; then 0 and 1.0; sorted; each operation
// rounded to float32 on its own. PyTorch builds differ in the last bit of
// linspace (vectorised in 1.13, fused multiply-adds under AVX2), so a given
// installation's map can differ from this one in a few ulps of some entries
// (libtorch 1.13 on AVX2: 44 entries, at most 2 ulps). bitsandbytes stores
// the map it used next to the codes; a loader of its checkpoints must use
// that one.
func DynamicMap() [256]float32 { return dynamicMap }

func buildDynamicMap() [256]float32 {
	const maxExponentBits = 7
	// 10^(i-6) as Python computes it (a correctly rounded double), then
	// converted to float32 by torch's scalar multiply.
	scales := [maxExponentBits]float64{1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1}
	data := make([]float32, 0, 256)
	for i := 0; i < maxExponentBits; i++ {
		// signed: fraction_items = 2^(i + non_sign_bits - max_exponent_bits) + 1
		// with non_sign_bits = 7; additional_items is 0 for the signed map.
		points := linspace32(0.1, 1, 1<<i+1)
		s := float32(scales[i])
		for k := 0; k+1 < len(points); k++ {
			mean := (points[k] + points[k+1]) / 2
			v := s * mean
			data = append(data, v, -v)
		}
	}
	data = append(data, 0, 1)
	slices.Sort(data)
	var m [256]float32
	copy(m[:], data)
	return m
}

// linspace32 evaluates torch.linspace(start, end, steps) in float32 with the
// formula of PyTorch's scalar CPU kernel.
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	step := (end - start) / float32(steps-1)
	halfway := steps / 2
	for k := range out {
		if k < halfway {
			out[k] = start + float32(step*float32(k))
		} else {
			out[k] = end - float32(step*float32(steps-k-1))
		}
	}
	return out
}

// quantizeDynamic returns the index of the dynamic-map value nearest to x the
// way the CUDA kernel dQuantize (STOCHASTIC=0) finds it: a seven-step binary
// search over the sorted map, then a comparison with the float32 midpoint of
// the two neighbours. A value exactly on a midpoint goes to the even index.
func quantizeDynamic(x float32) uint8 {
	m := &dynamicMap
	pivot, upperPivot, lowerPivot := 127, 255, 0
	lower, upper := float32(-1), float32(1)
	val := m[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > val {
			lowerPivot, lower = pivot, val
			pivot += i
		} else {
			upperPivot, upper = pivot, val
			pivot -= i
		}
		val = m[pivot]
	}
	if upperPivot == 255 {
		upper = m[upperPivot]
	}
	if lowerPivot == 0 {
		lower = m[lowerPivot]
	}
	if x > val {
		if mid := float32(upper+val) * 0.5; x > mid {
			return uint8(upperPivot)
		}
		return uint8(pivot)
	}
	if mid := float32(lower+val) * 0.5; x < mid {
		return uint8(lowerPivot)
	}
	return uint8(pivot)
}
