"""Smoke test of benchmarks/compare_backprop.py on the scikit-learn digits."""

import importlib.util
import json
import os
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "compare_backprop.py"

BEFORE = "# Benchmarks\n\nText before the region.\r\nKept as is.\n\n"
AFTER = "\n\n## Later section\n\nText after the region, no final newline"


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_backprop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare_backprop():
    return _load_script()


def _table_rows(lines, first_cell):
    """Returns the Markdown table rows that follow the header row starting with `first_cell`."""
    for index, line in enumerate(lines):
        if line.startswith(f"| {first_cell} |"):
            rows = [line]
            for row in lines[index + 1:]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            return rows
    return []


def test_smoke_run_writes_table_and_keeps_text(compare_backprop, tmp_path):
    output = tmp_path / "benchmarks.md"
    old_region = (
        f"{compare_backprop.START_MARKER}\nold generated text\n{compare_backprop.END_MARKER}"
    )
    output.write_bytes((BEFORE + old_region + AFTER).encode("utf-8"))
    cache = tmp_path / "cache" / "results.json"
    plot_dir = tmp_path / "study"

    arguments = [
        "--dataset", "digits",
        "--depth", "8",
        "--num-aux", "2",
        "--seeds", "0",
        "--epochs", "1",
        "--batch-size", "64",
        "--methods", "standard,mwbp",
        "--sections", "methods",
        "--output", str(output),
        "--cache", str(cache),
        "--plot-dir", str(plot_dir),
    ]
    assert compare_backprop.main(arguments) == 0

    text = output.read_bytes().decode("utf-8")
    assert text.startswith(BEFORE + compare_backprop.START_MARKER + "\n")
    assert text.endswith(compare_backprop.END_MARKER + AFTER)
    assert "old generated text" not in text

    region = text[len(BEFORE):-len(AFTER)]
    lines = region.splitlines()
    rows = _table_rows(lines, "setting")
    # Header, separator, and one row per method.
    assert len(rows) == 4
    header_cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header_cells == [
        "setting", "head 0 (depth 3)", "head 1 (depth 5)", "head 2 (depth 8)"
    ]
    assert rows[2].startswith("| standard BP |")
    assert rows[3].startswith("| MW-BP |")
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4
        for cell in cells[1:]:
            assert 0.0 <= float(cell) <= 100.0

    assert "### Loss-weight exponent nu" not in region
    assert "--dataset digits" in region

    for name in ("final_head_test_error.png", "shallowest_head_test_error.png"):
        assert (plot_dir / name).stat().st_size > 0
        link = os.path.relpath(plot_dir / name, tmp_path)
        assert f"]({link})" in region

    stored = json.loads(cache.read_text(encoding="utf-8"))
    assert len(stored["runs"]) == 2
    assert len(stored["invocations"]) == 1

    # A second invocation finds both runs in the cache and trains nothing.
    assert compare_backprop.main(arguments) == 0
    rerun = json.loads(cache.read_text(encoding="utf-8"))
    assert rerun["runs"] == stored["runs"]
    assert len(rerun["invocations"]) == 2
    rewritten = output.read_bytes().decode("utf-8")
    assert rewritten.count(compare_backprop.START_MARKER) == 1
    assert rewritten.startswith(BEFORE)
    assert rewritten.endswith(AFTER)


def test_region_appended_when_markers_missing(compare_backprop):
    text = "# Title\n\nSome text.\n"
    result = compare_backprop.replace_region(text, ["generated"])
    assert result.startswith(text)
    assert result.endswith(
        f"{compare_backprop.START_MARKER}\ngenerated\n{compare_backprop.END_MARKER}\n"
    )


def test_region_rejects_single_marker(compare_backprop):
    text = f"# Title\n{compare_backprop.START_MARKER}\nno end marker\n"
    with pytest.raises(ValueError, match="only one of the markers"):
        compare_backprop.replace_region(text, ["generated"])


def test_default_num_aux_values_for_depth_26(compare_backprop):
    # L = 26: K = 5 keeps tau = ceil(26 / 6) = 5, K = 8 gives tau = 3.
    assert compare_backprop.default_num_aux_values(26, 4) == [1, 2, 4, 5, 8]
