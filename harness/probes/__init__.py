"""Probes: what a pin is asked and how its answers are judged (conformance, agreement, accuracy, speech)."""
