#!/usr/bin/env python3
"""PyTorch eager reference for one loraft QLoRA training step.

What it mirrors in loraft
-------------------------
The step that ``trainer.Train`` runs for every batch (``trainer/train.go``
``trainStep``/``microStep``) on the model of ``trainer/model/bert.go``:

* BertForSequenceClassification written by hand with torch ops, as
  ``model.Forward`` does it: word + position + token-type-0 embeddings,
  LayerNorm(eps 1e-12), dropout; per layer query/key/value Linears,
  attention as matmul + scale + additive mask bias + softmax + dropout (no
  ``scaled_dot_product_attention``: Debian's libtorch 1.13 lacks it in
  gotch), attention output dense + dropout + residual LayerNorm, exact (erf)
  GELU intermediate, output dense + dropout + residual LayerNorm; tanh pooler
  on token 0, dropout, classifier to 7 labels. Dropout 0.1 (hidden and
  attention), train mode.
* Frozen base (``--base nf4``): every encoder Linear weight and the pooler
  dense are stored NF4 with double quantization as bitsandbytes'
  ``quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True)``
  stores them (``trainer/nf4``): blocks of 64 with an fp32 absmax, nearest
  NF4 code (bitsandbytes' decision-tree thresholds, ties to the lower code),
  two codes per byte (high nibble first); the absmax vector minus its mean is
  quantized in blocks of 256 to the signed 8-bit dynamic map
  (``create_dynamic_map(signed=True)``). Every forward pass dequantizes every
  weight on the fly (nibbles unpacked with integer shift/mask, codebook
  lookup, times the absmax that is itself rebuilt from its codes) and then
  runs the matmul. ``--base fp32`` keeps the weights dense float32. (loraft's
  ``nf4.Weight.Dequantize`` decodes both nibbles of a byte with one lookup in
  a 256-entry table of code pairs; the values are the same, the op sequence
  differs: this reference does the plain shift/mask + codebook index.)
* ``--dtype bf16``: like ``lora.Linear.Forward`` the input, the dequantized
  weight, the bias and the LoRA factors are cast to bfloat16 for the
  products and the Linear's output is cast back to float32; embeddings,
  LayerNorm, attention scores, softmax, pooler tanh, classifier and loss stay
  float32.
* LoRA (HF PEFT semantics, ``trainer/lora``) on query and value: rank r,
  scaling alpha/r, A kaiming-uniform (a=sqrt(5)), B zeros, dropout 0.05 on the
  LoRA input. LoRA A/B and the classifier are the only trainable tensors.
* Step: per-step ``torch.manual_seed``, grads zeroed in place, batch upload,
  forward, mean cross-entropy, backward, global-norm gradient clipping at 1.0,
  AdamW (lr 2e-4, betas 0.9/0.999, eps 1e-8, weight decay 0), and the loss
  read back to the host (a device sync, as loraft reads it every step).

Weights are random N(0, 0.02) (biases 0, LayerNorm 1/0) from a fixed seed;
inputs are random token ids in [1000, 30000) with [CLS]=101 first and
[SEP]=102 last, a full attention mask and random labels. ``--warmup`` steps
run untimed first; each of ``--steps`` steps is timed on its own.

How to run
----------
With Debian's system python and apt packages only (no pip)::

    sudo apt-get install -y --no-install-recommends python3-torch python3-numpy
    /usr/bin/python3 bench/reference/qlora_step.py --config tiny --steps 20 --json
    /usr/bin/python3 bench/reference/qlora_step.py --config base --steps 3 --warmup 1 --json
    /usr/bin/python3 bench/reference/qlora_step.py --selftest   # NF4 packing checks

Debian's python3-torch is PyTorch 1.13, the libtorch loraft links on these
machines. ``--threads`` defaults to every core available to the process
(libtorch 1.13 otherwise picks 1 thread on these VMs). On a GPU machine with a
CUDA PyTorch, ``--device cuda`` runs the same step there (untested so far).

On cores shared with other busy processes, OpenMP's default active
spin-waiting makes 2-thread runs erratic and several times slower; run both
this script and loraft with the same ``OMP_WAIT_POLICY`` (the JSON records
it), e.g. ``OMP_WAIT_POLICY=PASSIVE``.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit("qlora_step.py: cannot import torch (%s); install Debian's python3-torch "
             "(apt-get install -y --no-install-recommends python3-torch) and run with /usr/bin/python3" % e)

NUM_LABELS = 7
CLS_ID, SEP_ID = 101, 102
TOKEN_LO, TOKEN_HI = 1000, 30000

CONFIGS = {
    # google/bert_uncased_L-2_H-128_A-2
    "tiny": dict(hidden=128, layers=2, heads=2, intermediate=512),
    # bert-base-uncased
    "base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
}
VOCAB, MAX_POSITIONS, TYPE_VOCAB = 30522, 512, 2
LAYER_NORM_EPS = 1e-12
HIDDEN_DROPOUT = ATTENTION_DROPOUT = CLASSIFIER_DROPOUT = 0.1
LORA_DROPOUT = 0.05
LORA_TARGETS = ("query", "value")
INIT_STD = 0.02
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 2e-4, 0.0, 1.0

# ---------------------------------------------------------------------------
# NF4 with double quantization, as bitsandbytes does it
# ---------------------------------------------------------------------------

NF4_BLOCK = 64
ABSMAX_BLOCK = 256
NF4_ZERO_CODE = 7
DYN_ZERO_CODE = 127

# bitsandbytes functional.py get_4bit_type("nf4"); index = 4-bit code.
NF4_CODEBOOK = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
# Decision thresholds between code k and k+1: the float literals of
# bitsandbytes' dQuantizeNF4 (csrc/kernels.cu), i.e. the midpoints of
# adjacent codes as bitsandbytes rounds them. A value equal to a threshold
# takes the lower code (the kernel's comparisons are strict ">").
NF4_THRESHOLDS = [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
]


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes functional.create_dynamic_map, float32 like bitsandbytes."""
    data = []
    non_sign_bits = total_bits - 1  # bitsandbytes: total_bits - (1 if signed else 1)
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        if signed:
            fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        else:
            fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits, len(data)
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def _block_absmax_and_normalised(x, block):
    """Split flat float32 x into blocks (zero-padded), return (absmax [nb],
    normalised [nb, block]) where normalised = x * (1/absmax) in float32 as
    the CUDA kernels compute it; an all-zero block normalises to 0, a
    subnormal absmax (1/absmax = inf) divides instead."""
    n = x.numel()
    nb = (n + block - 1) // block
    padded = torch.zeros(nb * block, dtype=torch.float32)
    padded[:n] = x
    blocks = padded.view(nb, block)
    absmax = blocks.abs().amax(dim=1)
    am = absmax.unsqueeze(1)
    rcp = 1.0 / am
    normalised = torch.where(torch.isinf(rcp), blocks / am, blocks * rcp)
    normalised = torch.where(am == 0, torch.zeros_like(normalised), normalised)
    return absmax, normalised


