"""The two helpers of the original ``deeplift.util`` that the original-API wrappers themselves use
(:func:`enum` and :func:`run_function_in_batches`), apart from ``util`` so that ``util`` may build
on the wrappers (``compile_func`` is ``deeplift.backend.function``) without an import circle."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["enum", "run_function_in_batches"]


def enum(**enums: Any) -> type:
    """A class whose attributes are the given constants, plus ``vals`` (the values, in the given
    order) and ``the_dict`` (the keyword dict): ``enum(a="a", b="b").vals == ["a", "b"]``.
    Callables become static methods."""
    attrs: dict[str, Any] = {}
    for key, value in enums.items():
        attrs[key] = staticmethod(value) if callable(value) else value
    attrs["vals"] = list(enums.values())
    attrs["the_dict"] = dict(enums)
    return type("Enum", (object,), attrs)


def run_function_in_batches(func: Callable, input_data_list: Sequence, learning_phase=None,
                            batch_size: int = 10, progress_update: int | None = 1000,
                            multimodal_output: bool = False) -> list:
    """Call ``func([x[i:i+batch_size] for x in input_data_list])`` for i = 0, batch_size, ...
    and concatenate the per-example results into a Python list.

    ``input_data_list`` is a list with one array per input (first axis = examples). Prints
    ``Done i`` before a batch whose start ``i`` is a multiple of ``progress_update`` (None: never).
    With ``multimodal_output`` the function returns one array per output and the result is a list
    of lists (one per output). ``learning_phase``, if given, is appended to every call's inputs.
    """
    if not isinstance(input_data_list, (list, tuple)):
        raise TypeError(f"input_data_list must be a list with one array per input, got "
                        f"{type(input_data_list).__name__}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(input_data_list[0])
    outputs: list = []
    i = 0
    while i < n:
        if progress_update is not None and i % progress_update == 0:
            print("Done", i)
        args = [x[i:i + batch_size] for x in input_data_list]
        if learning_phase is not None:
            args.append(learning_phase)
        batch_out = func(args)
        if multimodal_output:
            if not outputs:
                outputs = [[] for _ in batch_out]
            for acc, out in zip(outputs, batch_out):
                acc.extend(out)
        else:
            outputs.extend(batch_out)
        i += batch_size
    return outputs
