"""Load: sending requests at a concurrency or rate and turning what came back into measurements."""
