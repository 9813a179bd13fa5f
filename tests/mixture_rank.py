"""One rank of the torch.distributed (gloo) mixture test: run by tests/test_mixture.py as
``python mixture_rank.py RANK WORLD INIT_FILE OUT_JSON NUM_WORKERS START_METHOD``."""

import json
import sys
import warnings

import mixsieve as ms
import torch.distributed as dist
from mixture_sources import make_dataset
from torch.utils.data import DataLoader

warnings.simplefilter("ignore")


def main() -> None:
    rank, world, init_file, out, workers, method = sys.argv[1:7]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world))
    mixer = ms.weights.OnlineMixer(["web", "code", "math"])
    ds = make_dataset(weights=mixer, batch_size=4)
    # spawned workers have no process group: the dataset must carry its rank to them
    loader = DataLoader(
        ds, batch_size=4, num_workers=int(workers), collate_fn=list, multiprocessing_context=method
    )
    got = []
    for i, batch in enumerate(loader):
        got.extend(batch)
        if i == 60:  # every rank calls update together, with the same (all-reduced) losses
            for _ in range(5):
                mixer.update({"web": 1.0, "code": 3.0, "math": 0.2})
    state = ds.state_dict(consumed_samples=0)
    with open(out, "w") as f:
        json.dump({"items": got, "changes": state["changes"]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
