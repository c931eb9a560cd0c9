"""The units a load point's rate is measured in (stored with every point, so reports never guess)."""

TEXT_UNIT, AUDIO_UNIT = "output tok/s", "audio s/s"
