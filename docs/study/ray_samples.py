"""How many samples the training rays take through the grid box, and how many lie before each ray's LiDAR
point plus a margin: what cutting rays short behind their label point would save the renderer, whose cost
grows with the samples a ray keeps (issue 18, item 3; BENCHMARKS.md, "Left open").

Geometry only (the metric convention's sample layout, `render.sampling`), no network: a field that keeps
every sample in the box, as the study's networks do (about 140 per ray), costs the box column; one cut at
label depth + margin costs that margin's column. Run on a prepared synthetic set, e.g. the demo's:

    python docs/study/ray_samples.py --data renderocc-demo/data --batches 4
"""

import argparse

import torch

from renderocc.render.sampling import ray_box_intersection, sample_counts
from renderocc.train import resolve_preset
from renderocc.train_utils.data import open_index, train_loader

MARGINS = (0.4, 1.0, 2.0, 4.0, 8.0)  # metres past the LiDAR point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset root")
    parser.add_argument("--preset", default="r50-256x704", help="preset whose grid and rays are counted")
    parser.add_argument("--batches", type=int, default=4, help="training batches of 2 to look at")
    args = parser.parse_args()

    preset = resolve_preset(args.preset)
    step = preset.render.step_size
    loader = iter(train_loader(open_index(args.data), preset.data, 2, 0, 0, 0, 0, 1, pin_memory=False))
    in_box, before = [], {m: [] for m in MARGINS}
    for _ in range(args.batches):
        batch = next(loader)
        valid = batch["ray_valid"]
        depth = batch["ray_depth"][valid]
        t_near, t_far = ray_box_intersection(batch["rays_o"][valid], batch["rays_d"][valid], preset.grid)
        in_box.append(sample_counts(t_near, t_far, step).float())
        for m in MARGINS:
            before[m].append(sample_counts(t_near, torch.minimum(t_far, depth + m), step).float())
    box = torch.cat(in_box)
    print(f"{args.preset}: {len(box):,} labelled rays, step {step} m, grid {preset.grid.shape}")
    print(f"samples in the box: {box.mean():.1f} per ray")
    for m, counts in before.items():
        cut = torch.cat(counts).mean()
        print(f"before the LiDAR point + {m:g} m: {cut:.1f} per ray ({cut / box.mean():.0%})")


if __name__ == "__main__":
    main()
