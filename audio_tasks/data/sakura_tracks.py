"""The SAKURA track table (labels in AudioLens order, question, assistant prefix): its one home.

Dependency-free, so the task loader (:mod:`audio_tasks.data.sakura`), the synthetic generator, the tiny-model
builder, the reference-model trainer and the benchmark all read the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Track", "TRACKS", "p3_user_prompt"]


@dataclass(frozen=True)
class Track:
    """One SAKURA track: data folder, Hugging Face copy, labels (AudioLens order), question, assistant prefix."""

    folder: str
    hf_name: str
    labels: tuple[str, ...]
    question: str
    prefix: str


TRACKS = {
    "gender": Track("Gender", "SLLM-multi-hop/GenderQA", ("male", "female"),
                    "What is the gender of the speaker in the speech?", "The speaker's gender is"),
    "language": Track("Language", "SLLM-multi-hop/LanguageQA",
                      ("English", "German", "Spanish", "French", "Italian", "Chinese", "Japanese", "Korean"),
                      "What is the language spoken in the speech?", "The speech's spoken language is"),
    "emotion": Track("Emotion", "SLLM-multi-hop/EmotionQA", ("angry", "disgust", "fear", "happy", "sad"),
                     "What is the emotion of the speaker in the speech?", "The speaker's emotion is"),
    "animal": Track("Animal", "SLLM-multi-hop/AnimalQA",
                    ("dog", "cat", "pig", "cow", "frog", "hen", "rooster", "sheep", "crow"),
                    "What animal makes the sound?", "The sound file's animal is"),
}


def p3_user_prompt(track: Track) -> str:
    """The P3 (multiple-choice) USER prompt of a track: question + its labels."""
    return f"{track.question} Possible options: {', '.join(track.labels)}."
