"""Held-out exact-answer accuracy: greedy generation on eval records, answers compared lower-cased.

An eval file is a JSON list of ``{"id", "image", "prompt" (or "question"), "answer", "kind"}`` records
(``imp synth`` writes ``eval.json`` in this form). Each question is asked with the model's own template
(``template.question_prompt``), answered greedily until the template's stop token and compared with the
reference after ``strip().lower()``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from impvlm.errors import DataError
from impvlm.image_processing import ImageProcessor
from impvlm.templates import get_template

log = logging.getLogger(__name__)


def normalize_answer(text: str) -> str:
    return text.strip().lower()


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    image_root: str | Path,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    progress: bool = False,
) -> list[str]:
    """Greedy answers to ``records`` (left-padded batches; images spliced at ``<image>``)."""
    from tqdm import tqdm

    config = model.config
    template = get_template(config.template)
    processor = ImageProcessor.from_config(config)
    stop_id = tokenizer.convert_tokens_to_ids(template.stop_str)
    pad_id = config.pad_token_id if config.pad_token_id is not None else stop_id
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    answers: list[str] = [""] * len(records)
    # one modality per batch: image questions, then text-only ones
    groups = [[i for i, r in enumerate(records) if bool(r.get("image")) == flag] for flag in (True, False)]
    batches = [g[s : s + batch_size] for g in groups for s in range(0, len(g), batch_size)]
    for batch in tqdm(batches, desc="eval", unit="batch", disable=not progress or None):
        with_image = bool(records[batch[0]].get("image"))
        prompts = [template.question_prompt(_question(records[i]), with_image=with_image) for i in batch]
        ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        longest = max(map(len, ids))
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for b, seq in enumerate(ids):
            input_ids[b, longest - len(seq) :] = torch.tensor(seq)
            mask[b, longest - len(seq) :] = 1
        kwargs: dict[str, Any] = {}
        if with_image:
            pixels = processor.batch([Path(image_root) / records[i]["image"] for i in batch])
            kwargs["pixel_values"] = torch.from_numpy(pixels).to(device, dtype)
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_id,
            pad_token_id=pad_id,
            **kwargs,
        )
        if not with_image:  # without images generate() returns the prompt too
            out = out[:, longest:]
        for i, seq in zip(batch, out.tolist()):
            answers[i] = tokenizer.decode(seq, skip_special_tokens=True)
    model.train(was_training)
    return answers


def score(records: Sequence[dict[str, Any]], answers: Sequence[str]) -> dict[str, Any]:
    """``{"overall": acc, "per_kind": {kind: acc}, "count": {kind: n}, "n": N}`` (accuracies in [0, 1])."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for record, answer in zip(records, answers):
        hits[str(record.get("kind", "all"))].append(
            normalize_answer(answer) == normalize_answer(str(record["answer"]))
        )
    every = [h for kind in hits.values() for h in kind]
    return {
        "overall": sum(every) / max(1, len(every)),
        "per_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
        "count": {k: len(v) for k, v in sorted(hits.items())},
        "n": len(every),
    }


def read_eval_records(eval_json: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    from impvlm.train.data import read_records

    records = read_records(eval_json)
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "answer" not in r or not ("prompt" in r or "question" in r):
            raise DataError(f"{eval_json}: record #{i} needs 'answer' and 'prompt' (or 'question')")
    return records[:limit] if limit else records


def evaluate_model(
    model: Any,
    tokenizer: Any,
    eval_json: str | Path,
    image_root: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Exact-answer accuracy of an in-memory model (see :func:`exact_accuracy`)."""
    records = read_eval_records(eval_json, limit)
    root = Path(image_root) if image_root is not None else Path(eval_json).parent
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, records, root, batch_size, progress=progress)
    result = score(records, answers)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def exact_accuracy(
    checkpoint_dir: str | Path,
    eval_json: str | Path,
    image_root: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Held-out exact-answer accuracy of a checkpoint folder (impvlm or upstream layout, or a LoRA stage
    output, merged in memory).

    Returns ``{"overall", "per_kind", "count", "n", "seconds"}``; accuracies are fractions.
    ``image_root`` defaults to the eval file's folder; ``limit`` keeps the first N records.
    """
    from impvlm.train.tokens import load_training_tokenizer
    from impvlm.train.weights import load_start_model

    model, tokenizer_dir = load_start_model(checkpoint_dir)
    tokenizer = load_training_tokenizer(tokenizer_dir, model.config)
    return evaluate_model(model, tokenizer, eval_json, image_root, limit, batch_size, progress)


def format_accuracy(result: dict[str, Any]) -> str:
    """``exact-answer accuracy 93.1% (n=2290): colour 98.0% (500), ...``"""
    kinds = ", ".join(f"{k} {100 * v:.1f}% ({result['count'][k]})" for k, v in result["per_kind"].items())
    return f"exact-answer accuracy {100 * result['overall']:.1f}% (n={result['n']}): {kinds}"


def _question(record: dict[str, Any]) -> str:
    return str(record.get("prompt") or record["question"])
