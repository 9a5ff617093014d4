"""Read the diurnal envelope `azure2024-code` off the figure the Azure dataset publishes.

The week-long Azure LLM inference trace of 2024 (AzureLLMInferenceTrace_code_1week.csv, 16.8 M
rows) is not reachable from this machine, but the dataset's own notebook,
`analysis/AzureLLMInferenceDataset2024.ipynb` in github.com/Azure/AzurePublicDataset, stores its
figure of invocations per minute ("Coding", 2024-05-10 to 05-17 UTC, y from 0 with gridlines every
1,000) as a PNG. This reads that figure: the plotted line's middle in each pixel column, scaled
by the gridlines, averaged per UTC hour over the four full weekdays (Monday 13 to Thursday 16
May). It prints the 24 values that tessera.sim.workloads.AZURE2024_CODE_WEEKDAY holds, and the
week's mean against the trace's row count (16,803,695 over 7 days: 1,667 a minute) as a check.

    .venv/bin/python benchmarks/digitise_azure2024_envelope.py AzureLLMInferenceDataset2024.ipynb
"""

from __future__ import annotations

import argparse
import base64
import io
import json

import matplotlib.image as mpimg  # reads the PNG (matplotlib is already the plots' dependency)
import numpy as np

from tessera.sim.workloads import AZURE2024_CODE_WEEKDAY

DAYS = 7  # the figure spans 2024-05-10 00:00 to 05-17 00:00 UTC
WEEKDAYS = range(3, 7)  # Monday 13 to Thursday 16 May
TRACE_ROWS_PER_MINUTE = 16_803_695 / (7 * 24 * 60)
LINE_RGB = np.array([31, 119, 180]) / 255.0  # matplotlib's first colour, the plotted line
GRID_RGB = np.array([176, 176, 176]) / 255.0  # the gridlines
GRID_STEP = 1000.0  # invocations a minute between gridlines


def coding_figure(notebook: str) -> np.ndarray:
    """The RGB pixels of the notebook's "Coding" invocations-per-minute figure."""
    cells = json.load(open(notebook))["cells"]
    for cell in cells:
        if "plt_invocations_time" not in "".join(cell.get("source", "")):
            continue
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:  # the first figure of the loop over traces is "Coding"
                return mpimg.imread(io.BytesIO(base64.b64decode(png)), format="png")[:, :, :3]
    raise SystemExit(f"{notebook}: no invocations-per-minute figure")


def per_minute(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hours since the figure's start, invocations a minute) for each pixel column of the plot."""
    dark = img.sum(axis=2) < 0.6
    rows = np.nonzero(dark.sum(axis=1) > 0.6 * img.shape[1])[0]  # the frame's top and bottom
    cols = np.nonzero(dark.sum(axis=0) > 0.6 * (rows[-1] - rows[0]))[0]  # its left and right
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    grey = np.all(np.abs(img - GRID_RGB) < 0.08, axis=2)
    grid = np.nonzero(grey[:, left:right].sum(axis=1) > 0.25 * (right - left))[0]
    px_per_step = float(np.median(np.diff(grid)))  # y starts at 0 on the frame's bottom
    line = np.all(np.abs(img - LINE_RGB) < 0.16, axis=2)
    hours, values = [], []
    for x in range(left + 1, right):
        ys = np.nonzero(line[top:bottom, x])[0] + top
        if len(ys):
            middle = ((bottom - ys.min()) + (bottom - ys.max())) / 2.0
            hours.append((x - left) / (right - left) * DAYS * 24.0)
            values.append(middle / px_per_step * GRID_STEP)
    return np.array(hours), np.array(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", help="analysis/AzureLLMInferenceDataset2024.ipynb of Azure/AzurePublicDataset")
    args = ap.parse_args()
    hours, values = per_minute(coding_figure(args.notebook))
    print(
        f"week: {values.mean():.0f} invocations a minute read off the figure; "
        f"the trace's rows give {TRACE_ROWS_PER_MINUTE:.0f}"
    )
    weekday = np.isin((hours // 24).astype(int), list(WEEKDAYS))
    hourly = [float(values[weekday & (hours % 24 // 1 == h)].mean()) for h in range(24)]
    print("weekday, invocations a minute per UTC hour:", ", ".join(f"{v:.0f}" for v in hourly))
    print(f"peak / trough {max(hourly) / min(hourly):.1f}, mean / peak {np.mean(hourly) / max(hourly):.3f}")
    held = np.array(AZURE2024_CODE_WEEKDAY, dtype=float)
    print(f"largest difference from AZURE2024_CODE_WEEKDAY: {np.max(np.abs(np.array(hourly) / held - 1)):.1%}")


if __name__ == "__main__":
    main()
