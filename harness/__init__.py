"""pinmatrix: a compatibility-matrix harness for GPUStack's pinned inference-backend versions."""

__version__ = "0.1.0"
