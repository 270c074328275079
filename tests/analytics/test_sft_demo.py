"""``tdlog demo --task sft`` in a small configuration: a tiny causal LM fine-tuned with TRL's SFTTrainer on
corrupted instruction data with control examples; the controls' AUM finds the corrupted completions."""

from __future__ import annotations

import pytest

from tdlog.demo.cli import main
from tdlog.demo.sft import SFTDemoConfig, make_examples, run_sft_demo


@pytest.mark.parametrize("corruption", ["random", "off-by-one"])
def test_the_controls_find_the_corrupted_completions(tmp_path, corruption) -> None:
    """Random words: the controls' AUM cutoff finds them and counts them. A systematic slip (off-by-one) is
    partly learned as a pattern, so its AUM sits above most controls': what the cutoff flags is right, but it
    misses some, and the AUL mixture, which needs no controls, finds them all (benchmarks/sft_detection.py)."""
    config = SFTDemoConfig(noise_rate=0.2, corruption=corruption, seed=1, retrain=False)  # the defaults otherwise
    result = run_sft_demo(tmp_path, config)
    detection = {row["method"]: row for row in result.detection.iter_rows(named=True)}
    aum, aul = detection["AUM below the controls' cutoff"], detection["AUL, two-component mixture"]
    rates = dict(zip(result.noise_rates["estimate"], result.noise_rates["noise_rate"], strict=True))
    if corruption == "random":
        assert aum["f1"] >= 0.8 and abs(rates["threshold estimate"] - rates["true"]) <= 0.05
    else:
        assert aum["precision"] >= 0.9 and aul["f1"] >= 0.8 and abs(rates["gmm estimate"] - rates["true"]) <= 0.05
    assert len(result.windows) == 2 and all(w is not None for w in result.windows) and result.report.exists()
    assert '"completion"' in result.report.read_text()  # the examples' text travels with the page


def test_the_corruptions_are_what_they_say() -> None:
    config = SFTDemoConfig(noise_rate=0.25, corruption="off-by-one", examples=100, heldout=10)
    table, heldout, answers = make_examples(config)
    bad = table.filter(table["corrupted"])
    assert bad.height == 25 and len(heldout) == len(answers) == 10
    assert (answers == (heldout + 1) % 32).all()
    for row in bad.iter_rows(named=True):
        words = [int(w[1:]) for w in row["prompt"].split()]
        assert row["completion"] == " " + " ".join(f"w{(w + 2) % 32}" for w in words)
        assert row["true_completion"] == " " + " ".join(f"w{(w + 1) % 32}" for w in words)
    shuffled = make_examples(SFTDemoConfig(noise_rate=0.25, corruption="random", examples=100, heldout=10))[0]
    wrong = shuffled.filter(shuffled["corrupted"])
    assert wrong.height == 25 and (wrong["completion"] != wrong["true_completion"]).all()


def test_bad_demo_options_are_one_line_errors(capsys) -> None:
    assert main(["--task", "sft", "--epochs", "0"]) == 1
    assert capsys.readouterr().err == "tdlog demo: error: --epochs: expected a positive number, got 0\n"
    assert main(["--task", "sft", "--noise-rate", "0.95"]) == 1
