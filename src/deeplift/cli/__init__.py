"""The ``deeplift`` command: ``score``, ``plot`` and ``check`` (README "Quickstart (command line)").

    deeplift score                              # the bundled motif example, with motif AUROCs
    deeplift score model.h5 seqs.fa --method genomics_default --references dinuc-shuffle --target all
    deeplift plot deeplift_scores.npz --examples 0,3
    deeplift check mypkg.models:Net --input-shape 4,200
    deeplift score fold0.pt2 fold1.pt2 --genome hg38.fa --regions peaks.bed --width 2114 --out s.h5
    deeplift merge s.h5 shard0.h5 shard1.h5     # the outputs of --shard 0/2 and 1/2

Every error a person can act on prints one line ``deeplift: error: <what is wrong>; <what to do>``
and exits with status 2 (``--debug`` shows the traceback instead). Output files appear only once
fully written (temporary file + rename).
"""

from .common import CliError
from .parser import build_parser, main

__all__ = ["CliError", "build_parser", "main"]
