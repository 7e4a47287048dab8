"""bench photos' question for a CSN model on photos (issue #30): does its category aspect follow
colour? Measured on the demo shop's test garments photographed again in colours training never saw."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.photos import ENTRIES, UNSEEN_SHOP_COLOURS, run_folder, unseen_colour_accuracy
from contract import InputSpec
from training.data.demo_catalogue import COLOURS, write_demo_catalogue


class TwoAspects(nn.Module):
    """A stand-in CSN model: its category aspect is either the photo's mean colour (a model that
    follows colour) or its normalised luminance pattern (one that reads shape); colour is the mean."""

    def __init__(self, category_from_colour: bool) -> None:
        super().__init__()
        self.category_from_colour = category_from_colour

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()
        colour = x.mean(dim=(1, 2))
        pattern = nn.functional.adaptive_avg_pool2d(x.mean(-1)[:, None], 8).flatten(1)
        pattern = pattern - pattern.mean(1, keepdim=True)
        category = nn.functional.pad(colour, (0, 61)) if self.category_from_colour else pattern
        return colour, torch.stack([category, nn.functional.pad(colour, (0, 61))], 1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos") / "shop"
    write_demo_catalogue(folder, per_class=20, size=64, seed=0)  # 40 test photos, 4 per category
    return folder


def test_each_entry_trains_in_its_own_folder():
    """Entries of one config with as many overrides must not share (and so refuse) a run folder."""
    assert len({run_folder(kind, overrides) for _, kind, overrides in ENTRIES}) == len(ENTRIES)
    assert run_folder("photos", ("optim.epochs=4",)) != run_folder("photos", ("optim.epochs=8",))
    assert run_folder("photos", ()) == "photos"


def test_the_unseen_colours_are_not_the_shops():
    assert not set(UNSEEN_SHOP_COLOURS) & set(COLOURS)
    assert not set(UNSEEN_SHOP_COLOURS.values()) & set(COLOURS.values())


def test_a_category_aspect_that_follows_colour_fails_and_one_that_reads_shape_does_better(shop):
    saved = SimpleNamespace(input=InputSpec(height=64, width=64, channels=3, fit="content", pad_value=255),
                            aspects=["category", "colour"])
    follows_colour = unseen_colour_accuracy(TwoAspects(True), saved, shop, triplets=500)
    reads_shape = unseen_colour_accuracy(TwoAspects(False), saved, shop, triplets=500)
    # The anchor and the other category share the unseen colour: a colour follower puts them together.
    assert follows_colour < 0.2
    assert reads_shape > follows_colour + 0.3
    assert unseen_colour_accuracy(TwoAspects(False), saved, shop, triplets=500) == reads_shape  # seeded
