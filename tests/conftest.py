"""Shared fixtures: one tiny random Qwen2.5-VL built offline per test session, and one tiny random
checkpoint of each supported family (``family_dir``, ``family_backend``), shared by every test.

``AWARES_TEST_DEVICE=cuda`` runs the backend tests on the GPU (float32, so exact comparisons hold):
``scripts/gpu_check.sh`` does.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:  # one thread per worker: two workers share two cores
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, and for the processes tests start

import torch  # noqa: E402
from PIL import Image, ImageDraw

from awares.crops import extract_crops, low_res_view
from awares.curate import ImageStore, trajectory
from awares.data.synthetic import generate
from awares.evaluate.tasks import HME
from awares.export import llama_server_binary
from awares.models import HFBackend, TinyConfig, build_tiny
from awares.models.families import FAMILIES
from awares.protocol import images_of
from awares.serve import create_app, serve_in_thread


def need_llama_server() -> None:
    """Skip without llama.cpp's ``llama-server`` here; under CI (whose .ci/run builds it), fail."""
    if not llama_server_binary().is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no {llama_server_binary()}: .ci/run builds it with scripts/llama_server.sh")
        pytest.skip("no llama-server here: `bash scripts/llama_server.sh` builds it (about 14 min)")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), TinyConfig(max_pixels=400 * 28 * 28))


@pytest.fixture(scope="session")
def backend(tiny_dir: Path) -> HFBackend:
    return HFBackend.load(tiny_dir, device=os.environ.get("AWARES_TEST_DEVICE", "cpu"), dtype="float32")


@pytest.fixture(scope="session", params=list(FAMILIES))
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint of each family (hidden 128, 2 layers: Qwen3.5's are linear then full
    attention), saved as a user's would be: model, processor, tokenizer and chat template."""
    config = TinyConfig(family=request.param, text_layers=2, vision_layers=2, max_pixels=None)
    return build_tiny(tmp_path_factory.mktemp(request.param), config)


@pytest.fixture(scope="session")
def family_backend(family_dir: Path) -> HFBackend:
    return HFBackend.load(family_dir, device=os.environ.get("AWARES_TEST_DEVICE", "cpu"), dtype="float32")


@pytest.fixture(scope="session")
def prompts(tmp_path_factory):
    """4 GRPO prompts (half detail questions) with their images, as curation writes them."""
    root = tmp_path_factory.mktemp("prompts")
    store = ImageStore(root)
    with (root / "trajectories.jsonl").open("w") as f:
        for s in generate("train", 4, detail_fraction=0.5):
            path = root / f"{s.id}.png"
            s.image.save(path)
            row = trajectory(store, low_res_view(s.image), s.question, s.answers[0])
            meta = {"image": str(path), "question": s.question, "answers": s.answers}
            f.write(json.dumps({"id": s.id, "label": "crop" if s.kind == "detail" else "direct", **row, **meta}) + "\n")
    return root / "trajectories.jsonl"


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory):
    """A direct and a crop trajectory per sample, written like ``awares curate`` writes them."""
    root = tmp_path_factory.mktemp("traj")
    store = ImageStore(root)
    with (root / "trajectories.jsonl").open("w") as f:
        for i, s in enumerate(generate("train", 4)):
            crops = extract_crops(s.image, ["0"]) if i % 2 else None
            row = trajectory(store, low_res_view(s.image), s.question, s.answers[0], crops, ("0",) if crops else ())
            f.write(json.dumps({"id": s.id, **row}) + "\n")
    return root / "trajectories.jsonl"


def cached_repo(hub: Path, repo_type: str, repo_id: str, revision: str = "0" * 40, ref: str = "main") -> Path:
    """An empty snapshot folder of ``repo_id`` in the hub cache ``hub``, named by ``ref``."""
    repo = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def hub_cache(home: Path, models: dict[str, Path]) -> Path:
    """``home`` as an HF_HOME whose cache holds ``models`` (hub id: folder) and each Table-1 benchmark
    (2 rows) under lmms-eval's id, in the cache's own layout (``models--ORG--NAME/refs/main``,
    ``snapshots/REV/...``)."""
    import shutil

    import datasets

    from awares.data.benchmarks import ROW_TO_FIELDS, TASKS

    for repo_id, folder in models.items():
        shutil.copytree(folder, cached_repo(home / "hub", "model", repo_id), dirs_exist_ok=True)
    for number, task in enumerate(TASKS, start=1):
        copy, _ = ROW_TO_FIELDS[task]
        snapshot = cached_repo(home / "hub", "dataset", copy.repo_id, revision=f"{number:040d}")  # a commit each
        folder = copy.config or "data"
        ds = datasets.Dataset.from_dict({**columns(task), "image": images(2)}).cast_column("image", datasets.Image())
        (snapshot / folder).mkdir()
        ds.to_parquet(str(snapshot / folder / f"{copy.split}-00000-of-00001.parquet"))
        name = copy.config or "default"
        files = f"  data_files:\n  - split: {copy.split}\n    path: {folder}/{copy.split}-*\n"
        (snapshot / "README.md").write_text(f"---\nconfigs:\n- config_name: {name}\n{files}---\n")
    return home


