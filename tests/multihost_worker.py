"""One process of a two-process run of w2s_vqa.multihost (test_multihost): joins through
the config, exchanges values and prints what it got as one JSON line.

    python -m tests.multihost_worker PORT RANK
"""

import json
import sys


def main(port: str, rank: str) -> None:
    import numpy as np

    from w2s_vqa import config as config_lib
    from w2s_vqa import multihost

    config = config_lib.load_config(None, [f"distributed.coordinator_address='127.0.0.1:{port}'",
                                           "distributed.num_processes=2", f"distributed.process_id={rank}",
                                           "distributed.cpu_collectives='gloo'"])
    multihost.initialize(config)
    me = int(rank)
    multihost.barrier("test.start")
    flags = multihost.broadcast(np.array([me == 0, me == 1, True]))  # process 0's: [True, False, True]
    numbers = multihost.broadcast(np.arange(3, dtype=np.float32) + 10 * me)
    flag = multihost.broadcast(me == 0)
    # Texts of different lengths: the exchange pads them to the longest.
    gathered = multihost.gather_json({"rank": me, "text": "é" * (1 + 7 * me)})
    multihost.barrier("test.end")
    print(json.dumps({"first": multihost.is_first(), "flags": flags.tolist(), "flags_dtype": str(flags.dtype),
                      "numbers": numbers.tolist(), "flag": bool(flag), "gathered": gathered}))


if __name__ == "__main__":
    main(*sys.argv[1:])
