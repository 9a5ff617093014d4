"""`tessera bench` speaks `vllm bench serve`: one command line parses in both (vLLM's own parser, imported
from the installed vLLM without starting an engine), and a run against a sim cluster saves vLLM's keys."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.bench.cli import add_arguments
from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

REPO = Path(__file__).resolve().parents[2]
# What real `vllm bench serve --save-result` wrote against the router (benchmarks/vllm_bench_serve.py).
VLLM_RESULT = REPO / "benchmarks" / "results" / "vllm_bench_serve_router.json"

CONVERSATIONS = [
    {"id": "a", "conversations": [{"from": "human", "value": "What is the capital of France? Answer briefly."},
                                  {"from": "gpt", "value": "Paris is the capital of France, on the Seine."}]},
    {"id": "b", "conversations": [{"from": "human", "value": "Name three primary colours of light, please."},
                                  {"from": "gpt", "value": "Red, green and blue are the additive primaries."}]},
    {"id": "c", "conversations": [{"from": "human", "value": "hi"}]},  # one turn: skipped, as vLLM skips it
]  # fmt: skip


def command_line(base_url: str, tokenizer: str, dataset: Path, out: Path) -> list[str]:
    return [
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", TINY, "--tokenizer", tokenizer,
        "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--sharegpt-output-len", "6",
        "--num-prompts", "8", "--request-rate", "20", "--burstiness", "1.0", "--max-concurrency", "4",
        "--seed", "3", "--temperature", "0", "--num-warmups", "1",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99", "--goodput", "ttft:60000",
        "--label", "compat", "--metadata", "run=ci",
        "--save-result", "--result-dir", str(out), "--result-filename", "compat.json",
    ]  # fmt: skip


def test_one_command_line_parses_in_tessera_bench_and_in_vllm_bench_serve(tmp_path):
    serve = pytest.importorskip("vllm.benchmarks.serve")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    vllm_parser = FlexibleArgumentParser()
    serve.add_cli_args(vllm_parser)
    ours = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(ours)
    random_run = ["--model", TINY, "--dataset-name", "random", "--random-input-len", "32", "--random-output-len"]
    random_run += ["16", "--random-range-ratio", "0.25", "--random-prefix-len", "8", "--ignore-eos", "--disable-tqdm"]
    random_run += ["--save-detailed", "--request-id-prefix", "ci-", "--host", "127.0.0.1", "--port", "8001"]
    for argv in (command_line("http://127.0.0.1:8000", "/m", tmp_path / "sg.json", tmp_path), random_run):
        theirs, mine = vars(vllm_parser.parse_args(argv)), vars(ours.parse_args(argv))
        # Every flag given means the same to both (vLLM's dataset_name is our dataset).
        mine["dataset_name"] = mine["dataset"]
        given = {a.lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
        given = {"warmup" if g == "num_warmups" else g for g in given}
        theirs["warmup"] = theirs["num_warmups"]
        for dest in sorted(given):
            assert mine[dest] == theirs[dest], dest
    # Neither ignores end-of-sequence unless told.
    assert vllm_parser.parse_args(["--model", TINY]).ignore_eos is False
    assert ours.parse_args(["--model", TINY]).ignore_eos is False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SimCluster.running(tmp_path_factory.mktemp("bench-compat")) as c:
        yield c


def test_a_sharegpt_run_on_a_sim_cluster_saves_vllms_keys(cluster, tmp_path):
    from tessera.runtime.models.tokenizer import ModelTokenizer

    tokenizer = resolve_tiny()
    dataset = tmp_path / "sharegpt.json"
    dataset.write_text(json.dumps(CONVERSATIONS))
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "bench", *command_line(cluster.base_url, tokenizer, dataset, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "8/8" in out.stderr  # the progress bar
    saved = json.loads((tmp_path / "compat.json").read_text())

    vllm_keys = set(json.loads(VLLM_RESULT.read_text()))
    assert vllm_keys <= set(saved), vllm_keys - set(saved)
    # As vLLM without --save-detailed: no per-request lists.
    assert not {"ttfts", "itls", "input_lens", "output_lens", "generated_texts", "errors"} & set(saved)
    assert (saved["completed"], saved["failed"], saved["num_prompts"], saved["run"]) == (8, 0, 8, "ci")
    # The two usable conversations, drawn with repeats to 8: their prompts' tokens, 6 generated for each.
    tok = ModelTokenizer(tokenizer)
    lens = {len(tok.encode(c["conversations"][0]["value"])) for c in CONVERSATIONS[:2]}
    assert min(lens) * 8 <= saved["total_input_tokens"] <= max(lens) * 8
    assert saved["total_output_tokens"] == 48
    assert 0 < saved["p50_ttft_ms"] <= saved["p99_ttft_ms"]
    # vLLM's peaks count per one-second bucket (requests one after another in a second both count).
    assert saved["max_output_tokens_per_s"] >= 6 and saved["max_concurrent_requests"] >= 1
    assert saved["request_goodput"] == pytest.approx(saved["request_throughput"])


def test_bench_refuses_what_it_cannot_run_by_name(tmp_path):
    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tessera.cli", "bench", "--model", TINY, "--tokenizer", resolve_tiny(), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = bench("--dataset-name", "sharegpt")
    assert missing.returncode != 0 and "--dataset-path" in missing.stderr
    unknown = bench("--percentile-metrics", "ttft,nope")
    assert unknown.returncode != 0 and "nope" in unknown.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    bad_file = bench("--dataset-name", "sharegpt", "--dataset-path", str(broken))
    assert bad_file.returncode != 0 and str(broken) in bad_file.stderr and "Traceback" not in bad_file.stderr


def resolve_tiny() -> str:
    """The tiny model's tokenizer folder, prepared (weights-free) if this machine has none yet."""
    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve

    return ensure_model(resolve(TINY), weights=False)
