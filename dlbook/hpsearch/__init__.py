"""Evolutionary hyperparameter search (thesis seed 001 ch. 3, Gen-CNN; ch. 5, Gen-Soup) on the GA engine
`dlbook.evolution`.

- `gen_cnn`: the five genes and their linear decoding, the five losses, the four optimizers, and
  `GroupEvaluator`, which trains a population at low fidelity with the individuals that share an
  architecture and an optimizer vmapped in one compiled program;
- `search`: the Gen-CNN search and the random-search baseline at the same budget, resumable, with
  generations.json, pictures, TensorBoard and results.json;
- `gen_soup`: Gen-Soup's seven genes (Gen-CNN's five, the astrocytes' Str and Weak) and
  `PopulationTrainer`, one epoch of a population from its weights, grouped and vmapped;
- `soup`: weight averaging (thesis Eq. 5.1, the uniform soup) and BatchNorm re-estimation;
- `gen_soup_search`: the Gen-Soup search with its uniform-soup, Gen-CNN and random-search baselines at
  the same epoch budget, resumable inside a generation;
- `report`: the pictures and the tables over seeds.
"""
