"""The audeering dimensional emotion model: a wav2vec2 backbone with a small regression head.

This module imports torch and transformers at import time; :mod:`transcription.enrich.emotion` imports
it only when emotion is actually requested, so prosody works without the ``emotion`` extra.

The checkpoint's head (``classifier.dense``, ``classifier.out_proj``) is not the one of transformers'
stock ``Wav2Vec2ForSequenceClassification`` (``projector`` + ``classifier``), so loading it through the
Auto classes leaves a randomly initialised head and produces plausible-looking noise. The class below
mirrors the checkpoint's layout, and :func:`load_strict` refuses any checkpoint whose weights do not
match it exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model, Wav2Vec2PreTrainedModel

# The checkpoint's documented output order; used when config.id2label carries only generic names.
DEFAULT_ORDER = ("arousal", "dominance", "valence")


class EmotionModelLoadError(RuntimeError):
    """The checkpoint does not load into the regression architecture exactly."""


class RegressionHead(nn.Module):
    """dense -> tanh -> out_proj over the pooled hidden state (dropout is inactive in eval mode)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        x = torch.tanh(self.dense(x))
        x = self.dropout(x)
        return self.out_proj(x)


class Wav2Vec2EmotionRegressor(Wav2Vec2PreTrainedModel):
    """Backbone ``wav2vec2.*`` + head ``classifier.*``; forward returns (batch, num_labels) raw scores."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = RegressionHead(config)
        self.post_init()

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # "group"-normed feature encoders (base models) must not see a mask: they were trained on padded
        # batches without one. "layer"-normed ones (large-robust, the audeering model) need it.
        use_mask = attention_mask if self.config.feat_extract_norm == "layer" else None
        hidden = self.wav2vec2(input_values, attention_mask=use_mask).last_hidden_state
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            frames = self._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
            weights = frames.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.classifier(pooled)


def label_order(config: Wav2Vec2Config) -> tuple[str, ...]:
    """Output names in output order, from the config, checked against the expected three dimensions."""
    names = tuple(str(config.id2label[i]).lower() for i in range(config.num_labels))
    if set(names) == set(DEFAULT_ORDER):
        return names
    if config.num_labels == 3 and all(n.startswith("label_") for n in names):
        return DEFAULT_ORDER
    raise EmotionModelLoadError(
        f"expected 3 outputs named arousal, dominance, valence; the config names {list(names)}"
    )


def load_strict(path: Path, device: str) -> tuple[Wav2Vec2EmotionRegressor, tuple[str, ...]]:
    """Load a checkpoint directory, refusing missing, unexpected or mis-shaped weights."""
    try:
        config = Wav2Vec2Config.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise EmotionModelLoadError(f"{path}: no usable wav2vec2 config.json ({exc})") from exc
    if config.num_labels != 3:
        raise EmotionModelLoadError(
            f"{path}: config has {config.num_labels} outputs, the regression head needs 3"
        )
    order = label_order(config)
    # A progress bar per load is noise in service and batch logs.
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = Wav2Vec2EmotionRegressor.from_pretrained(path, config=config, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EmotionModelLoadError(f"{path}: weights do not load into the emotion regressor: {exc}") from exc
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing weights {sorted(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected weights {sorted(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"weights of the wrong shape {sorted(map(str, info['mismatched_keys']))}")
    if info.get("error_msgs"):
        problems.append(f"errors {list(info['error_msgs'])}")
    if problems:
        raise EmotionModelLoadError(
            f"{path}: checkpoint does not match the emotion regressor: " + "; ".join(problems)
        )
    model.eval()
    return model.to(device), order


@torch.inference_mode()
def predict(model: Wav2Vec2EmotionRegressor, batch: list[torch.Tensor], device: str) -> torch.Tensor:
    """Raw scores (len(batch), 3) for already-normalised 1-D float waveforms of any lengths."""
    longest = max(int(x.numel()) for x in batch)
    values = torch.zeros((len(batch), longest), dtype=torch.float32)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, x in enumerate(batch):
        values[row, : x.numel()] = x
        mask[row, : x.numel()] = 1
    out = model(values.to(device), attention_mask=mask.to(device))
    return out.float().cpu()
