"""README.md runs as written. Every command of its fenced blocks runs here, offline, in a folder laid
out as a user's: a hub cache the test builds holds the shipped models under the README's hub ids and
each Table-1 benchmark under lmms-eval's id, so that no command changes but for what ``BOUNDS`` adds
(fewer samples and steps), the ports, and lmms-eval's hub tasks (``LOCAL_TASK``). ``NOT_HERE`` says
why the rest cannot run here. A README command that neither names, or one they name that the README
no longer holds, fails the test."""

import base64
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import datasets
import pytest

from awares.data.benchmarks import TASKS
from awares.data.synthetic import generate
from awares.export import llama_cpp_dir, llama_server_binary
from awares.models import default_base_dir, default_model_dir

from .conftest import hub_cache, need_llama_server, scene

ROOT = Path(__file__).resolve().parents[1]
POLICY_ID, BASE_ID = "Kimhi/AWARES-Qwen2.5-VL-7B", "Qwen/Qwen2.5-VL-7B-Instruct"
ASK = 'awares ask page.png "What is the invoice number?"'
SYNTH = "awares synth --split test --n 2 --out bench"
BENCH_ASK = 'awares ask bench/images/test-000001.png "What color is the checkered code on the red plate?" --json'
CURATE = "awares curate --data my_train/ --model Qwen/Qwen2.5-VL-7B-Instruct --out runs/curate-7b"
SFT, GRPO = "awares train sft configs/qwen2.5-vl-7b/sft.toml", "awares train grpo configs/qwen2.5-vl-7b/grpo.toml"
SERVE = f"awares serve --port 8000 --model {POLICY_ID}"
VLLM = (
    f"vllm serve {POLICY_ID} --served-model-name awares-7b --enable-prefix-caching --limit-mm-per-prompt "
    """'{"image": 8}' --mm-processor-kwargs '{"max_pixels": 1605632}'"""
)
SERVE_OPENAI = (
    "awares serve --port 9000 --backend openai --url http://127.0.0.1:8000/v1 --served-model awares-7b "
    f"--processor {POLICY_ID}"
)
LMMS = f"lmms-eval --model awares --model_args pretrained={POLICY_ID} --tasks docvqa_val,chartqa"
LLAMA_BUILD, LLAMA_EXPORT = "bash scripts/llama_server.sh", "awares export gguf --out gguf"
LLAMA_SERVE = (
    f"{llama_server_binary()} -m gguf/model-f16.gguf --mmproj gguf/mmproj-f16.gguf --image-min-tokens 1 "
    "--image-max-tokens 2048 --jinja --alias awares --port 8080"
)
LLAMA_ASK = (
    f"{BENCH_ASK.removesuffix(' --json')} --backend openai --url http://127.0.0.1:8080/v1 --served-model awares "
    "--guided-calls"
)
LLAMA = (LLAMA_BUILD, LLAMA_EXPORT, LLAMA_SERVE, LLAMA_ASK)  # in this order, the server in the background
EXPORT_7B = ["export", "gguf", "--model", POLICY_ID, "--out", "gguf-7b"]  # docs/usage.md's, run beside the README's
PIPELINE = "awares pipeline configs/pipeline.toml --out runs/pipeline"

# The awares commands run in one process, in this order, each with these arguments added.
BOUNDS = {
    SYNTH: [],
    BENCH_ASK: [],
    f"{ASK} --model {POLICY_ID}": [],
    f"{ASK} --model {BASE_ID} --policy full": [],
    "awares eval": ["--limit", "4"],
    f"awares eval --task docvqa --model {POLICY_ID} --policy crops --out runs/docvqa": ["--limit", "2"],
    f"awares eval --table1 --model {POLICY_ID} --policy crops --out runs/table1": ["--limit", "2"],
    CURATE: [],
    SFT: ["--max-steps", "1"],
    GRPO: ["--max-steps", "1", "--prompts-per-step", "2", "--num-generations", "2", "--rollout-batch-size", "4"],
}
SERVERS = (SERVE, VLLM, SERVE_OPENAI)  # started together; vLLM's stand-in is `awares serve --raw`
LOCAL_TASK = "awares_readme"  # lmms-eval's docvqa_val and chartqa read the hub; a local task stands in
NOT_HERE = {
    'pip install -e ".[dev]" && pip install --no-deps lmms-eval==0.7.3 && awares demo': ".ci/run installs so",
    "python -m pytest -q": "this suite",
    PIPELINE: "90 min of training; tests/test_pipeline.py runs the pipeline on tiny configs",
}


def readme_commands() -> list[str]:
    """Each shell command of README's bash blocks: continuation lines joined, comments dropped, words
    as the shell splits them, joined by single spaces (quotes kept where a word needs them)."""
    commands, in_bash, pending = [], False, ""
    text = (ROOT / "README.md").read_text().replace("~/.cache/awares/", f"{Path.home()}/.cache/awares/")
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash:
            continue
        pending += line.rstrip().removesuffix("\\")
        if line.rstrip().endswith("\\"):
            continue
        if pending.strip() and not pending.lstrip().startswith("#"):
            commands.append(normal(pending))
        pending = ""
    return commands


