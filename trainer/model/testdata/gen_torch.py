#!/usr/bin/python3
"""Writes loraft's PyTorch test data: a tiny random BERT for sequence
classification saved by real PyTorch under HF key names, and the logits of a
plain torch forward pass on fixed inputs.

Run with Debian's python3-torch (1.13): /usr/bin/python3 gen_torch.py
from trainer/model/testdata. CI has no torch: the outputs are committed.

Outputs (in ./torchbert/):
  config.json, vocab.txt, tokenizer_config.json  an HF model directory
  pytorch_model.bin            torch.save zip format, float32, with a
                               position_ids buffer (int64) and a cls. head
                               as old HF checkpoints carry
  legacy.bin                   the same state dict in torch's pre-1.6
                               (non-zip) format
  half.bin                     the same tensors as float16
  sharded/                     the same state dict in two shards with
                               pytorch_model.bin.index.json
  logits.json                  input ids, mask and the float32 logits
and ../../../trainer/model/torchbin/testdata/:
  evil_global.bin              a zip whose pickle calls os.system (GLOBAL)
  evil_stack.bin               one whose pickle calls builtins.exec
                               (STACK_GLOBAL, protocol 4)
  small.bin, small_legacy.bin  four small tensors (a transposed F32 view,
                               F16, BF16, I64): exact values and fuzz seeds
  shared.bin                   three tensors on one storage (tied, and a
                               view at an offset)
Neither hostile file must ever run: loraft refuses both before any call.
"""
import collections
import json
import math
import os
import pickle

import torch

torch.manual_seed(16)
cfg = dict(
    architectures=["BertForSequenceClassification"],
    model_type="bert",
    _name_or_path="loraft/torch-bert-micro",
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=40, type_vocab_size=2,
    layer_norm_eps=1e-12, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, classifier_dropout=None,
    initializer_range=0.02, pad_token_id=0,
    id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2},
)
H, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
NH = cfg["num_attention_heads"]
LABELS = 3

sd = collections.OrderedDict()


def rnd(*shape, std=0.3):
    return torch.randn(*shape, dtype=torch.float32) * std


sd["bert.embeddings.position_ids"] = torch.arange(cfg["max_position_embeddings"]).unsqueeze(0)
sd["bert.embeddings.word_embeddings.weight"] = rnd(cfg["vocab_size"], H)
sd["bert.embeddings.position_embeddings.weight"] = rnd(cfg["max_position_embeddings"], H)
sd["bert.embeddings.token_type_embeddings.weight"] = rnd(cfg["type_vocab_size"], H)
sd["bert.embeddings.LayerNorm.weight"] = 1 + rnd(H, std=0.1)
sd["bert.embeddings.LayerNorm.bias"] = rnd(H, std=0.1)
for i in range(L):
    p = f"bert.encoder.layer.{i}."
    for name, o, n in [("attention.self.query", H, H), ("attention.self.key", H, H),
                       ("attention.self.value", H, H), ("attention.output.dense", H, H),
                       ("intermediate.dense", I, H), ("output.dense", H, I)]:
        sd[p + name + ".weight"] = rnd(o, n, std=1 / math.sqrt(n))
        sd[p + name + ".bias"] = rnd(o, std=0.1)
    for ln in ["attention.output.LayerNorm", "output.LayerNorm"]:
        sd[p + ln + ".weight"] = 1 + rnd(H, std=0.1)
        sd[p + ln + ".bias"] = rnd(H, std=0.1)
sd["bert.pooler.dense.weight"] = rnd(H, H, std=1 / math.sqrt(H))
sd["bert.pooler.dense.bias"] = rnd(H, std=0.1)
sd["cls.predictions.bias"] = rnd(cfg["vocab_size"])
sd["classifier.weight"] = rnd(LABELS, H)
sd["classifier.bias"] = rnd(LABELS, std=0.1)
# A transposed (non-contiguous) view is saved with its strides: the reader
# must honour them. Keep a contiguous copy of what it must read back.
sd["bert.pooler.dense.weight"] = sd["bert.pooler.dense.weight"].t().contiguous().t()
assert not sd["bert.pooler.dense.weight"].is_contiguous()


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (H,), w, b, cfg["layer_norm_eps"])


