"""Neural architecture search (book ch. 2-3).

Evolutionary NAS runs the GA engine of `dlbook.evolution` over fixed-shape supernets: `kernels` (conv,
pooling and activation kernels shared by the supernets), `chain_space` and `cell_space` (the two search
spaces), `fitness` (train-and-evaluate of one individual and the vmapped population evaluator),
`evolutionary_nas` (the search run) and `report` (its tables and pictures). DARTS is in `darts`.
"""