def normal(command: str) -> str:
    """``command`` as the shell splits it, comments dropped, rejoined with single spaces."""
    return " ".join(w if w == "&&" else shlex.quote(w) for w in shlex.split(command, comments=True))


def readme_python() -> list[str]:
    blocks = (ROOT / "README.md").read_text().split("```python\n")[1:]
    return [block.split("```")[0] for block in blocks]


def test_every_readme_command_is_run_here_or_says_why_not():
    known = {normal(c) for c in [*BOUNDS, *SERVERS, LMMS, *LLAMA, *NOT_HERE]}
    assert set(readme_commands()) == known


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: str, cwd: Path, env: dict[str, str], ports: dict[str, int]) -> subprocess.Popen:
    """A README server command, its ports mapped to free ones (vLLM: port 8000, its default)."""
    words = shlex.split(command)
    if words[0] == "vllm":  # the stand-in serves the same model under the same name, as vLLM would
        words = ["awares", "serve", "--raw", "--model", words[2], "--model-name", "awares-7b", "--port", "8000"]
    for old, new in ports.items():
        words = [w.replace(old, str(new)) for w in words]
    return subprocess.Popen(words, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_healthy(port: int, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no server on port {port} after {seconds} s")


def data_url() -> str:
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def lmms_task(folder: Path) -> Path:
    """A local lmms-eval task of 2 synthetic samples (its dataset a parquet file beside it)."""
    samples = list(generate("test", 2))
    rows = {"question": [s.question for s in samples], "answer": [s.answers[0] for s in samples]}
    data = datasets.Dataset.from_dict({**rows, "image": [s.image for s in samples]})
    data.cast_column("image", datasets.Image()).to_parquet(str(folder / "test.parquet"))
    (folder / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['image'].convert('RGB')]\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n    return doc['question']\n\n"
        "def process_results(doc, results):\n    return {'exact': float(results[0].strip() == doc['answer'])}\n"
    )
    (folder / f"{LOCAL_TASK}.yaml").write_text(
        f"task: {LOCAL_TASK}\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'test.parquet'}\ntest_split: test\noutput_type: generate_until\n"
        "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n"
        "doc_to_target: answer\ngeneration_kwargs:\n  max_new_tokens: 16\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n  - metric: exact\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


# The awares commands in one interpreter (huggingface_hub reads HF_HOME when imported), then the
# README's first Python block, each with its exit code, stdout and stderr.
CHILD = """
import contextlib, io, json, runpy, sys
from awares.cli import main
done = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    done.append([code, out.getvalue(), err.getvalue()])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(sys.argv[2], {})
done.append([0, out.getvalue(), ""])
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's commands run in a fresh user folder, with what each printed."""
    home = hub_cache(tmp_path_factory.mktemp("hf_home"), {POLICY_ID: default_model_dir(), BASE_ID: default_base_dir()})
    user = tmp_path_factory.mktemp("user")
    shutil.copytree(ROOT / "configs", user / "configs")
    scene().save(user / "page.png")
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["AWARES_HOME"] = str(user / ".cache")
    vllm, ours, remote = free_port(), free_port(), free_port()
    port_maps = {SERVE: {"8000": ours}, VLLM: {"8000": vllm}, SERVE_OPENAI: {"8000": vllm, "9000": remote}}
    servers = {command: start(command, user, env, port_maps[command]) for command in SERVERS}
    task = lmms_task(tmp_path_factory.mktemp("lmms_task"))
    lmms = shlex.split(LMMS.replace("docvqa_val,chartqa", LOCAL_TASK))
    lmms += ["--include_path", str(task), "--limit", "2", "--output_path", str(user / "runs" / "lmms")]
    # beside the awares commands: each is mostly one core's imports
    lmms_run = subprocess.Popen(lmms, cwd=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        setup = ["synth", "--split", "train", "--n", "6", "--out", str(user / "my_train")]  # the data curate reads
        awares = [setup] + [shlex.split(c)[1:] + extra for c, extra in BOUNDS.items()] + [EXPORT_7B]
        child = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(awares), readme_python()[0]],
            cwd=user, capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr[-3000:]
        results = dict(zip(["setup", *BOUNDS, "export", "python"], json.loads(child.stdout.splitlines()[-1])))
        assert results["setup"][0] == 0, results["setup"][2]
        out, err = lmms_run.communicate(timeout=600)
        results["lmms"] = subprocess.CompletedProcess(lmms, lmms_run.returncode, out, err)
        for command, port in ((SERVE, ours), (VLLM, vllm), (SERVE_OPENAI, remote)):
            wait_healthy(port, servers[command])
        results["ports"] = {"ours": ours, "remote": remote}
        yield user, results
    finally:
        for process in [*servers.values(), lmms_run]:
            process.terminate()
            process.wait(timeout=30)


def test_the_tiny_policy_reads_its_benchmark_and_ask_takes_models_by_hub_id(readme_run):
    _, results = readme_run
    for command in (f"{ASK} --model {POLICY_ID}", f"{ASK} --model {BASE_ID} --policy full"):
        code, out, err = results[command]
        assert code == 0 and out.startswith("answer: ") and "RTR" in out, (command, err)
    assert results[SYNTH][0] == 0
    code, out, err = results[BENCH_ASK]
    asked = json.loads(out)
    assert code == 0 and asked["answer"] == "pink" and asked["crops"], err  # a detail: it calls, and reads it
    assert results[f"{ASK} --model {BASE_ID} --policy full"][1].count("RTR 1.00") == 1


def test_eval_runs_the_synthetic_split_one_task_and_table1_from_the_hub_cache(readme_run):
    user, results = readme_run
    for command in [c for c in BOUNDS if c.startswith("awares eval")]:
        code, _, err = results[command]
        assert code == 0, (command, err)
    for task in TASKS:
        assert (user / "runs" / "table1" / task / "crops.jsonl").read_text().count("\n") == 2
    table = (user / "runs" / "table1" / "table1.md").read_text()
    assert all(f"{name} acc" in table for name in ("ChartQA", "DocVQA", "OCRBench", "POPE", "RealWorldQA", "V*"))
    assert "docvqa" in results[f"awares eval --task docvqa --model {POLICY_ID} --policy crops --out runs/docvqa"][1]


def test_curate_then_sft_then_grpo_chain_through_relative_paths(readme_run):
    user, results = readme_run
    for command in (CURATE, SFT, GRPO):
        code, _, err = results[command]
        assert code == 0, (command, err[-2000:])
    rows = (user / "runs" / "curate-7b" / "trajectories.jsonl").read_text().splitlines()
    assert len(rows) >= 1
    assert (user / "runs" / "sft-7b" / "final" / "model.safetensors").is_file()
    assert (user / "runs" / "grpo-7b" / "final" / "model.safetensors").is_file()


def test_the_python_block_answers(readme_run):
    _, results = readme_run
    code, out, _ = results["python"]
    assert code == 0 and "view=" in out and "full=" in out, out  # answer, crops, rtr, tokens, seconds


def test_the_openai_client_block_talks_to_awares_serve(readme_run):
    _, results = readme_run
    block = readme_python()[1].replace("127.0.0.1:8000", f"127.0.0.1:{results['ports']['ours']}")
    namespace: dict = {}
    exec(block.replace("data:image/png;base64,...", data_url()), namespace)
    reply = namespace["reply"]
    assert reply.choices[0].message.content and 0 < reply.model_extra["awares"]["rtr"] <= 1.25


def test_awares_serve_runs_the_protocol_against_a_vllm_style_server(readme_run):
    _, results = readme_run
    parts = [{"type": "image_url", "image_url": {"url": data_url()}}, {"type": "text", "text": "What is written?"}]
    body = {"messages": [{"role": "user", "content": parts}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{results['ports']['remote']}/v1/chat/completions",
        json.dumps(body).encode(), {"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = json.loads(response.read())
    assert reply["choices"][0]["message"]["content"] and reply["awares"]["tokens"]["full"] > 0


def test_the_lmms_eval_console_command_runs_the_plugin(readme_run):
    _, results = readme_run
    run = results["lmms"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert LOCAL_TASK in run.stdout and "exact" in run.stdout


def test_the_llama_cpp_quickstart_answers_on_a_real_llama_server(tmp_path, monkeypatch, capsys):
    from awares.cli import main

    need_llama_server()
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    monkeypatch.chdir(tmp_path)  # the awares commands run in this process (no hub id is named)
    assert main(shlex.split(SYNTH)[1:]) == 0
    built = subprocess.run(shlex.split(LLAMA_BUILD), capture_output=True, text=True, timeout=60)
    assert built.returncode == 0 and built.stdout.strip() == str(llama_server_binary()), built.stderr
    capsys.readouterr()
    assert main(shlex.split(LLAMA_EXPORT)[1:]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == LLAMA_SERVE  # the command it prints is the README's
    port = free_port()
    server = subprocess.Popen(
        shlex.split(LLAMA_SERVE.replace("8080", str(port))), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_healthy(port, server, seconds=60)
        code = main(shlex.split(LLAMA_ASK.replace("8080", str(port)))[1:] + ["--json"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["answer"] == "pink" and result["crops"]  # as the in-process backend answers it


def test_export_takes_the_released_checkpoint_by_hub_id_from_the_cache(readme_run):
    user, results = readme_run
    code, out, err = results["export"]
    if not (llama_cpp_dir() / "src" / "convert_hf_to_gguf.py").is_file() and not os.environ.get("CI"):
        pytest.skip("no llama.cpp source here: `bash scripts/llama_server.sh` fetches it")
    assert code == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[:2] == ["gguf-7b/model-f16.gguf", "gguf-7b/mmproj-f16.gguf"]
    assert "--image-min-tokens 1 --image-max-tokens 2048" in lines[-1]
    assert all((user / "gguf-7b" / name).stat().st_size > 500_000 for name in ("model-f16.gguf", "mmproj-f16.gguf"))