def forward(ids, mask):
    B, T = ids.shape
    x = (sd["bert.embeddings.word_embeddings.weight"][ids]
         + sd["bert.embeddings.position_embeddings.weight"][torch.arange(T)]
         + sd["bert.embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, sd["bert.embeddings.LayerNorm.weight"], sd["bert.embeddings.LayerNorm.bias"])
    bias = (1.0 - mask.float())[:, None, None, :] * torch.finfo(torch.float32).min
    hd = H // NH

    def lin(name, v):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    for i in range(L):
        p = f"bert.encoder.layer.{i}."

        def heads(v):
            return v.view(B, T, NH, hd).permute(0, 2, 1, 3)

        q = heads(lin(p + "attention.self.query", x))
        k = heads(lin(p + "attention.self.key", x))
        v = heads(lin(p + "attention.self.value", x))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, H)
        a = lin(p + "attention.output.dense", ctx)
        h1 = layer_norm(a + x, sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"])
        f = torch.nn.functional.gelu(lin(p + "intermediate.dense", h1))  # erf GELU, HF "gelu"
        x = layer_norm(lin(p + "output.dense", f) + h1, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"])
    pooled = torch.tanh(lin("bert.pooler.dense", x[:, 0]))
    return lin("classifier", pooled)


ids = torch.tensor([[2, 17, 45, 63, 3, 0, 0], [2, 98, 5, 11, 70, 31, 3], [2, 7, 3, 0, 0, 0, 0]])
mask = (ids != 0).long()
with torch.no_grad():
    logits = forward(ids, mask)

os.makedirs("torchbert/sharded", exist_ok=True)
torch.save(sd, "torchbert/pytorch_model.bin")
torch.save(sd, "torchbert/legacy.bin", _use_new_zipfile_serialization=False)
torch.save(collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items()),
           "torchbert/half.bin")
keys = list(sd)
shards = {"pytorch_model-00001-of-00002.bin": keys[:len(keys) // 2],
          "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
weight_map = {}
for fname, ks in shards.items():
    torch.save(collections.OrderedDict((k, sd[k]) for k in ks), "torchbert/sharded/" + fname)
    weight_map.update({k: fname for k in ks})
with open("torchbert/sharded/pytorch_model.bin.index.json", "w") as f:
    json.dump({"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
               "weight_map": weight_map}, f, indent=2)
with open("torchbert/config.json", "w") as f:
    json.dump(cfg, f, indent=2)
with open("torchbert/tokenizer_config.json", "w") as f:
    json.dump({"do_lower_case": False, "model_max_length": 40, "tokenizer_class": "BertTokenizer"}, f, indent=2)
specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
words = ["Hello", "hello", "World", "world", "the", "##s", "##ing", "a", "I", "i"]
with open("torchbert/vocab.txt", "w") as f:
    toks = specials + words + [f"w{n}" for n in range(cfg["vocab_size"] - len(specials) - len(words))]
    f.write("\n".join(toks) + "\n")
with open("torchbert/logits.json", "w") as f:
    json.dump({"torch": torch.__version__, "ids": ids.tolist(), "mask": mask.tolist(),
               "logits": logits.tolist()}, f, indent=1)


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


evil_dir = "../torchbin/testdata"
os.makedirs(evil_dir, exist_ok=True)
marker = "/tmp/loraft-torchbin-pwned"
torch.save({"x": Evil(os.system, "touch " + marker)}, evil_dir + "/evil_global.bin")
small = collections.OrderedDict(w=torch.arange(6, dtype=torch.float32).view(2, 3).t(), h=torch.tensor([1.5, -2.0, 65504.0]).half(),
                                 b=torch.tensor([0.5, 3.0]).bfloat16(), i=torch.tensor([7, 8]))
torch.save(small, evil_dir + "/small.bin")
torch.save(small, evil_dir + "/small_legacy.bin", _use_new_zipfile_serialization=False)
# Tied weights: two entries on one storage, and a view at an offset into it.
base = torch.arange(6, dtype=torch.float32)
torch.save(collections.OrderedDict(a=base, b=base, c=base[2:].view(2, 2)), evil_dir + "/shared.bin")
import builtins  # noqa: E402
torch.save({"x": Evil(builtins.exec, f"open({marker!r}, 'w').close()")}, evil_dir + "/evil_stack.bin",
           pickle_protocol=4)
print("logits", logits)
