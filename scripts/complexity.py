"""Print #Params and #FLOPs (fvcore, HR output 1280×720) of ESC, ESC-light and ESC-FP, as in Table 2, or of any
named variant (esc.archs.VARIANTS: ESC-Real, ESC-XL, ESC-Real-XL too).

    python scripts/complexity.py                 # all nine rows, with the paper's numbers beside ours
    python scripts/complexity.py --variants ESC --scales 4
    python scripts/complexity.py --variants ESC-XL ESC-Real-XL --scales 2 4

FLOPs come from small traces with explicit attention, extrapolated exactly (see
esc.evaluation.complexity.count_flops): seconds per row. --direct traces the full-size input instead:
about 4 minutes and 11 GB of memory for all nine rows on a 2-core CPU, the same numbers.
"""
import argparse
import sys

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.archs import NETWORKS, VARIANTS, build_variant
from esc.evaluation.complexity import PAPER_TABLE2, count_flops, count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=['ESC', 'ESC-light', 'ESC-FP'],
                        choices=list(VARIANTS))
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    parser.add_argument('--direct', action='store_true', help='trace the full-size input (minutes per row)')
    args = parser.parse_args()

    print('| Variant | Scale | #Params (K) | #FLOPs (G) | Paper #Params (K) | Paper #FLOPs (G) |')
    print('|---|---|---|---|---|---|')
    for variant in args.variants:
        scales = getattr(NETWORKS[VARIANTS[variant]['type']], 'SCALES', args.scales)  # ESC-Real: x2 and x4 only
        for scale in args.scales:
            if scale not in scales:
                print(f'{variant}: no x{scale} (its upsampler is built for x{" and x".join(map(str, scales))})',
                      file=sys.stderr)
                continue
            net = build_variant(variant, scale, attn_type='naive')
            params, flops = count_parameters(net), count_flops(net, scale, direct=args.direct)
            paper = PAPER_TABLE2.get((variant, scale), ('-', '-'))
            print(f'| {variant} | x{scale} | {params / 1e3:.1f} | {flops / 1e9:.1f} | {paper[0]} | {paper[1]} |',
                  flush=True)


if __name__ == '__main__':
    main()
