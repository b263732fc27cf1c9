"""Bundled example: a small CNN that detects motif grammar in simulated DNA.

The model was trained by ``examples/train_motif_model.py`` on sequences from
``examples/motif_simulation.py`` (a re-creation of the simulation in
Shrikumar et al. 2017, section 4.2): length-200 background DNA with embedded
GATA-like and TAL1-like motif instances.  It predicts three tasks:
``"GATA"`` (a GATA-like motif is present), ``"TAL1"`` (a TAL1-like motif is
present) and ``"GATA_and_TAL1"`` (both are present).

Inputs are one-hot DNA in PyTorch layout ``(N, 4, 200)``, channels A, C, G, T.
The network ends in ``nn.Sigmoid`` so ``model(x)`` returns probabilities; the
logits (the input of the final sigmoid, the usual attribution target) are
``model.logits(x)``.

Bundled files (in the package data directory ``deeplift/data``):

* ``motif_cnn.pt`` -- float32 ``state_dict`` of :class:`MotifCNN`
* ``motif_examples.npz`` -- held-out example sequences, see
  :func:`load_example_data`
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "MotifCNN",
    "load_example_model",
    "load_example_data",
    "EXAMPLE_PATHS",
    "TASK_NAMES",
    "SEQ_LEN",
]

TASK_NAMES = ["GATA", "TAL1", "GATA_and_TAL1"]
SEQ_LEN = 200
WEIGHTS_FILE = "motif_cnn.pt"
DATA_FILE = "motif_examples.npz"


class MotifCNN(nn.Module):
    """Two convolutions, max pooling, two dense layers and a final sigmoid.

    Submodules are registered in execution order and ``forward`` simply
    applies them one after another, so the network is equivalent to an
    ``nn.Sequential`` of :meth:`layers`.

    ========  ===============================================  ==============
    name      module                                           output shape
    ========  ===============================================  ==============
    conv1     Conv1d(4, 32, kernel_size=11, padding=5)         (N, 32, 200)
    relu1     ReLU()
    conv2     Conv1d(32, 32, kernel_size=7, dilation=2,        (N, 32, 200)
              padding=6)
    relu2     ReLU()
    pool      MaxPool1d(kernel_size=40, stride=40)             (N, 32, 5)
    flatten   Flatten()                                        (N, 160)
    fc1       Linear(160, 32)                                  (N, 32)
    relu3     ReLU()
    fc2       Linear(32, 3)  -- logits                         (N, 3)
    sigmoid   Sigmoid()      -- probabilities                  (N, 3)
    ========  ===============================================  ==============
    """

    def __init__(
        self,
        n_tasks: int = 3,
        seq_len: int = SEQ_LEN,
        conv1_channels: int = 32,
        conv2_channels: int = 32,
        pool_size: int = 40,
        hidden: int = 32,
    ):
        super().__init__()
        if seq_len % pool_size:
            raise ValueError("seq_len must be a multiple of pool_size")
        self.conv1 = nn.Conv1d(4, conv1_channels, kernel_size=11, padding=5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(
            conv1_channels, conv2_channels, kernel_size=7, dilation=2, padding=6
        )
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool1d(kernel_size=pool_size, stride=pool_size)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(conv2_channels * (seq_len // pool_size), hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_tasks)
        self.sigmoid = nn.Sigmoid()

    def layers(self) -> list[nn.Module]:
        """All modules in execution order (the last one is the sigmoid)."""
        return list(self.children())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs, shape (N, n_tasks)."""
        for layer in self.layers()[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-task probabilities, shape (N, n_tasks)."""
        x = self.conv1(x)
        x = self.relu1(x)
        x = self.conv2(x)
        x = self.relu2(x)
        x = self.pool(x)
        x = self.flatten(x)
        x = self.fc1(x)
        x = self.relu3(x)
        x = self.fc2(x)
        return self.sigmoid(x)


# --------------------------------------------------------------------------
# bundled files


def _data_resource(name: str):
    """Traversable for a file in the ``deeplift/data`` directory."""
    try:
        return resources.files("deeplift").joinpath("data", name)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - odd installs
        return Path(__file__).resolve().parent.parent / "data" / name


def _as_path(traversable) -> Path:
    try:
        return Path(os.fspath(traversable))
    except TypeError:  # e.g. inside a zip archive: best-effort location
        return Path(str(traversable))


EXAMPLE_PATHS: dict[str, Path] = {
    "weights": _as_path(_data_resource(WEIGHTS_FILE)),
    "data": _as_path(_data_resource(DATA_FILE)),
}
"""Locations of the bundled files: ``"weights"`` (state dict) and ``"data"``."""


def load_example_model() -> MotifCNN:
    """The bundled trained :class:`MotifCNN`, on CPU, in eval mode."""
    model = MotifCNN()
    with _data_resource(WEIGHTS_FILE).open("rb") as f:
        state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def load_example_data() -> dict:
    """The bundled held-out example sequences.

    Returns a dict with

    * ``"onehot"``: (N, 4, 200) float32, channels A, C, G, T
    * ``"labels"``: (N, 3) float32, tasks as in ``"task_names"``
    * ``"task_names"``: ``["GATA", "TAL1", "GATA_and_TAL1"]``
    * ``"motif_names"``: ``["GATA", "TAL1"]`` (indexed by ``motif_id``)
    * ``"motif_positions"``: list of ``(seq_index, motif_name, start, end,
      strand)`` tuples, one per embedded motif instance; ``end`` is exclusive
      and ``strand`` is ``"+"`` or ``"-"`` (``"-"``: the window holds the
      reverse complement of a sample from the motif's PWM)
    * ``"motif_table"``: the same instances as a dict of equal-length arrays
      ``seq_index``, ``motif_id``, ``start``, ``end``, ``strand`` (+1 / -1)
    * ``"pwms"``: dict motif name -> (4, motif_length) float64 position
      weight matrix the instances were sampled from
    * ``"background"``: (4,) background base probabilities
    """
    with _data_resource(DATA_FILE).open("rb") as f:
        raw = f.read()
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    motif_names = [str(s) for s in arrays["motif_names"]]
    task_names = [str(s) for s in arrays["task_names"]]
    table = {
        "seq_index": arrays["motif_seq_index"].astype(np.int64),
        "motif_id": arrays["motif_id"].astype(np.int64),
        "start": arrays["motif_start"].astype(np.int64),
        "end": arrays["motif_end"].astype(np.int64),
        "strand": arrays["motif_strand"].astype(np.int64),
    }
    positions = [
        (int(i), motif_names[m], int(s), int(e), "+" if st > 0 else "-")
        for i, m, s, e, st in zip(
            table["seq_index"], table["motif_id"], table["start"], table["end"], table["strand"]
        )
    ]
    return {
        "onehot": arrays["onehot"].astype(np.float32),
        "labels": arrays["labels"].astype(np.float32),
        "task_names": task_names,
        "motif_names": motif_names,
        "motif_positions": positions,
        "motif_table": table,
        "pwms": {name: arrays[f"pwm_{name}"] for name in motif_names},
        "background": arrays["background"],
    }
