"""The tiny budgets the report tests run commands with."""

TINY = ["--baseline-epochs", "1", "--finetune-epochs", "1", "--max-steps-per-epoch", "3",
        "--max-eval-batches", "1", "--no-progress", "--no-onnx", "--batch-sizes", "1"]

RECIPE = """
model: {{name: simple_cnn}}
data: {{name: fashion-mnist}}
seed: 0
profile_latency: false
out: {out}
stages:
  - train: {{epochs: 1, max_steps_per_epoch: 3}}
  - prune: {{target: {{ratio: 0.3}}, importance: l2}}
  - finetune: {{epochs: 1, max_steps_per_epoch: 3}}
"""
