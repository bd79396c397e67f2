"""The benchmark's memory and throughput arithmetic: peaks, ratios, the training run's windows.

The measurements themselves run in `tests/test_device_check.py` (the dry run
of bench/device_check.sh, which starts a process per memory measurement);
these pin the pieces that turn them into the table's numbers.
"""

import mmap

import numpy as np
import pytest

from bench import device_check, memory, step_memory


def test_rss_monitor_sees_an_allocation_freed_before_the_block_ends():
  if not memory.reset_peak_rss():
    pytest.skip("no /proc/self/clear_refs: the peak is only sampled here")
  size = 256 * 2 ** 20
  with memory.RssMonitor(interval_s=10.0) as monitor:  # the sampler alone would see none of it
    # An anonymous mapping of its own, not malloc: its pages are new to the process whatever the
    # allocator still holds from earlier tests in this worker, and closing it unmaps them.
    block = mmap.mmap(-1, size)
    np.frombuffer(block, dtype=np.uint8)[::mmap.PAGESIZE] = 1  # one write per page makes each resident
    held_mb = memory.current_rss_mb() - monitor.start_mb  # what the kernel counted while it was held
    block.close()
    assert memory.current_rss_mb() - monitor.start_mb < held_mb / 2  # the pages really went
  assert held_mb > size / 2 ** 20 / 2, held_mb
  assert monitor.delta_mb >= held_mb - 4, (monitor.delta_mb, held_mb)


def test_memory_ratios_compare_pcgrad_with_summed_and_ours_with_the_peer():
  row = lambda impl, step, resident, peak: step_memory.MemoryRow("m", impl, step, "natural", "float32", "RSS",
                                                                 resident, peak)
  rows = [row("ours", "summed", 1000, 1200), row("ours", "pcgrad", 1000, 1500),
          row("hf-sdpa", "summed", 800, 1000), row("hf-sdpa", "pcgrad", 800, 1100)]
  ratios = {q["name"]: q for q in step_memory.memory_ratios(rows)}
  assert set(ratios) == {"ours pcgrad / ours summed", "hf-sdpa pcgrad / hf-sdpa summed",
                         "ours summed / hf-sdpa summed", "ours pcgrad / hf-sdpa pcgrad"}
  ours = ratios["ours pcgrad / ours summed"]
  assert ours["peak"] == pytest.approx(1.25) and ours["step"] == pytest.approx(2.5)
  assert ours["target"] == step_memory.TARGET_PCGRAD_OVER_SUMMED and ours["met"]
  assert ratios["ours pcgrad / hf-sdpa pcgrad"]["peak"] == pytest.approx(1500 / 1100)
  assert all(q["target"] is None for name, q in ratios.items() if name != "ours pcgrad / ours summed")
  failed = rows[:1] + [step_memory.MemoryRow("m", "ours", "pcgrad", "natural", "float32", note="n/a (exit 1)")]
  assert step_memory.memory_ratios(failed) == []  # a failed measurement gives no ratio
  assert "n/a (exit 1)" in step_memory.format_memory_table(failed)


def test_steady_throughput_leaves_out_the_first_window_and_weights_by_time():
  costs = [{"examples": 10, "flops": 100.0}] * 6
  windows = [{"step": 2, "examples_per_s": 1.0},  # compiling: left out
             {"step": 4, "examples_per_s": 10.0},  # 20 examples in 2 s
             {"step": 6, "examples_per_s": 20.0}]  # 20 examples in 1 s
  result = device_check.steady_throughput(windows, costs)
  assert result["examples_per_s"] == pytest.approx(40 / 3)
  assert result["flop_per_s"] == pytest.approx(400 / 3)
  assert result["median_window_examples_per_s"] == pytest.approx(15.0)
  assert result["steps"] == 4


@pytest.mark.parametrize("kind, tflops", [("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 80GB HBM3", 989.4),
                                          ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0),
                                          ("TPU v5 lite", 197.0), ("TPU v4", 275.0), ("cpu", None)])
def test_bf16_spec_peak_by_device_kind(kind, tflops):
  assert device_check.spec_bf16_peak_tflops(kind) == tflops