class Server:
    """``create_app(engine, config)`` served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, engine, config, raw=False):
        self.app = create_app(engine, config, raw=raw)
        self.server, self.url = serve_in_thread(self.app)

    def post(self, body, raw=False):
        """``(status, json, headers)`` of POST /v1/chat/completions."""
        data = body if raw else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/v1/chat/completions", data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), err.headers

    def stream(self, body):
        """The ``data:`` payloads of a streamed POST /v1/chat/completions, ``[DONE]`` included."""
        data = json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/v1/chat/completions", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            lines = response.read().decode().splitlines()
        return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]

    def get(self, path):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return response.read().decode()

    def stop(self):
        self.server.should_exit = True


def chat(url, question="What is written?", **extra):
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return {"model": "awares", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def from_scratch_logits(backend, ids, mask, conversations):
    """Next-token logits of the full two-turn sequence, prefilled in one pass with every image."""
    images = [im for c in conversations for im in images_of(c)]
    pixels = backend.processor.image_processor(images, return_tensors="pt").to(backend.device)
    with torch.no_grad():
        out = backend.model(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=pixels["pixel_values"],
            image_grid_thw=pixels["image_grid_thw"],
            mm_token_type_ids=(ids == backend.image_token_id).int(),
        )
    return out.logits[:, -1]


QUESTION_RWQA = (
    "Which vehicle is closest?\nA. red car\nB. blue car\n"
    "Please answer directly with only the letter of the correct option and nothing else."
)


def images(n):
    return [Image.new("RGB", (224 + 28 * i, 196), (40 * i, 90, 200)) for i in range(n)]


def columns(task):
    """Two rows of ``task`` in the column layout of the copy lmms-eval reads."""
    return {
        "chartqa": {"type": ["human_test", "augmented_test"], "question": ["Peak value?", "Is it rising?"],
                    "answer": ["10", "Yes"]},
        "docvqa": {"questionId": [101, 102], "question": ["Who signed?", "Total?"],
                   "question_types": [["form"], ["table"]], "answers": [["John", "Jon"], ["12"]]},
        "ocrbench": {"dataset": ["IIIT5K", "HME100k"], "question": ["What is written?", "Write the formula."],
                     "question_type": ["Regular Text Recognition", HME], "answer": [["hello"], ["x^2"]]},
        "pope": {"id": ["0", "1"], "question_id": ["7", "8"],
                 "question": ["Is there a dog in the image? ", "Is there a cat?"],
                 "answer": ["yes", "no"], "category": ["adversarial", "popular"]},
        "realworldqa": {"question": [QUESTION_RWQA, QUESTION_RWQA], "answer": ["B", "A"]},
        "vstar": {"text": ["What is the color of the cup? (A) red (B) blue (C) green (D) white",
                           "Is the cat left of the dog? (A) yes (B) no"],
                  "label": ["B", "A"], "category": ["direct_attributes", "relative_position"],
                  "question_id": ["q1", "q2"]},
    }[task]  # fmt: skip


class ForcedCalls:
    """Within ``with``, a random model writes ``GET_CROPS`` for ``crops`` after any of ``questions``
    and then its end of turn: on the pass that prefills such a question, and on each pass that
    forwards the call's tokens so far, the logits of the call's next token get ``bias`` (whatever
    the decoder: jump-forward, token by token, one row or a batch). Other rows and turns are the
    model's own."""

    def __init__(self, backend: HFBackend, crops: list[str], questions: list[str], bias: float = 1e4):
        self.model, self.bias, self.pad = backend.model, bias, backend.pad_id
        self.script = [*backend.grammar.encode(crops), backend.decoder.end_of_turn]
        self.markers = [backend.tokenizer(q, add_special_tokens=False).input_ids for q in questions]
        self.done: dict[int, int] = {}  # row -> script tokens forwarded so far

    def __enter__(self) -> ForcedCalls:
        self.handle = self.model.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def _marked(self, ids: list[int]) -> bool:
        return any(ids[i : i + len(m)] == m for m in self.markers for i in range(len(ids) - len(m) + 1))

    def _hook(self, module, args, kwargs, output):
        ids, logits = kwargs["input_ids"], output.logits
        for row, chunk in enumerate(ids.tolist()):
            real = chunk[next((i for i, t in enumerate(chunk) if t != self.pad), len(chunk)) :]
            if self._marked(chunk):
                self.done[row], real = 0, []
            elif row not in self.done:
                continue
            start = self.done[row]
            # the forwarded tokens that follow the script (jump-forward forwards a separator ahead)
            script = self.script[start:]
            follows = next((k for k, t in enumerate(real) if k >= len(script) or t != script[k]), len(real))
            if real and not follows:
                del self.done[row]
                continue
            for k in range(max(follows, 1)):  # the logits after each of them (the last ones that were kept)
                position = logits.shape[1] - max(len(real), 1) + k
                following = start + (k + 1 if real else 0)
                if position >= 0 and following < len(self.script):
                    logits[row, position, self.script[following]] += self.bias
            if follows < len(real):
                del self.done[row]
            else:
                self.done[row] = start + len(real)
        return output


def scene(width: int = 448, height: int = 336, seed: int = 0) -> Image.Image:
    """A small test picture with a large shape and a small label."""
    image = Image.new("RGB", (width, height), (230 - 20 * seed % 200, 230, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(200, 30, 30))
    draw.text((int(width * 0.7), int(height * 0.8)), f"A{seed}7", fill=(0, 0, 0))
    return image


class Scripted:
    """The real backend, with turn-1 texts (and optionally turn-2 texts) replaced as a trained policy
    would write them."""

    def __init__(self, backend, texts, turn2=None):
        self.backend, self.processor, self.texts, self.turn2 = backend, backend.processor, list(texts), turn2

    def generate(self, conversations, **kwargs):
        turn = self.backend.generate(conversations, **kwargs)
        turn.texts = self.texts[: len(conversations)]
        return turn

    def extend(self, *args, **kwargs):
        turn = self.backend.extend(*args, **kwargs)
        if self.turn2 is not None:
            turn.texts = self.turn2[: len(turn.texts)]
        return turn
