"""Benchmark harness: quality against speedup for Spectrum and the alternatives.

``spectrum-cache bench`` (cli.py) runs every method through one loop (runner.py) with the same prompts
and seeds, and writes a report (report.py). The pieces:

- methods.py: method names (full, steps-N, spectrum-aA-wW, reuse/taylor1/taylor2-aA, diffusers-*) and
  how each is switched on and off around one generation;
- measure.py: network passes (a forward hook inside the last block), time, peak memory, MagCache's
  calibration;
- metrics.py: PSNR and SSIM (torchmetrics); extra_metrics.py: LPIPS, CLIP score, ImageReward where
  their weights load;
- prompts.py / prompts.txt: the bundled prompts (held-out captions of the embedded model) and the
  caption parser the embedded checker needs.

Nothing heavy is imported here: the ``spectrum-cache`` parser imports cli.py on every start.
"""
