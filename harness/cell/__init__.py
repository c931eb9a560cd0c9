"""One cell, (pin, model, platform[, variant]), from install to CellResult.

context.py   RunContext, the cell id, this machine, phase timers
runner.py    run_cell(): install, model, serve; the one place exceptions become outcomes
image.py     the pin's venv next to GPUStack's image of that version
serve.py     the server's life: GPU wait, port retry, calibration, probes while alive, warm start, judging
probing.py   Probing: what a plan's probes share (the server, the result, this pin's and the reference's outputs)
plans.py     one plan per model kind: the ordered probes (add a probe here)
text.py      probes of text models; speech.py: of speech models; load.py: load driving
reference.py ReferenceStore: each pin's outputs, keyed by what shapes them
"""

from __future__ import annotations

from .context import Progress, RunContext, cell_id, install_request, this_machine, timed
from .plans import Plan, Probe, plan_for, register
from .probing import Probing
from .reference import ReferenceStore
from .runner import CellInterrupted, run_cell

__all__ = [
    "CellInterrupted",
    "Plan",
    "Probe",
    "Probing",
    "Progress",
    "ReferenceStore",
    "RunContext",
    "cell_id",
    "install_request",
    "plan_for",
    "register",
    "run_cell",
    "this_machine",
    "timed",
]
