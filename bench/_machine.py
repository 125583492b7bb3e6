"""Shared by the benchmark scripts: what machine a result was measured on."""

import platform
from pathlib import Path


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or what Python knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
