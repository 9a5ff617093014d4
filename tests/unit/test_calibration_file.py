"""The --step-time-scale flags take a correction as text or as the file `tessera calibrate` wrote."""

from __future__ import annotations

import pytest

from tessera.cli.calibration_file import read_calibration, step_time_scale_text
from tessera.engine_model.perf.step_scale import StepScale


def test_a_calibration_file_reads_as_the_flag_text(tmp_path):
    path = tmp_path / "cpu.yaml"
    path.write_text("model: smollm2\nstep_time_scale:\n  prefill: 1.29\n  decode: 1.18\n")
    assert read_calibration(path) == "prefill=1.29,decode=1.18"
    assert StepScale.parse(step_time_scale_text(str(path))) == StepScale(prefill=1.29, decode=1.18)


def test_text_passes_through_and_a_missing_file_is_left_to_the_parser():
    assert step_time_scale_text("prefill=2,decode=1.5") == "prefill=2,decode=1.5"
    assert step_time_scale_text("") == ""
    with pytest.raises(ValueError):
        StepScale.parse(step_time_scale_text("/no/such/file.yaml"))


@pytest.mark.parametrize("body", ["hello: world\n", "[1, 2]\n", "step_time_scale: 3\n", "{unclosed\n"])
def test_other_files_are_refused_naming_the_file(tmp_path, body):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match="bad.yaml"):
        read_calibration(path)
