"""Benchmarks: scripts that print ratios measured side by side in one run, and write docs/.

    python -m bench nsl-ablation   # NSL layer types on Fashion-MNIST (docs/nsl-ablation.md)
"""
