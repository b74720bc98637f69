"""Evolutionary hyperparameter search (thesis seed 001 ch. 3, Gen-CNN) on the GA engine `dlbook.evolution`.

- `gen_cnn`: the five genes and their linear decoding, the five losses, the four optimizers, and
  `GroupEvaluator`, which trains a population at low fidelity with the individuals that share an
  architecture and an optimizer vmapped in one compiled program;
- `search`: the Gen-CNN search and the random-search baseline at the same budget, resumable, with
  generations.json, pictures, TensorBoard and results.json.
"""
