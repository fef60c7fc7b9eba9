"""Which step a free Ray worker takes (``cli.ray_audit.next_step``): the model it holds first
(its pair stays loaded), then another model of the same base, then the next in manifest order.
The cluster itself is tested for real in ``tests/host/test_cli_ray.py``."""
from finextract.cli.ray_audit import Step, next_step

BASES = ["sd15", "sd15", "sdxl"]


def test_a_worker_keeps_to_its_model_then_its_base():
    pending = [Step(0, 1), Step(1, 0), Step(2, 0), Step(2, 1)]
    assert next_step(pending, None, BASES) == Step(0, 1)
    assert next_step(pending, 2, BASES) == Step(2, 0)
    assert next_step([Step(2, 0), Step(1, 0)], 0, BASES) == Step(1, 0)  # model 0 done: same base first
    assert next_step(pending[2:], 1, BASES) == Step(2, 0)  # nothing of its base left
    assert next_step([Step(1, 3), Step(0, None)], 0, BASES) == Step(0, None)  # its merge
