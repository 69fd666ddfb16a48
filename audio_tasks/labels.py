"""Label tokenization, checked: ``python -m audio_tasks.labels --model_args pretrained=DIR --tasks TASKS``.

Prints, for every task and choice, the continuation tokens exactly as ``audio_lalm`` scores them (split
from the rendered prompt as lm-eval's hf model splits them), whether each label is one token, and the
first-token collisions between a doc's choices.

The checks themselves (first-token collisions, ``first_token=audiolens``) live in :mod:`audio_tasks.first_tokens`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Any, Sequence

from audio_tasks.first_tokens import (  # noqa: F401  (re-exported)
    COLLISION_POLICIES,
    FIRST_TOKEN_MODES,
    FirstTokenCollision,
    audiolens_first_id,
    check_first_tokens,
    collisions,
    first_token_tasks,
    refuses,
    token_piece,
)

__all__ = ["FIRST_TOKEN_MODES", "COLLISION_POLICIES", "FirstTokenCollision", "collisions", "check_first_tokens",
           "audiolens_first_id", "label_report", "main"]


def _light_lm(model_args: dict[str, Any]):
    """The rendering and continuation-splitting parts of ``audio_lalm`` (:mod:`audio_tasks.requests`) without
    loading weights."""
    from transformers import AutoProcessor

    from audio_tasks import processors
    from audio_tasks.requests import render_prompt, split_continuation
    from interventions.audio_tokenizer import AudioTokenizer

    pretrained = str(model_args["pretrained"])
    processors.prepare(pretrained)
    proc = processors.adapt(AutoProcessor.from_pretrained(pretrained, revision=model_args.get("revision")))

    class Light:
        processor = proc
        tokenizer = getattr(proc, "tokenizer", proc)

        @property
        def engine(self):
            return self

        render_chat = AudioTokenizer.render_chat
        encode_text = AudioTokenizer.encode_text

        def render(self, context: str, doc: Any, n_audio: int) -> str:
            return render_prompt(self, context, doc, n_audio)  # type: ignore[arg-type]

        def split_continuation(self, prompt: str, continuation: str) -> list[int]:
            return split_continuation(self, prompt, continuation)  # type: ignore[arg-type]

    return Light()


def label_report(model_args: dict[str, Any], tasks: Sequence[str], *, limit: int | None = None,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """{task: {"choices": {label: {tokens, ids, one_token, first, audiolens_first}}, "collisions": [...]}}."""
    from audio_tasks.items import load_tasks, task_requests

    lm = _light_lm(model_args)
    tok = lm.tokenizer
    out: dict[str, Any] = {}
    loaded = load_tasks(list(tasks), metadata or {})
    for name in tasks:
        reqs = task_requests(loaded[name], limit=limit)
        docs: OrderedDict[Any, list[tuple[str, list[int]]]] = OrderedDict()
        choices: OrderedDict[str, dict[str, Any]] = OrderedDict()
        for r in reqs:
            context, cont = r.args[0], r.args[1]  # pyright: ignore[reportGeneralTypeIssues]  (lm-eval types args as ())
            aux = r.args[2] if len(r.args) > 2 else None
            audio = (aux or {}).get("audio") or []
            n_audio = len(audio) if isinstance(audio, (list, tuple)) else 1
            prompt = lm.render(context, r.doc, n_audio)
            ids = lm.split_continuation(prompt, cont)
            docs.setdefault(r.doc_id, []).append((cont, ids))
            if cont not in choices:
                al = audiolens_first_id(lm.encode_text, cont)
                choices[cont] = {"tokens": [token_piece(tok, i) for i in ids], "ids": [int(i) for i in ids],
                                 "one_token": len(ids) == 1, "first": token_piece(tok, ids[0]) if ids else None,
                                 "audiolens_first": token_piece(tok, al), "audiolens_first_id": al}
        coll: list[dict[str, Any]] = []
        seen: set = set()
        for doc_id, pairs in docs.items():
            for t, labs in collisions([c for c, _ in pairs], [ids[0] for _, ids in pairs if ids]):
                key = (t, tuple(labs))
                if key not in seen:
                    seen.add(key)
                    coll.append({"token": token_piece(tok, t), "id": t, "labels": labs, "first_doc": doc_id})
        out[name] = {"docs": len(docs), "choices": choices, "collisions": coll}
    return out


def _format(report: dict[str, Any]) -> str:
    lines = []
    for task, r in report.items():
        lines.append(f"== {task} ({r['docs']} docs)")
        for lab, c in r["choices"].items():
            toks = " | ".join(repr(t) for t in c["tokens"])
            n = "one token " if c["one_token"] else "%d tokens  " % len(c["ids"])
            lines.append(f"  {lab!r:28} {n} [{toks}]  audiolens first: {c['audiolens_first']!r}")
        if r["collisions"]:
            for c in r["collisions"]:
                lines.append(f"  COLLISION: {c['labels']} share first token {c['token']!r} (id {c['id']}), "
                             f"e.g. doc {c['first_doc']}")
        else:
            lines.append("  no first-token collision")
    return "\n".join(lines)


def _parse_model_args(s: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in s.split(","))):
        if "=" not in part:
            raise ValueError(f"--model_args: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    if "pretrained" not in out:
        raise ValueError("--model_args must name pretrained=DIR_OR_ID")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print the label tokenization of the given tasks; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_args", required=True, help="pretrained=DIR[,revision=...]")
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--metadata", default=None, help="JSON passed to the task loaders (e.g. data_root)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the text table")
    a = p.parse_args(argv)
    md = json.loads(a.metadata) if a.metadata else {}
    rep = label_report(_parse_model_args(a.model_args), [t for t in a.tasks.split(",") if t], limit=a.limit,
                       metadata=md)
    print(json.dumps(rep, indent=1, ensure_ascii=False) if a.json else _format(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
