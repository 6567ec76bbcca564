"""Text table for ``python -m smallcovid bench`` with ratios against U-Net."""

from __future__ import annotations


def _num(value: float | None, fmt: str, width: int) -> str:
    """``value`` formatted with ``fmt``, or a right-aligned dash for a skipped figure (None)."""
    return f"{'—':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def _speedup(m: dict, fast: str = "train_sps_bf16", base: str = "train_sps_fp32") -> float | None:
    """Training throughput ``fast`` over ``base`` (bf16 over fp32 by default), or None when either
    was not measured."""
    a, b = m.get(fast), m.get(base)
    return a / b if a and b else None


def format_bench(doc: dict) -> str:
    """The bench table (one row per model, ratios against ``unet``); a missing figure (``epoch_s`` None,
    no ``volume_s``) shows as a dash."""
    models = doc["models"]
    ref = models.get("unet")
    head = (f"{'model':<15}{'params':>11}{'GFLOPs':>8}{'MB':>7}{'latency ms':>11}{'img/s':>7}"
            f"{'epoch s':>9}{'peak MB':>9}{'volume s':>10}{'vol MB':>8}{'vol +MB':>8}{'train/s':>8}{'bf16/s':>8}"
            f"{'NCHW/s':>8} | vs U-Net: params latency epoch | bf16 speed-up | channels-last speed-up")
    lines = [f"device: {doc['device']}", head, "-" * len(head)]
    for name, m in models.items():
        ratio = ""
        if ref:
            epoch = m["epoch_s"] / ref["epoch_s"] if m.get("epoch_s") and ref.get("epoch_s") else None
            ratio = (f"{m['params'] / ref['params']:>7.3f} {m['latency_ms'] / ref['latency_ms']:>7.2f} "
                     f"{_num(epoch, '.2f', 6)}")
        lines.append(f"{name:<15}{m['params']:>11,d}{m['flops'] / 1e9:>8.2f}{m['weights_mb']:>7.1f}"
                     f"{m['latency_ms']:>11.1f}{m['throughput_per_s']:>7.1f}{_num(m.get('epoch_s'), '.1f', 9)}"
                     f"{m['peak_mem_mb']:>9.0f}{_num(m.get('volume_s'), '.2f', 10)}"
                     f"{_num(m.get('volume_peak_mb'), '.0f', 8)}{_num(m.get('volume_model_mb'), '.0f', 8)}"
                     f"{_num(m.get('train_sps_fp32'), '.1f', 8)}"
                     f"{_num(m.get('train_sps_bf16'), '.1f', 8)}{_num(m.get('train_sps_fp32_nchw'), '.1f', 8)}"
                     f" | {ratio} | {_num(_speedup(m), '.2f', 5)}"
                     f" | {_num(_speedup(m, 'train_sps_fp32', 'train_sps_fp32_nchw'), '.2f', 5)}")
    for name, m in models.items():
        if m.get("ensemble_latency_ms"):
            vs = f" (one U-Net: {ref['latency_ms']:.1f} ms)" if ref and name != "unet" else ""
            lines.append(f"fold ensemble of {name} ({m['ensemble_size']} models): "
                         f"{m['ensemble_latency_ms']:.1f} ms per 512x512 slice{vs}")
    for name, m in models.items():
        if m.get("tta", "none") != "none" and m.get("latency_one_pass_ms"):
            lines.append(f"{name} averages its card's test-time views ({m['tta']}): {m['latency_ms']:.1f} ms per "
                         f"512x512 slice, {m['latency_one_pass_ms']:.1f} ms in one pass")
    p = doc.get("pipeline")
    if p:
        lines.append(f"all {len(p['models'])} models on one 512x512 upload (decode, preprocess, forward, overlays): "
                     f"{p['pipeline_s']:.2f} s")
    v = doc.get("volume")
    if v:
        d, h, w = v["shape"]
        lines.append(f"volume: one {d}x{h}x{w} int16 HU NIfTI ({v['file_mb']} MB .nii.gz) through predict: read, lungs, "
                     "framing, model, 3 NIfTI masks + report; vol MB = peak resident memory while the model's forward "
                     "passes run (sampled; the decoded volume and lungs are resident then), vol +MB = how far "
                     "those passes raised it")
    lines.append("latency: one 512x512 slice incl. resize in/out, median after warm-up; "
                 + ("epoch: one pass over the labeled set, batch 4, at each model's input size"
                    if all(m.get("epoch_s") is not None for m in models.values())
                    else "epoch: skipped (no data folder: pass --data DIR or set SMALLCOVID_DATA_DIR)")
                 + "; train/s, bf16/s: training samples per second (160x160, batch 4, synthetic) in fp32 and bf16, "
                   "in the memory format training uses (channels-last for dense models on CPU); NCHW/s: fp32 in NCHW"
                 + "; untrained weights where none are shipped")
    return "\n".join(lines)
