"""Write the demo corpus's shipped vectors (``index/shipped.py``), so a fresh clone starts in seconds.

Embeds every text the demo ingest embeds with the packaged all-MiniLM-L6-v2 on the torch backend
(the offline encoder, and the reference backend), by running that very ingest into a temporary
index and recording the encoder's calls. Re-run it whenever the demo corpus, the packaged encoder or
the way texts are cut into windows changes (the app then ignores a stale file: fewer hits, more embedding).

    python scripts/make_demo_vectors.py                 # data/demo/pubmed_demo.vectors.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import REPO_ROOT, Config
from index.encoder import MINILM_ID, load_encoder
from index.shipped import Recording, save_shipped
from index.writer import ingest_files
from ingest.sources import read_source

DEMO = REPO_ROOT / "data" / "demo" / "pubmed_demo.xml.gz"
OUT = REPO_ROOT / "data" / "demo" / "pubmed_demo.vectors.npz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEMO)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    config = Config()
    encoder = load_encoder(MINILM_ID, backend="torch", max_seq_length=config.max_seq_length)
    recording = Recording(encoder)
    with tempfile.TemporaryDirectory() as folder:
        config = replace(config, index_dir=Path(folder), encoder=MINILM_ID, encoder_backend="torch")
        ingest_files([args.corpus], config, read=read_source, encoder=recording)
    save_shipped(args.out, encoder, recording.hashes, np.concatenate(recording.vectors))
    print(f"{len(recording.hashes)} vectors -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
