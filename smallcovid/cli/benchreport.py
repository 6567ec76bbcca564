"""Text table for ``python -m smallcovid bench`` with ratios against U-Net."""

from __future__ import annotations


def format_bench(doc: dict) -> str:
    models = doc["models"]
    ref = models.get("unet")
    head = (f"{'model':<15}{'params':>11}{'GFLOPs':>8}{'MB':>7}{'latency ms':>11}{'img/s':>7}"
            f"{'epoch s':>9}{'peak MB':>9} | vs U-Net: params latency epoch")
    lines = [f"device: {doc['device']}", head, "-" * len(head)]
    for name, m in models.items():
        ratio = ""
        if ref:
            ratio = (f"{m['params'] / ref['params']:>7.3f} {m['latency_ms'] / ref['latency_ms']:>7.2f} "
                     f"{m['epoch_s'] / ref['epoch_s']:>6.2f}")
        lines.append(f"{name:<15}{m['params']:>11,d}{m['flops'] / 1e9:>8.2f}{m['weights_mb']:>7.1f}"
                     f"{m['latency_ms']:>11.1f}{m['throughput_per_s']:>7.1f}{m['epoch_s']:>9.1f}"
                     f"{m['peak_mem_mb']:>9.0f} | {ratio}")
    p = doc.get("pipeline")
    if p:
        lines.append(f"all {len(p['models'])} models on one 512x512 upload (decode, preprocess, forward, overlays): "
                     f"{p['pipeline_s']:.2f} s")
    lines.append("latency: one 512x512 slice incl. resize in/out, median after warm-up; "
                 "epoch: 50 slices, batch 4, at each model's input size; untrained weights where none are shipped")
    return "\n".join(lines)