def nf4_codes(normalised):
    """NF4 code of each normalised value: the number of thresholds it is
    strictly above (bucketize right=False), so ties go to the lower code."""
    thr = torch.tensor(NF4_THRESHOLDS, dtype=torch.float32)
    return torch.bucketize(normalised, thr, right=False).to(torch.uint8)


def dynamic_codes(x, dyn_map):
    """Index of the dynamic-map value nearest to x, found as bitsandbytes'
    dQuantize (STOCHASTIC=0) does it: a 7-step binary search over the sorted
    map, then a comparison with the float32 midpoint of the neighbours."""
    m = dyn_map
    pivot = torch.full_like(x, 127, dtype=torch.long)
    upper_pivot = torch.full_like(pivot, 255)
    lower_pivot = torch.zeros_like(pivot)
    lower = torch.full_like(x, -1.0)
    upper = torch.full_like(x, 1.0)
    val = m[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lower_pivot = torch.where(gt, pivot, lower_pivot)
        lower = torch.where(gt, val, lower)
        upper_pivot = torch.where(gt, upper_pivot, pivot)
        upper = torch.where(gt, upper, val)
        pivot = torch.where(gt, pivot + i, pivot - i)
        val = m[pivot]
        i >>= 1
    upper = torch.where(upper_pivot == 255, m[255].expand_as(upper), upper)
    lower = torch.where(lower_pivot == 0, m[0].expand_as(lower), lower)
    above = torch.where(x > (upper + val) * 0.5, upper_pivot, pivot)
    below = torch.where(x < (lower + val) * 0.5, lower_pivot, pivot)
    return torch.where(x > val, above, below).to(torch.uint8)


class NF4Weight:
    """An [out, in] weight held as NF4 codes + double-quantized absmax on a
    device, dequantized on every call (per layer, per step)."""

    def __init__(self, w, device, dyn_map):
        w = w.detach().to("cpu", torch.float32).contiguous()
        self.shape = tuple(w.shape)
        flat = w.view(-1)
        self.n = flat.numel()
        self.n_blocks = (self.n + NF4_BLOCK - 1) // NF4_BLOCK

        absmax, normalised = _block_absmax_and_normalised(flat, NF4_BLOCK)
        codes = nf4_codes(normalised).view(-1)  # padding is 0 -> code 7
        codes[self.n:] = NF4_ZERO_CODE
        packed = (codes[0::2] << 4) | codes[1::2]  # first element in the high nibble

        # Double quantization of the absmax vector.
        offset = torch.tensor(float(absmax.double().mean()), dtype=torch.float32)
        scales, centred = _block_absmax_and_normalised(absmax - offset, ABSMAX_BLOCK)
        acodes = dynamic_codes(centred.view(-1), dyn_map).view(-1)
        acodes[self.n_blocks:] = DYN_ZERO_CODE

        self.n_scales = scales.numel()
        # Stored state, as bitsandbytes keeps it (unpadded sizes).
        self.stored_bytes = (self.n + 1) // 2 + self.n_blocks + 4 * self.n_scales + 4
        # Device tensors (padded to whole blocks for the views below).
        self.packed = packed.to(device)                               # uint8 [nBlocks*32]
        self.absmax_codes = acodes.to(device)                         # uint8 [nScales*256]
        self.scales = scales.view(-1, 1).to(device)                   # fp32 [nScales, 1]
        self.offset = offset.to(device)                               # fp32 []
        self.dyn_map = dyn_map.to(device)                             # fp32 [256]
        self.codebook = torch.tensor(NF4_CODEBOOK, dtype=torch.float32, device=device)

    def absmax(self):
        a = self.dyn_map[self.absmax_codes.long()].view(-1, ABSMAX_BLOCK) * self.scales + self.offset
        return a.view(-1)[: self.n_blocks].view(self.n_blocks, 1)

    def weight(self, dtype):
        with torch.no_grad():
            hi = self.packed >> 4
            lo = self.packed & 0xF
            codes = torch.stack((hi, lo), dim=1).view(-1).long()
            vals = self.codebook[codes].view(self.n_blocks, NF4_BLOCK) * self.absmax()
            vals = vals.view(-1)
            if vals.numel() != self.n:
                vals = vals[: self.n]
            if dtype != torch.float32:
                vals = vals.to(dtype)
            return vals.view(self.shape)


class DenseWeight:
    def __init__(self, w, device):
        self.t = w.detach().to(device, torch.float32).contiguous()
        self.shape = tuple(w.shape)
        self.stored_bytes = 4 * self.t.numel()

    def weight(self, dtype):
        return self.t if dtype == torch.float32 else self.t.to(dtype)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class Linear:
    """lora.Linear: frozen base (+ bias) and an optional LoRA adapter."""

    def __init__(self, name, base, bias, rank=0, alpha=0.0, device="cpu"):
        self.name, self.base, self.bias = name, base, bias
        self.A = self.B = None
        if rank:
            out_f, in_f = base.shape
            A = torch.empty(rank, in_f, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            self.A = A.to(device).requires_grad_(True)
            self.B = torch.zeros(out_f, rank, dtype=torch.float32, device=device).requires_grad_(True)
            self.scaling = alpha / rank

    def params(self):
        return [] if self.A is None else [self.A, self.B]

    def forward(self, x, dtype, train):
        w = self.base.weight(dtype)
        b = self.bias if dtype == torch.float32 else self.bias.to(dtype)
        y = F.linear(x.to(dtype), w, b)
        if self.A is not None:
            xd = F.dropout(x, LORA_DROPOUT, train) if LORA_DROPOUT > 0 else x
            a = F.linear(xd.to(dtype), self.A.to(dtype))
            y = y + F.linear(a, self.B.to(dtype)) * self.scaling
        return y.to(x.dtype)


class Bert:
    def __init__(self, cfg, base, rank, alpha, device, seed=0):
        g = torch.Generator().manual_seed(seed)
        H, I = cfg["hidden"], cfg["intermediate"]
        self.H, self.nh = H, cfg["heads"]
        self.dyn_map = create_dynamic_map(signed=True)

        def normal(*shape):
            return torch.empty(*shape).normal_(0.0, INIT_STD, generator=g)

        def dense(t):
            return t.to(device)

        self.word = dense(normal(VOCAB, H))
        self.pos = dense(normal(MAX_POSITIONS, H))
        self.typ0 = dense(normal(TYPE_VOCAB, H)[0])  # single-segment inputs: type 0 only
        self.emb_ln = (dense(torch.ones(H)), dense(torch.zeros(H)))
        self.base_bytes = 0
        self.base_params = 0
        self.linears = []

        def linear(name, out_f, in_f):
            w = normal(out_f, in_f)
            if base == "nf4":
                frozen = NF4Weight(w, device, self.dyn_map)
            else:
                frozen = DenseWeight(w, device)
            self.base_bytes += frozen.stored_bytes
            self.base_params += w.numel()
            r = rank if name.rsplit(".", 1)[-1] in LORA_TARGETS else 0
            lin = Linear(name, frozen, dense(torch.zeros(out_f)), r, alpha, device)
            self.linears.append(lin)
            return lin

        self.layers = []
        for i in range(cfg["layers"]):
            p = "bert.encoder.layer.%d." % i
            self.layers.append(dict(
                q=linear(p + "attention.self.query", H, H),
                k=linear(p + "attention.self.key", H, H),
                v=linear(p + "attention.self.value", H, H),
                ao=linear(p + "attention.output.dense", H, H),
                ln1=(dense(torch.ones(H)), dense(torch.zeros(H))),
                inter=linear(p + "intermediate.dense", I, H),
                out=linear(p + "output.dense", H, I),
                ln2=(dense(torch.ones(H)), dense(torch.zeros(H))),
            ))
        self.pooler = linear("bert.pooler.dense", H, H)
        self.cls_w = normal(NUM_LABELS, H).to(device).requires_grad_(True)
        self.cls_b = torch.zeros(NUM_LABELS, device=device).requires_grad_(True)

    def params(self):
        ps = []
        for lin in self.linears:
            ps += lin.params()
        return ps + [self.cls_w, self.cls_b]

    def forward(self, ids, mask, dtype, train):
        B, L = ids.shape
        H, nh = self.H, self.nh
        hd = H // nh
        pos_ids = torch.arange(L, device=ids.device)
        emb = F.embedding(ids, self.word) + F.embedding(pos_ids, self.pos) + self.typ0
        h = F.dropout(F.layer_norm(emb, (H,), *self.emb_ln, eps=LAYER_NORM_EPS), HIDDEN_DROPOUT, train)
        # Additive mask bias [B, 1, 1, L]: 0 where attended, float32 lowest where masked.
        bias = ((1.0 - mask.to(torch.float32)) * torch.finfo(torch.float32).min).view(B, 1, 1, L)

        def heads(x):  # [B, L, H] -> [B, nh, L, hd]
            return x.view(B, L, nh, hd).permute(0, 2, 1, 3)

        scale = 1.0 / math.sqrt(hd)
        for l in self.layers:
            q = heads(l["q"].forward(h, dtype, train))
            k = heads(l["k"].forward(h, dtype, train))
            v = heads(l["v"].forward(h, dtype, train))
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
            probs = F.dropout(torch.softmax(scores, dim=-1), ATTENTION_DROPOUT, train)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, L, H)
            a = F.dropout(l["ao"].forward(ctx, dtype, train), HIDDEN_DROPOUT, train)
            h1 = F.layer_norm(a + h, (H,), *l["ln1"], eps=LAYER_NORM_EPS)
            i = F.gelu(l["inter"].forward(h1, dtype, train))  # exact (erf) GELU
            o = F.dropout(l["out"].forward(i, dtype, train), HIDDEN_DROPOUT, train)
            h = F.layer_norm(o + h1, (H,), *l["ln2"], eps=LAYER_NORM_EPS)
        pooled = torch.tanh(self.pooler.forward(h[:, 0], dtype, train))
        pooled = F.dropout(pooled, CLASSIFIER_DROPOUT, train)
        return F.linear(pooled, self.cls_w, self.cls_b)


# ---------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------


def make_batches(n, batch, seq, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(TOKEN_LO, TOKEN_HI, (batch, seq), generator=g, dtype=torch.long)
        ids[:, 0] = CLS_ID
        ids[:, -1] = SEP_ID
        mask = torch.ones(batch, seq, dtype=torch.long)
        labels = torch.randint(0, NUM_LABELS, (batch,), generator=g, dtype=torch.long)
        out.append((ids, mask, labels))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, opt, params, batch, device, dtype, step_seed, autocast=False):
    torch.manual_seed(step_seed)
    opt.zero_grad(set_to_none=False)  # loraft zeroes the existing grads in place
    ids, mask, labels = (t.to(device, non_blocking=False) for t in batch)
    # --autocast: the float32 model under torch.autocast(bfloat16), PyTorch's
    # own mixed precision (it picks which ops run in bf16), instead of
    # --dtype bf16's explicit casts around each Linear.
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model.forward(ids, mask, dtype, train=True)
    loss = F.cross_entropy(logits.float(), labels)  # = NLL sum / batch, as loraft (no class weights)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    opt.step()
    return loss.item()


def positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % s)
    if v < 1:
        raise argparse.ArgumentTypeError("%d must be >= 1" % v)
    return v


