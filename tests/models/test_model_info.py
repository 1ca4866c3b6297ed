"""`renderocc model-info`: parameter and FLOP tables."""

import argparse

from renderocc.config import get_preset
from renderocc.models import build_model
from renderocc.models.info import add_arguments, forward_flops, parameter_counts, random_batch, run


def test_counts_add_up_and_flops_are_attributed_to_modules():
    preset = get_preset("demo").replace(data=dict(image_size=(64, 96)))
    model = build_model(preset).eval()
    params = parameter_counts(model)
    top_level = [name for name, _ in model.named_children()]
    assert sum(params[name] for name in top_level) == params["total"] > 0
    flops = forward_flops(model, random_batch(preset))
    assert flops["backbone"] > flops["heads"] > 0
    assert sum(flops[name] for name in top_level) == flops["total"]


def test_cli_prints_a_table(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["demo", "--image-size", "64", "96", "--device", "cpu"])) == 0
    out = capsys.readouterr().out
    assert f"{get_preset('demo').model.backbone}, images 64x96" in out
    assert "total" in out and "GFLOPs" in out
