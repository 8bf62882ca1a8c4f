"""The names a checkpoint's entries are checked against (models/ repeats them, not importing data/, train/ or
infer/) are those of the modules that write and read them."""

from __future__ import annotations

from unetkit.data.masks import MASK_MODES
from unetkit.data.normalize import NORMALIZATIONS
from unetkit.infer.instances import INSTANCE_METHODS
from unetkit.models import checkpoint
from unetkit.train.config_rules import TASKS


def test_checked_names_are_those_of_the_writers():
    assert set(checkpoint.MASK_MODES) == set(MASK_MODES) - {"auto"}
    assert checkpoint.INSTANCE_METHODS == INSTANCE_METHODS
    assert checkpoint.CHECKPOINT_TASKS == TASKS
    assert set(checkpoint.PREPROCESS_SCHEMES) == set(NORMALIZATIONS[1:])