def non_negative_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % s)
    if v < 0:
        raise argparse.ArgumentTypeError("%d must be >= 0" % v)
    return v


def positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % s)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError("%r must be a finite number > 0" % s)
    return v


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="PyTorch eager reference for loraft's QLoRA training step (samples/s).",
        epilog="Run with Debian's /usr/bin/python3 and python3-torch (PyTorch 1.13).")
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                   help="BERT size: tiny (128/2/2/512) or base (768/12/12/3072); default tiny")
    p.add_argument("--seq", type=positive_int, default=128, help="sequence length (2..512); default 128")
    p.add_argument("--batch", type=positive_int, default=8, help="batch size; default 8")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps; default 10")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps first; default 2")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="compute dtype of the Linear matmuls; default fp32")
    p.add_argument("--base", choices=["nf4", "fp32"], default="nf4",
                   help="storage of the frozen Linear weights; default nf4")
    p.add_argument("--rank", type=positive_int, default=8, help="LoRA rank; default 8")
    p.add_argument("--alpha", type=positive_float, default=16.0, help="LoRA alpha; default 16")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads (default: all cores available, %d)" % available_cores())
    p.add_argument("--seed", type=non_negative_int, default=42, help="seed of weights and data; default 42")
    p.add_argument("--autocast", action="store_true",
                   help="run the float32 model under torch.autocast(dtype=bfloat16) (needs --dtype fp32)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--selftest", action="store_true", help="check the NF4 code against known vectors and exit")
    args = p.parse_args(argv)
    if args.autocast and args.dtype != "fp32":
        p.error("--autocast casts a float32 model itself: use it with --dtype fp32")
    if not 2 <= args.seq <= MAX_POSITIONS:
        p.error("--seq %d: want 2..%d (max_position_embeddings)" % (args.seq, MAX_POSITIONS))
    if args.rank > CONFIGS[args.config]["hidden"]:
        p.error("--rank %d exceeds the hidden size %d" % (args.rank, CONFIGS[args.config]["hidden"]))
    return args


