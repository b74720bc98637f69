"""DARTS (book ch. 3; Liu et al. 2019), after quark0/darts: operations, genotypes, the search network
(`darts_search`) and the evaluation network (`darts_eval`). Importing the package registers both models."""

from dlbook.models.darts import eval_network, genotypes, operations, search_network  # noqa: F401  (registers)
from dlbook.models.darts.eval_network import AuxiliaryHead, EvalCell, EvalNetwork
from dlbook.models.darts.genotypes import (DARTS_V1, DARTS_V2, PUBLISHED, Genotype, derive_genotype, load_genotype,
                                           resolve_genotype, save_genotype, validate_genotype)
from dlbook.models.darts.operations import CONV_IMPLS, OPS, PRIMITIVES
from dlbook.models.darts.search_network import (ARCH_NAMES, MixedOp, SearchCell, SearchNetwork, merge_arch,
                                                split_arch)
