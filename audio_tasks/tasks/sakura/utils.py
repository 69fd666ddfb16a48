"""lm-eval resolves ``!function utils.<name>`` next to the YAML: re-export the shared task functions."""

from audio_tasks.tasks.utils import (  # noqa: F401
    balanced_accuracy,
    doc_to_audio,
    doc_to_target,
    mean_skip_none,
    mmau_dataset,
    process_results,
    process_results_mmau,
    sakura_dataset,
)