def selftest():
    """Known vectors from loraft's trainer/nf4 tests, plus round-trip bounds."""
    dyn = create_dynamic_map(True)
    assert dyn.numel() == 256 and float(dyn[DYN_ZERO_CODE]) == 0.0 and float(dyn[255]) == 1.0
    assert bool(torch.all(dyn[1:] > dyn[:-1])), "dynamic map not strictly ascending"
    # Known entries (float32 bits, from loraft's trainer/nf4 tests). PyTorch
    # builds differ in the last bit of linspace, so bitsandbytes' map on a
    # given installation may differ from these by one ulp: allow that.
    bits = dyn.view(torch.int32).tolist()
    ulp_diffs = 0
    for k, want in ((0, 0xbf7e3333), (1, 0xbf7a999a), (126, 0xb513a3b7), (128, 0x3513a3b7),
                    (129, 0x365a1a94), (190, 0x3dc9eb85), (254, 0x3f7e3333), (255, 0x3f800000)):
        got = bits[k] & 0xFFFFFFFF
        assert abs(got - want) <= 1, "dynamic map[%d] = %08x, want %08x" % (k, got, want)
        ulp_diffs += got != want

    def q(vals):
        w = NF4Weight(torch.tensor(vals, dtype=torch.float32).view(1, -1), "cpu", dyn)
        return bytes(w.packed[: (w.n + 1) // 2].tolist())

    assert q([-1, 1, 0, 0.5]) == bytes([0x0F, 0x7C]), q([-1, 1, 0, 0.5])
    assert q([0.25, -1, 1]) == bytes([0xA0, 0xF7]), q([0.25, -1, 1])
    assert q([0.3]) == bytes([0xF7])
    # A value exactly on a threshold takes the lower code; just above, the upper.
    thr = torch.tensor(NF4_THRESHOLDS, dtype=torch.float32)
    assert nf4_codes(thr).tolist() == list(range(15))
    assert nf4_codes(torch.nextafter(thr, torch.tensor(2.0))).tolist() == list(range(1, 16))
    # Short last block with its own absmax; all-zero block stays zero.
    x = torch.cat([torch.linspace(-4, 4, 64), torch.zeros(64), torch.tensor([0.5, -0.4, 0.12])])
    w = NF4Weight(x.view(1, -1), "cpu", dyn)
    d = w.weight(torch.float32).view(-1)
    assert torch.all(d[64:128] == 0)
    assert w.packed[(x.numel() - 1) // 2].item() & 0xF == NF4_ZERO_CODE  # odd count: pad nibble is 7
    # Sizes and round-trip error of a bert-base 768x768 weight.
    g = torch.Generator().manual_seed(0)
    t = torch.empty(768, 768).normal_(0, 0.02, generator=g)
    w = NF4Weight(t, "cpu", dyn)
    assert w.stored_bytes == 294912 + 9216 + 4 * 36 + 4, w.stored_bytes
    absmax_true = t.view(-1, 64).abs().amax(1, keepdim=True)
    err = (w.weight(torch.float32) - t).abs().view(-1, 64) / absmax_true
    # Bound per block: half the largest NF4 gap (codes 0|1, 0.1519) of the
    # block absmax, plus the DQ error of the absmax itself (at most half the
    # largest dynamic-map gap, 0.0070313, times its block's scale).
    dq_err = 0.0070313 * w.scales.view(-1).repeat_interleave(ABSMAX_BLOCK)[: w.n_blocks].view(-1, 1)
    bound = 0.1519036 + dq_err / absmax_true + 1e-6
    assert bool(torch.all(err <= bound)), float((err - bound).max())
    dq_abs = (w.absmax() - absmax_true).abs()
    assert bool(torch.all(dq_abs <= dq_err + 1e-9)), float((dq_abs - dq_err).max())
    bf = w.weight(torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and torch.equal(bf, w.weight(torch.float32).to(torch.bfloat16))
    return {"selftest": "ok", "dynamic_map_known_entries_off_by_one_ulp": ulp_diffs,
            "max_rel_err_768x768": float(err.max()),
            "bits_per_param_768x768": w.stored_bytes * 8 / t.numel()}


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    if args.selftest:
        print(json.dumps(selftest()))
        return 0

    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("qlora_step.py: --device cuda but this PyTorch (%s) sees no CUDA device" % torch.__version__)
        device = torch.device("cuda")
        torch.cuda.reset_peak_memory_stats(device)
    else:
        device = torch.device("cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    cfg = CONFIGS[args.config]

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # LoRA A (kaiming_uniform_ uses the global generator)
    model = Bert(cfg, args.base, args.rank, args.alpha, device, seed=args.seed)
    params = model.params()
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY)
    build_s = time.perf_counter() - t0
    batches = make_batches(args.warmup + args.steps, args.batch, args.seq, args.seed + 1)

    losses, times = [], []
    for s, batch in enumerate(batches):
        sync(device)
        t = time.perf_counter()
        losses.append(train_step(model, opt, params, batch, device, dtype, args.seed * 1000003 + s, args.autocast))
        sync(device)
        if s >= args.warmup:
            times.append(time.perf_counter() - t)
    if not all(math.isfinite(l) for l in losses):
        sys.exit("qlora_step.py: non-finite loss %s" % losses)

    step_mean = statistics.fmean(times)
    res = {
        "impl": "torch",
        "torch_version": torch.__version__,
        "device": str(device) if device.type == "cpu" else "cuda:" + torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "base": args.base,
        "config": args.config,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "rank": args.rank,
        "alpha": args.alpha,
        "step_s": times,
        "step_s_mean": step_mean,
        "step_s_p50": statistics.median(times),
        "step_s_min": min(times),
        "samples_per_s": args.batch / step_mean,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": sum(p.numel() for p in params),
        "base_params": model.base_params,
        "base_bytes": model.base_bytes,
        "bits_per_param": model.base_bytes * 8 / model.base_params,
        "build_s": build_s,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    if device.type == "cuda":
        res["cuda_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    if args.json:
        print(json.dumps(res))
    else:
        w = max(len(k) for k in res)
        for k, v in res.items():
            print("%-*s  %s" % (w, k, ("%.6g" % v) if isinstance(v, float) else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
