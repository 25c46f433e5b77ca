"""Benchmark harness: quality against speedup for Spectrum and the alternatives.

``spectrum-cache bench`` (cli.py) runs every method through one loop (runner.py) with the same prompts
and seeds, and writes a report (report.py). The pieces:

- methods.py: method names (full, steps-N, spectrum-aA-wW, reuse/taylor1/taylor2-aA, diffusers-*) and
  how each is switched on and off around one generation;
- measure.py: network passes (a forward hook inside the last block), time, peak memory, MagCache's
  calibration;
- metrics.py: PSNR (plain torch) and SSIM (torchmetrics); extra_metrics.py: LPIPS, CLIP score, ImageReward where
  their weights load;
- prompts.py / prompts.txt: the bundled prompts (held-out captions of the embedded model) and the
  caption parser the embedded checker needs.

It needs the ``bench`` extra (accelerate, matplotlib, torchmetrics); ``bench`` checks for it first. It
loads pipelines through ``spectrum_cache.loading`` and reports errors as ``spectrum_cache.errors``'
CommandError; it never imports the CLI module above it. Nothing heavy is imported here: the
``spectrum-cache`` parser imports cli.py on every start.
"""
