"""One rank of the tensor-parallel mixture test: run by tests/test_mixture_training.py as
``python mixture_tp_rank.py RANK WORLD INIT_FILE OUT_JSON``. Ranks (0, 1) and (2, 3) are
tensor-parallel pairs; [0, 2] and [1, 3] the data-parallel groups."""

import json
import sys
import warnings

import torch.distributed as dist
from mixture_sources import make_dataset

warnings.simplefilter("ignore")


def main() -> None:
    rank, world, init_file, out = sys.argv[1:5]
    rank, world = int(rank), int(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]  # every rank creates every group
    dp = groups[rank % 2]
    ds = make_dataset(num_samples=400, batch_size=4, process_group=dp)
    got = []
    for i, item in enumerate(ds):
        got.append(list(item))
        if i == 20:  # the data-parallel ranks agree on the position among themselves
            ds.set_weights({"web": 0.2, "code": 0.2, "math": 0.6})
    state = ds.state_dict(consumed_samples=0)
    with open(out, "w") as f:
        json.dump({"items": got, "changes": state["changes"]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
