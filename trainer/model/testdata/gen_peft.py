#!/usr/bin/python3
"""Writes a PEFT LoRA adapter for ./torchbert and the logits PEFT's
semantics give with it, computed here in plain torch: the stand-in for
deploy/hf-golden.py's peft/ until a machine with the peft package has made
the real one (trainer/model/hub/testdata/README.md).

Run with Debian's python3-torch (1.13) from trainer/model/testdata, after
gen_torch.py: /usr/bin/python3 gen_peft.py. CI has no torch: the outputs
are committed.

What PEFT does with an adapter directory, written out (peft/tuners/lora):
  - adapter_model.safetensors keys are the PeftModel's state-dict keys with
    the adapter name dropped: base_model.model.<module>.lora_A.weight
    ([r, in]) and .lora_B.weight ([out, r]) for every target module, and
    base_model.model.classifier.weight/.bias for modules_to_save (saved from
    classifier.modules_to_save.default, "modules_to_save." and ".default"
    removed);
  - a target module's forward is base(x) + (x @ A.T @ B.T) * scaling, with
    scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), dropout
    off in eval;
  - a target_modules entry matches a module whose dotted name equals it or
    ends with "." + it.

Outputs (in ./torchbert-peft/):
  adapter_config.json        LoraConfig: r 4, lora_alpha 8, targets query,
                             value and intermediate.dense (non-square),
                             modules_to_save classifier
  adapter_model.safetensors  float32, random non-zero A and B, a new
                             classifier
  logits.json                torchbert/logits.json's ids and mask, and the
                             float32 logits of the adapted model
"""
import json
import math
import os
import struct

import torch

torch.manual_seed(17)
with open("torchbert/config.json") as f:
    cfg = json.load(f)
sd = torch.load("torchbert/pytorch_model.bin")
ref = json.load(open("torchbert/logits.json"))
H, L, NH = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
LABELS = len(cfg["id2label"])
R, ALPHA = 4, 8.0
TARGETS = ["query", "value", "intermediate.dense"]
SCALING = ALPHA / R


def targeted(module):
    return any(module == t or module.endswith("." + t) for t in TARGETS)


adapter = {}  # PEFT's saved keys, without base_model.model.
for key in sd:
    module, _, leaf = key.rpartition(".")
    if leaf != "weight" or not targeted(module):
        continue
    out_f, in_f = sd[key].shape
    adapter[module + ".lora_A.weight"] = torch.randn(R, in_f) / math.sqrt(in_f)
    adapter[module + ".lora_B.weight"] = torch.randn(out_f, R) * 0.2
assert len(adapter) == 2 * 3 * L, sorted(adapter)
adapter["classifier.weight"] = torch.randn(LABELS, H) * 0.3
adapter["classifier.bias"] = torch.randn(LABELS) * 0.1


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (H,), w, b, cfg["layer_norm_eps"])


def lin(name, v):
    w = adapter.get(name + ".weight", sd.get(name + ".weight"))
    b = adapter.get(name + ".bias", sd.get(name + ".bias"))
    y = v @ w.T + b
    if name + ".lora_A.weight" in adapter:
        y = y + (v @ adapter[name + ".lora_A.weight"].T @ adapter[name + ".lora_B.weight"].T) * SCALING
    return y


def forward(ids, mask):
    B, T = ids.shape
    x = (sd["bert.embeddings.word_embeddings.weight"][ids]
         + sd["bert.embeddings.position_embeddings.weight"][torch.arange(T)]
         + sd["bert.embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, sd["bert.embeddings.LayerNorm.weight"], sd["bert.embeddings.LayerNorm.bias"])
    bias = (1.0 - mask.float())[:, None, None, :] * torch.finfo(torch.float32).min
    hd = H // NH

    def heads(v):
        return v.view(B, T, NH, hd).permute(0, 2, 1, 3)

    for i in range(L):
        p = f"bert.encoder.layer.{i}."
        q = heads(lin(p + "attention.self.query", x))
        k = heads(lin(p + "attention.self.key", x))
        v = heads(lin(p + "attention.self.value", x))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, H)
        a = lin(p + "attention.output.dense", ctx)
        h1 = layer_norm(a + x, sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"])
        f = torch.nn.functional.gelu(lin(p + "intermediate.dense", h1))
        x = layer_norm(lin(p + "output.dense", f) + h1, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"])
    pooled = torch.tanh(lin("bert.pooler.dense", x[:, 0]))
    return lin("classifier", pooled)


def save_safetensors(path, tensors):
    """safetensors' layout: u64 LE header length, JSON header, raw C-order data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


ids, mask = torch.tensor(ref["ids"]), torch.tensor(ref["mask"])
with torch.no_grad():
    logits = forward(ids, mask)
    # Without the adapter this forward pass is gen_torch.py's: check it
    # against torchbert/logits.json, and that the adapter moves the logits.
    saved, adapter = adapter, {}
    plain = forward(ids, mask)
    adapter = saved
assert torch.allclose(plain, torch.tensor(ref["logits"]), atol=1e-5), "forward differs from gen_torch.py's"
assert (logits - plain).abs().max() > 0.1, "the adapter barely moves the logits"

os.makedirs("torchbert-peft", exist_ok=True)
save_safetensors("torchbert-peft/adapter_model.safetensors", {"base_model.model." + k: v for k, v in adapter.items()})
with open("torchbert-peft/adapter_config.json", "w") as f:
    json.dump({"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": "loraft/torch-bert-micro",
               "r": R, "lora_alpha": ALPHA, "lora_dropout": 0.1, "target_modules": TARGETS,
               "modules_to_save": ["classifier"], "bias": "none", "use_rslora": False, "fan_in_fan_out": False,
               "init_lora_weights": True, "inference_mode": True}, f, indent=2)
with open("torchbert-peft/logits.json", "w") as f:
    json.dump({"torch": torch.__version__, "peft": "semantics by hand (gen_peft.py)", "ids": ref["ids"],
               "mask": ref["mask"], "logits": logits.tolist()}, f, indent=1)
print("logits", logits)
