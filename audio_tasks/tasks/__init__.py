"""lm-eval task YAMLs of this project (SAKURA, MMAU test-mini); see README.md in this folder."""

from pathlib import Path

TASKS_DIR = Path(__file__).parent

__all__ = ["TASKS_DIR"]
