"""AwaRes as an lmms-eval model: ``lmms-eval --model awares --model_args pretrained=DIR,log_dir=DIR``.

lmms-eval finds it through the ``lmms_eval.models`` entry point (``manifest``). ``generate_until``
runs the engine in batches on a checkpoint (a local folder or a hub id) and, since lmms-eval logs no visual tokens,
writes one line per sample to ``<log_dir>/<task>.jsonl``: the crops asked for, RTR, the visual
tokens of view, crops and full image, and the time of each turn.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from ..errors import AwaresError
from ..jsonl import append, open_append
from ..models import HFBackend, default_model_dir
from ..runtime import Engine, Request, RuntimeConfig
from ..runtime.isolation import run_isolated


def manifest() -> Any:
    """The entry point's payload: lmms-eval's registration of the ``awares`` model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="awares", simple_class_path="awares.evaluate.lmms_plugin.AwaRes")


class AwaRes(lmms):
    """The AwaRes protocol (policy ``crops``, or a baseline: ``full``, ``low``) on a local checkpoint."""

    def __init__(
        self,
        pretrained: str | None = None,
        policy: str = "crops",
        batch_size: int | str = 8,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int | str = 32,
        log_dir: str = "awares_logs",
        revision: str | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        model_dir = pretrained or default_model_dir(policy)  # a local folder or a hub id
        self.engine = Engine(
            HFBackend.load(model_dir, device=device, dtype=dtype, revision=revision),
            RuntimeConfig(batch_size=int(batch_size), max_new_tokens=int(max_new_tokens)),
        )
        self.policy, self.log_dir = policy, Path(log_dir)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request (lmms-eval's order); requests that share a generation length run
        as batches, and a request the engine refuses (no or several images, a bad image) gets ""."""
        jobs = [self._job(i, r) for i, r in enumerate(requests)]
        answers = [""] * len(requests)
        length = lambda job: job["max_new_tokens"]  # noqa: E731
        for max_new_tokens, group in groupby(sorted(jobs, key=length), key=length):
            for job, result in self._answer(list(group), max_new_tokens):
                answers[job["index"]] = result.answer if result else ""
        return answers

    def _job(self, index: int, instance: Instance) -> dict[str, Any]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
        visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if v is not None]
        limit = int(gen_kwargs.get("max_new_tokens", self.engine.config.max_new_tokens))
        return {"index": index, "context": context, "visuals": visuals, "max_new_tokens": limit,
                "doc_id": doc_id, "task": task, "split": split}  # fmt: skip

    def _answer(self, jobs: list[dict[str, Any]], max_new_tokens: int) -> list[tuple[dict[str, Any], Any]]:
        """Results of ``jobs`` (None for a refused one), each logged."""
        for job in jobs:
            if len(job["visuals"]) != 1:
                job["error"] = f"{len(job['visuals'])} images: AwaRes answers about one image per question"
        good = [j for j in jobs if "error" not in j]
        out = [(j, None) for j in jobs if "error" in j]
        for start in range(0, len(good), self.engine.config.batch_size):
            batch = good[start : start + self.engine.config.batch_size]
            requests = [Request(j["visuals"][0], j["context"]) for j in batch]
            answer = lambda rs: self.engine.answer_batch(rs, self.policy, max_new_tokens=max_new_tokens)  # noqa: E731
            for job, result in zip(batch, run_isolated(answer, requests, (AwaresError,))):
                if isinstance(result, AwaresError):  # a bad request: the others are answered as alone
                    job["error"], result = str(result), None
                out.append((job, result))
        by_task = lambda pair: pair[0]["task"]  # noqa: E731
        for task, pairs in groupby(sorted(out, key=by_task), key=by_task):
            with open_append(self.log_dir / f"{task}.jsonl") as log:
                for job, result in pairs:
                    append(log, self._row(job, result))
        return out

    @staticmethod
    def _row(job: dict[str, Any], result: Any) -> dict[str, Any]:
        row = {k: job[k] for k in ("task", "split", "doc_id")}
        if result is None:
            return row | {"error": job["error"]}
        return row | {k: v for k, v in result.to_dict().items() if k in ("answer", "crops", "rtr", "tokens", "seconds")}

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("AwaRes generates answers; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("AwaRes runs its own two turns; multi-round tasks are not supported")
