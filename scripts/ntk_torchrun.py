"""The empirical NTK of one network on many GPUs (or CPU processes) and nodes, with torchrun.

One node, four GPUs (or four CPU processes where there is no GPU):

    torchrun --standalone --nproc-per-node 4 scripts/ntk_torchrun.py --out /scratch/ntk.npy

Two nodes of eight GPUs: the same command on each node, which meet at the rendezvous endpoint (a host
and a free port of the first node) and write one file on a file system they share:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-id ntk --rdzv-backend c10d \
        --rdzv-endpoint node0.example.org:29400 scripts/ntk_torchrun.py --out /shared/ntk.npy

Every rank builds the same network (the same seed) and reads the same inputs (``--inputs``, a .npy
array of shape (P, D); random ones by default), puts the network on its own device
(``silentlib.ntk.distributed.local_device``: cuda:LOCAL_RANK, or the CPU) and calls
``silentlib.ntk(..., out=...)``: the ranks share the block pairs and write them into one file.
Killed, the same command (with any number of ranks) computes only the blocks not yet on disk.
"""
import argparse

import numpy as np
import torch
import torch.distributed as dist

import silentlib as sl
from silentlib.ntk.distributed import local_device


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the kernel's .npy file (beside it, its index)")
    p.add_argument("--inputs", default=None, help="a .npy array of P inputs, (P, D); default: random ones")
    p.add_argument("--P", type=int, default=4000, help="random inputs: how many")
    p.add_argument("--d-in", type=int, default=784)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--outputs", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    return p


def build(args):
    """(model, inputs): the same on every rank."""
    torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(0)
    x = torch.randn(args.P, args.d_in) if args.inputs is None else torch.from_numpy(np.load(args.inputs))
    model = sl.MLP(x.shape[1], args.width, args.depth, out_dim=args.outputs, activation="relu")
    return model, x


def main(argv=None):
    args = parser().parse_args(argv)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")  # ranks from torchrun's environment
    try:
        model, x = build(args)
        K = sl.ntk(model.to(local_device()), x, out=args.out)
        if dist.get_rank() == 0:
            print(f"{args.out}: the NTK of {x.shape[0]:,} inputs, shape {K.shape}, {K.dtype}, "
                  f"{K.nbytes / 2**30:.2f} GiB, computed by {dist.get_world_size()} ranks")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
