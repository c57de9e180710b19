"""Shared driver of the fuzz targets: atheris (coverage-guided) when installed, else a plain seeded
random-mutation loop over the seed corpus, so the targets run everywhere (see docs/SECURITY.md).

    python3 fuzz/fuzz_parser.py -atheris_runs=100000       # atheris, libFuzzer flags
    python3 fuzz/fuzz_parser.py --plain 100000 [--seed N]  # no atheris needed
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence


def mutate(data: bytes, rnd: random.Random, dictionary: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(6)
        pos = rnd.randint(0, len(buf))
        if op == 0 and buf:                       # flip a bit
            i = rnd.randrange(len(buf))
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1:                             # insert a random byte
            buf[pos:pos] = bytes([rnd.randrange(256)])
        elif op == 2:                             # delete a run
            del buf[pos:pos + rnd.randint(1, 16)]
        elif op == 3 and dictionary:              # insert a token
            buf[pos:pos] = rnd.choice(dictionary)
        elif op == 4 and buf:                     # overwrite with an interesting value
            buf[pos:pos + 2] = rnd.choice([b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00"])
        else:                                     # truncate
            del buf[pos:]
    return bytes(buf)


def plain_loop(one_input: Callable[[bytes], None], seeds: Sequence[bytes], runs: int, seed: int = 0,
               dictionary: Sequence[bytes] = ()) -> int:
    """Run ``one_input`` on ``runs`` mutants of ``seeds`` (deterministic for a seed); returns runs."""
    rnd = random.Random(seed)
    corpus = list(seeds) or [b""]
    for seed_input in corpus:
        one_input(seed_input)
    for _ in range(runs):
        one_input(mutate(rnd.choice(corpus), rnd, dictionary))
    return runs


def main(one_input: Callable[[bytes], None], seeds: Sequence[bytes], dictionary: Sequence[bytes] = ()) -> None:
    argv = sys.argv[1:]
    if "--plain" in argv or not _have_atheris():
        runs = 10_000
        seed = 0
        if "--plain" in argv and argv.index("--plain") + 1 < len(argv):
            runs = int(argv[argv.index("--plain") + 1])
        for arg in argv:
            if arg.startswith("-atheris_runs="):
                runs = int(arg.split("=", 1)[1])
        if "--seed" in argv:
            seed = int(argv[argv.index("--seed") + 1])
        done = plain_loop(one_input, seeds, runs, seed, dictionary)
        print(f"plain mutation fuzzing: {done} inputs, no failure")
        return
    import atheris

    if not any(not arg.startswith("-") for arg in argv):
        # No corpus directory given: start libFuzzer from the seeds (in a scratch directory, which
        # libFuzzer also grows with the inputs that found new coverage).
        import tempfile

        corpus = tempfile.mkdtemp(prefix="imgmw-fuzz-")
        for i, seed_input in enumerate(seeds):
            with open(f"{corpus}/seed-{i}", "wb") as fh:
                fh.write(seed_input)
        argv = [*argv, corpus]
    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True
