"""lm-eval resolves ``!function utils.<name>`` next to the YAML: the demo tasks' functions.

``demo_dataset`` is the SAKURA loader on the synthetic dataset of :func:`audio_tasks.synthetic.ensure_dataset`
(generated once into the cache). Its ``split`` column decides the split: ``evaluation`` by default,
``--metadata '{"split": "calibration"}'`` for the calibration split. A ``data_root`` in the metadata overrides
the generated folder.
"""

from audio_tasks.tasks.utils import (  # noqa: F401
    balanced_accuracy,
    doc_to_audio,
    doc_to_target,
    mean_skip_none,
    process_results,
    sakura_dataset,
)


def demo_dataset(sakura_track: str, sakura_prompt: str = "p3", **metadata):
    """``custom_dataset`` of the demo YAMLs (``dataset_kwargs``: sakura_track, sakura_prompt)."""
    from audio_tasks.synthetic import ensure_dataset

    metadata = dict(metadata)
    if not metadata.get("data_root"):
        metadata["data_root"] = str(ensure_dataset())
    return sakura_dataset(sakura_track, sakura_prompt, **metadata)
