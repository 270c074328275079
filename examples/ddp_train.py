"""DDP on CPU: every rank records its own shard into one run (gloo backend).

    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py --out runs/ddp --epochs 5
"""

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import tdlog.analytics as analytics
from tdlog.recorder import DatasetWithIndex, Recorder

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory (shared by the ranks)")
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
torch.manual_seed(0)
digits = load_digits()
dataset = DatasetWithIndex(TensorDataset(torch.tensor(digits.data / 16.0, dtype=torch.float32),
                                         torch.tensor(digits.target)))
sampler = DistributedSampler(dataset, shuffle=True, seed=0)  # pads the last shard by repeating samples
loader = DataLoader(dataset, batch_size=64, sampler=sampler)
model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

with Recorder(args.out, num_classes=10) as rec:  # rank and world size come from torch.distributed
    rec.register_samples(torch.arange(len(dataset)), torch.tensor(digits.target))  # rank 0 writes it
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for x, y, ids in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y, reduction="none")
            rec.log(ids, logits, y, loss=loss, epoch=epoch)
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
dist.barrier()  # every rank has committed its files
if dist.get_rank() == 0:
    with analytics.open_run(args.out) as run:
        print(run.sql("SELECT rank, count(DISTINCT epoch) AS epochs, count(*) AS rows FROM records "
                      "GROUP BY rank ORDER BY rank"))
        print(run.scores().sort("aum").head(5).select("sample_id", "label", "aum", "epochs"))
dist.destroy_process_group()
