"""`w2s-vqa convert-slowfast --checkpoint SLOWFAST_8x8_R50.pyth --out FILE`: SlowFast weights for `prepare`.

Reads a pytorchvideo SlowFast-R50 checkpoint the user has (nothing is
downloaded) and writes the fast pathway's weights as one safetensors file,
which `prepare` reads with `--set data.motion_features=slowfast
--set data.slowfast_weights=FILE` (w2s_vqa.convert.slowfast).
"""

from __future__ import annotations

from w2s_vqa.main.common import json_line


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="pytorchvideo SlowFast-R50 checkpoint (SLOWFAST_8x8_R50.pyth: a dict with "
                             "'model_state'), or a file holding that state dict alone")
    parser.add_argument("--out", required=True, metavar="FILE", help="safetensors file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with torch.load(weights_only=False), for a checkpoint that pickles Python "
                             "objects beyond tensors; it can run code the file holds: only for a file you trust")


def run(args) -> int:
    from w2s_vqa.convert import slowfast

    result = slowfast.convert(args.checkpoint, args.out, trust_pickle=args.trust_pickle, overwrite=args.overwrite)
    print(f"wrote {result['out']}: the fast pathway's {result['tensors']} tensors ({result['parameters']} numbers); "
          f"skipped {result['skipped']} tensors the 256-d feature never reads (slow pathway, lateral "
          "connections, head, BatchNorm counters)")
    print(json_line(result))
    return 0
