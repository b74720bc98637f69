"""The generic GA engine (dlbook/evolution/): genome spec, operators, replacement, termination, driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbook.errors import DlbookError
from dlbook import evolution as ev
from dlbook.evolution import operators as ops

SPEC = ev.GenomeSpec([
    ev.integer("layers", 1, 4), ev.real("dropout", 0.1, 0.9), ev.log_real("lr", 1e-6, 1e-1),
    ev.categorical("act", ("relu", "tanh", "elu"), shape=(2,))])


def params_for(ga, **kw):
  return ga.default_params(**kw)


def test_sample_respects_kinds_bounds_and_dtypes():
  pop = SPEC.sample(jax.random.key(0), 4000)
  assert pop["layers"].dtype == jnp.int32 and pop["act"].dtype == jnp.int32
  assert pop["dropout"].dtype == jnp.float32 and pop["act"].shape == (4000, 2)
  assert set(np.unique(pop["layers"]).tolist()) == {1, 2, 3, 4}
  assert set(np.unique(pop["act"]).tolist()) == {0, 1, 2}
  assert 0.1 <= float(pop["dropout"].min()) and float(pop["dropout"].max()) < 0.9
  lr = np.asarray(pop["lr"])
  assert lr.min() >= 1e-6 and lr.max() < 1e-1
  # Log-uniform: the median sits at the geometric mean of the bounds (1e-3.5), not near 0.05.
  assert abs(np.log10(np.median(lr)) + 3.5) < 0.15
  assert np.mean(lr < 1e-4) == pytest.approx(0.4, abs=0.03)


def test_flat_roundtrip_and_encode_decode():
  pop = SPEC.sample(jax.random.key(1), 5)
  back = SPEC.from_flat(SPEC.to_flat(pop))
  for k in pop:
    np.testing.assert_array_equal(back[k], pop[k])
  genome = SPEC.encode({"layers": 3, "dropout": 0.5, "lr": 1e-3, "act": ("tanh", "relu")})
  assert SPEC.decode(genome) == {"layers": 3, "dropout": 0.5, "lr": pytest.approx(1e-3), "act": ("tanh", "relu")}
  with pytest.raises(DlbookError, match="'act'.*'gelu'.*valid"):
    SPEC.encode({"layers": 3, "dropout": 0.5, "lr": 1e-3, "act": ("gelu", "relu")})
  with pytest.raises(DlbookError, match="'layers'.*\\[1, 4\\]"):
    SPEC.encode({"layers": 7, "dropout": 0.5, "lr": 1e-3, "act": ("tanh", "relu")})
  with pytest.raises(DlbookError, match="missing \\['lr'\\]"):
    SPEC.encode({"layers": 3, "dropout": 0.5, "act": ("tanh", "relu")})


def test_bad_specs_and_operator_names_are_user_errors():
  with pytest.raises(DlbookError, match="log-real bounds must be > 0"):
    ev.GenomeSpec([ev.log_real("lr", 0.0, 1.0)])
  with pytest.raises(DlbookError, match="unique"):
    ev.GenomeSpec([ev.integer("a", 0, 1), ev.integer("a", 0, 2)])
  with pytest.raises(DlbookError, match="unknown selection 'wheel'; valid: roulette, tournament"):
    ev.GeneticAlgorithm(SPEC, 8, selection="wheel")
  with pytest.raises(DlbookError, match="unknown crossover"):
    ev.GeneticAlgorithm(SPEC, 8, crossover="one_point")
  with pytest.raises(DlbookError, match="num_offspring"):
    ev.GeneticAlgorithm(SPEC, 8, num_offspring=8)
  with pytest.raises(DlbookError, match="gene_mutation_prob names unknown genes"):
    ev.GeneticAlgorithm(SPEC, 8).default_params(gene_mutation_prob={"depth": 0.2})


def test_roulette_frequencies_proportional_to_fitness():
  fitness = jnp.asarray([1.0, 2.0, 3.0, 4.0, 0.0, -jnp.inf])
  idx = np.asarray(jax.jit(ops.roulette, static_argnums=2)(jax.random.key(0), fitness, 40000))
  freq = np.bincount(idx, minlength=6) / idx.size
  np.testing.assert_allclose(freq[:4], [0.1, 0.2, 0.3, 0.4], atol=0.01)
  assert freq[4] == 0 and freq[5] == 0  # zero fitness and unevaluated (-inf) are never drawn


def test_roulette_shifts_negative_fitness():
  idx = np.asarray(ops.roulette(jax.random.key(1), jnp.asarray([-3.0, -1.0, 1.0]), 30000))
  freq = np.bincount(idx, minlength=3) / idx.size
  np.testing.assert_allclose(freq, [0.0, 2 / 6, 4 / 6], atol=0.01)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_tournament_selection_pressure():
  fitness = jnp.arange(8, dtype=jnp.float32)  # individual 7 is the best
  for k in (1, 2, 3):
    ga = ev.GeneticAlgorithm(SPEC, 8, selection="tournament", tournament_size=k)
    idx = np.asarray(ops.tournament(jax.random.key(k), fitness, 40000, ga))
    # P(best wins) = 1 - (7/8)^k with k contestants drawn with replacement.
    assert np.mean(idx == 7) == pytest.approx(1 - (7 / 8) ** k, abs=0.01)
    assert np.mean(idx == 0) == pytest.approx((1 / 8) ** k, abs=0.01)


def _children(name, n=2000, **pkw):
  ga = ev.GeneticAlgorithm(SPEC, 8, crossover=name)
  p = ga.default_params(**pkw)
  p1 = SPEC.to_flat(SPEC.encode({"layers": 1, "dropout": 0.2, "lr": 1e-5, "act": ("relu", "relu")}))
  p2 = SPEC.to_flat(SPEC.encode({"layers": 4, "dropout": 0.8, "lr": 1e-2, "act": ("elu", "elu")}))
  cross = ev.CROSSOVERS.get(name)
  f1, f2 = jnp.float32(3.0), jnp.float32(1.0)
  kids = jax.vmap(lambda k: cross(k, p1, p2, f1, f2, p, SPEC))(jax.random.split(jax.random.key(0), n))
  return np.asarray(p1), np.asarray(p2), np.asarray(kids)


def test_uniform_crossover_takes_each_gene_from_a_parent_with_half_probability():
  p1, p2, kids = _children("uniform")
  from_p1, from_p2 = kids == p1, kids == p2
  assert np.all(from_p1 | from_p2)
  np.testing.assert_allclose(from_p2.mean(axis=0), 0.5, atol=0.04)


def test_two_point_crossover_swaps_one_inner_segment():
  p1, p2, kids = _children("two_point")
  d = p1.size
  segments = set()
  for kid in kids:
    from_p2 = np.flatnonzero(kid == p2)
    assert np.all((kid == p1) | (kid == p2))
    assert from_p2.size >= 1 and from_p2.size < d
    assert np.all(np.diff(from_p2) == 1)  # contiguous
    assert from_p2[0] >= 1  # cut points are inner boundaries: gene 0 always from parent 1
    segments.add((from_p2[0], from_p2[-1] + 1))
  # Every pair of inner cut points a < b in 1..d-1 occurs.
  assert segments == {(a, b) for a in range(1, d) for b in range(a + 1, d)}


def test_arithmetic_crossover_is_fitness_weighted():
  p1, p2, kids = _children("arithmetic")  # w1 = 3 / (3 + 1) = 0.75
  genome = SPEC.from_flat(jnp.asarray(kids))
  assert np.all(np.asarray(genome["layers"]) == round(0.75 * 1 + 0.25 * 4))  # 1.75 -> 2
  np.testing.assert_allclose(genome["dropout"], 0.75 * 0.2 + 0.25 * 0.8, rtol=1e-5)
  np.testing.assert_allclose(genome["lr"], np.exp(0.75 * np.log(1e-5) + 0.25 * np.log(1e-2)), rtol=1e-4)
  # Categorical genes come from parent 1 with probability w1.
  assert np.mean(np.asarray(genome["act"]) == 0) == pytest.approx(0.75, abs=0.03)
  # Per-gene crossover probability 0 keeps parent 1's gene (seed 001: p = 0 for architecture genes).
  _, _, kept = _children("arithmetic", gene_crossover_prob={"dropout": 1.0})
  assert np.all(kept[:, 0] == p1[0]) and np.all(kept[:, 2:] == p1[2:])


def test_operators_on_hand_worked_cases():
  ga = ev.GeneticAlgorithm(SPEC, 8, crossover="arithmetic")
  # Per-gene probabilities keyed by gene name land on that gene's flat slots (act has 2), others 0.
  np.testing.assert_array_equal(SPEC.per_gene({"act": 0.4, "lr": 0.2}), np.float32([0, 0, 0.2, 0.4, 0.4]))
  # Two-point crossover of 3 genes: the only inner cut points are 1 and 2, so the child is (a1, b2, a3).
  spec3 = ev.GenomeSpec([ev.real("a", 0, 10), ev.real("b", 0, 10), ev.real("c", 0, 10)])
  p3 = ev.GeneticAlgorithm(spec3, 4, crossover="two_point").default_params()
  for seed in range(3):
    kid = ops.two_point_crossover(jax.random.key(seed), jnp.float32([1, 2, 3]), jnp.float32([7, 8, 9]), 1.0, 1.0,
                                  p3, spec3)
    assert kid.tolist() == [1, 8, 3]
  # Arithmetic crossover, every numeric gene averaged: equal fitness weighs the parents ½ each, and so does
  # a non-positive or non-finite sum: layers (2+4)/2 = 3, dropout (0.2+0.8)/2 = 0.5, lr sqrt(1e-5·1e-3) = 1e-4.
  params = ga.default_params(gene_crossover_prob={"layers": 1.0, "dropout": 1.0, "lr": 1.0})
  a = SPEC.to_flat(SPEC.encode({"layers": 2, "dropout": 0.2, "lr": 1e-5, "act": ("relu", "relu")}))
  b = SPEC.to_flat(SPEC.encode({"layers": 4, "dropout": 0.8, "lr": 1e-3, "act": ("elu", "elu")}))
  for f1, f2 in ((2.0, 2.0), (-1.0, -3.0), (-np.inf, 1.0)):
    kid = np.asarray(ops.arithmetic_crossover(jax.random.key(0), a, b, jnp.float32(f1), jnp.float32(f2), params, SPEC))
    np.testing.assert_allclose(kid[:3], [3.0, 0.5, 1e-4], rtol=1e-5)
    assert set(kid[3:].tolist()) <= {0.0, 2.0}  # categorical: one parent's value
  # Selection over the first `size` rows only (a shrinking population): row 0 alone when size is 1.
  fitness = jnp.float32([0.0, 9.0, 9.0, 9.0])
  assert np.all(np.asarray(ops.tournament(jax.random.key(0), fitness, 50, ga, size=1)) == 0)
  assert np.all(np.asarray(ops.roulette(jax.random.key(0), fitness, 50, ga, size=1)) == 0)  # all-zero: uniform
  assert set(np.asarray(ops.roulette(jax.random.key(0), fitness, 200, ga, size=3)).tolist()) == {1, 2}


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_point_mutation_changes_exactly_one_gene_with_its_probability():
  ga = ev.GeneticAlgorithm(SPEC, 8)
  genome = SPEC.to_flat(SPEC.encode({"layers": 2, "dropout": 0.5, "lr": 1e-3, "act": ("tanh", "tanh")}))
  keys = jax.random.split(jax.random.key(0), 4000)
  always = jax.vmap(lambda k: ops.point_mutation(k, genome, ga.default_params(mutation_prob=1.0), SPEC))(keys)
  changed = np.asarray(always != genome)
  assert np.all(changed.sum(axis=1) == 1)  # discrete genes always change; reals change a.s.
  np.testing.assert_allclose(changed.mean(axis=0), 1 / SPEC.num_genes, atol=0.03)
  out = SPEC.from_flat(always)
  assert set(np.unique(out["layers"]).tolist()) == {1, 2, 3, 4}
  book = jax.vmap(lambda k: ops.point_mutation(k, genome, ga.default_params(), SPEC))(keys)
  assert np.mean(np.any(np.asarray(book != genome), axis=1)) == pytest.approx(0.4, abs=0.03)


def test_uniform_reset_uses_per_gene_probabilities():
  ga = ev.GeneticAlgorithm(SPEC, 8, mutation="uniform_reset")
  p = ga.default_params(gene_mutation_prob={"layers": 0.0, "dropout": 1.0, "lr": 0.5})
  genome = SPEC.to_flat(SPEC.encode({"layers": 2, "dropout": 0.5, "lr": 1e-3, "act": ("tanh", "tanh")}))
  out = np.asarray(jax.vmap(lambda k: ops.uniform_reset_mutation(k, genome, p, SPEC))(
      jax.random.split(jax.random.key(0), 4000)))
  g = np.asarray(genome)
  assert np.all(out[:, 0] == g[0]) and np.all(out[:, 3:] == g[3:])  # probability 0
  assert np.all(out[:, 1] != g[1])  # redrawn (a real gene, so almost surely different)
  assert np.mean(out[:, 2] != g[2]) == pytest.approx(0.5, abs=0.03)


def test_replace_worst_and_elitism():
  ga = ev.GeneticAlgorithm(SPEC, 6, num_offspring=2)
  flat = jnp.arange(6, dtype=jnp.float32)[:, None] * jnp.ones((6, SPEC.num_genes))
  fitness = jnp.asarray([5.0, 0.5, 3.0, -jnp.inf, 4.0, 2.0])
  off = jnp.full((2, SPEC.num_genes), 9.0)
  new, fit = ops.replace_worst(flat, fitness, off, jnp.asarray([0.1, 0.2]), ga)
  # The worst first: row 3 (-inf) takes offspring 0, row 1 (0.5) offspring 1.
  np.testing.assert_array_equal(fit, np.float32([5.0, 0.2, 3.0, 0.1, 4.0, 2.0]))
  assert np.all(new[1] == 9) and np.all(new[3] == 9) and np.all(new[0] == 0)
  ga = ev.GeneticAlgorithm(SPEC, 6, replacement="elitism", num_elites=2)
  off = jnp.full((4, SPEC.num_genes), 9.0)
  new, fit = ops.elitism(flat, fitness, off, jnp.zeros(4), ga)
  np.testing.assert_array_equal(fit, [5.0, 4.0, 0, 0, 0, 0])
  assert np.all(new[0] == 0) and np.all(new[1] == 4) and np.all(new[2:] == 9)


def _quadratic(pop, generation):
  """Maximum 1.0 at layers=3, dropout=0.5."""
  return 1.0 - (pop["layers"] - 3.0) ** 2 / 9 - (pop["dropout"] - 0.5) ** 2


@pytest.mark.parametrize("selection,crossover,mutation,replacement", [
    pytest.param("roulette", "uniform", "point", "replace_worst", marks=pytest.mark.slow),  # the book's defaults
    ("tournament", "two_point", "uniform_reset", "elitism"),  # seed 004 / 001 style
    pytest.param("tournament", "arithmetic", "uniform_reset", "elitism", marks=pytest.mark.slow),  # seed 001
])
def test_evolve_keeps_global_best_and_full_history(selection, crossover, mutation, replacement):
  ga = ev.GeneticAlgorithm(SPEC, 8, selection=selection, crossover=crossover, mutation=mutation,
                           replacement=replacement, max_generations=6)
  params = ga.default_params(gene_mutation_prob=0.3)
  evaluated = []

  def fitness(pop, g):
    f = _quadratic(pop, g)
    evaluated.append(np.asarray(f))
    return f

  state = ev.evolve(ga, params, jax.random.key(0), fitness)
  best = np.asarray(state.history["best_fitness"])
  assert int(state.generation) == 6 and best.shape == (7,)
  assert np.all(np.diff(best) >= 0)  # global best never decreases
  assert best[-1] == pytest.approx(max(float(e.max()) for e in evaluated))
  assert float(_quadratic(state.best_genome, 0)) == pytest.approx(best[-1])
  assert state.history["population"]["act"].shape == (7, 8, 2)
  np.testing.assert_array_equal(state.history["fitness"][-1], state.fitness)
  if replacement == "elitism":  # elites survive: the population's max never decreases either
    assert np.all(np.diff(np.asarray(state.history["fitness"]).max(axis=1)) >= 0)


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_termination_target_patience_and_max_generations():
  ga = ev.GeneticAlgorithm(SPEC, 8, max_generations=20)
  state = ev.evolve(ga, ga.default_params(target_fitness=0.5), jax.random.key(0), _quadratic)
  assert ga.stop_reason(state, ga.default_params(target_fitness=0.5)) == "target_fitness"
  assert float(state.best_fitness) >= 0.5 and int(state.generation) < 20
  constant = lambda pop, g: jnp.zeros(ev.population_size(pop))
  params = ga.default_params(patience=3)
  state = ev.evolve(ga, params, jax.random.key(0), constant)
  assert int(state.generation) == 3 and ga.stop_reason(state, params) == "patience"
  state = ev.evolve(ev.GeneticAlgorithm(SPEC, 8, max_generations=2), params, jax.random.key(0), constant)
  assert int(state.generation) == 2


def test_parents_are_the_rows_ask_breeds_from():
  ga = ev.GeneticAlgorithm(SPEC, 8, max_generations=20)  # the GA of the termination test: compiled once
  steps = ev.compiled_steps(ga)
  state = ga.init(jax.random.key(0), ga.default_params())
  state = steps.tell_initial(jnp.arange(8.0), state, ga.default_params())
  flat = np.asarray(SPEC.to_flat(state.population))
  # With no mutation, a child is parent 1 where P(gene from parent 2) = 0 and parent 2 where it is 1.
  for gcp, which in ((0.0, 0), (1.0, 1)):
    params = ga.default_params(gene_crossover_prob=gcp, mutation_prob=0.0)
    kids, _ = steps.ask(jax.random.key(7), state, params)
    rows = steps.parents(jax.random.key(7), state, params)[which]
    np.testing.assert_array_equal(np.asarray(SPEC.to_flat(kids)), flat[np.asarray(rows)])


@pytest.mark.slow  # long: runs with DLBOOK_SLOW=1 (keeps the CI suite in its time budget)
def test_shrinking_population_keeps_elites_and_breeds_from_the_living():
  ga = ev.GeneticAlgorithm(SPEC, 6, selection="tournament", mutation="uniform_reset", replacement="elitism",
                           num_elites=1, shrink_by=2, min_population=3, max_generations=3)
  assert [ga.population_at(g) for g in range(4)] == [6, 4, 3, 3]
  assert [ga.offspring_at(g) for g in (1, 2, 3)] == [3, 2, 2]  # the elite survives unevaluated
  params = ga.default_params(gene_mutation_prob=0.3)
  sizes = []

  def fitness(pop, g):
    sizes.append(ev.population_size(pop))
    return _quadratic(pop, g)

  state = ev.evolve(ga, params, jax.random.key(0), fitness)
  assert sizes == [6, 3, 2, 2]
  fit = np.asarray(state.history["fitness"])
  for g, n in enumerate([6, 4, 3, 3]):
    assert np.isfinite(fit[g, :n]).all() and np.all(fit[g, n:] == -np.inf)  # rows beyond n are dead
    if g:  # the elite (row 0) is the best of the previous generation, with its fitness
      assert fit[g, 0] == fit[g - 1].max()
  rows = ev.history_table(ga, state, SPEC.decode)
  assert [len(r["population_fitness"]) for r in rows] == [6, 4, 3, 3]
  parents = ev.compiled_steps(ga).parents
  for seed in range(5):  # parents come from the 3 living rows only (5 of the 6 rows are drawn each time)
    assert max(int(i.max()) for i in parents(jax.random.key(seed), state, params)) < 3
  with pytest.raises(DlbookError, match="min_population"):
    ev.GeneticAlgorithm(SPEC, 6, replacement="elitism", num_elites=2, shrink_by=1, min_population=2)
  with pytest.raises(DlbookError, match="need replacement='elitism'"):
    ev.GeneticAlgorithm(SPEC, 6, shrink_by=1, min_population=3)


def test_reevaluated_elites_and_a_population_that_all_diverged():
  ga = ev.GeneticAlgorithm(SPEC, 4, selection="tournament", replacement="elitism", num_elites=1,
                           reevaluate_elites=True, max_generations=4)
  params = ga.default_params()
  assert ga.offspring_per_generation == 4 and ga.num_children == 3
  saved = []

  def fitness(pop, g):  # the same genome scores higher every generation; everything diverges at 3
    return jnp.full(ev.population_size(pop), jnp.nan) if g == 3 else _quadratic(pop, g) + g

  with pytest.raises(DlbookError, match="generation 3: every individual's fitness is non-finite"):
    ev.evolve(ga, params, jax.random.key(0), fitness, callback=saved.append)
  assert [int(s.generation) for s in saved] == [0, 1, 2]  # generation 3 was never handed on to be saved
  state = saved[-1]
  h = jax.device_get(state.history)
  for g in range(3):  # every row, the elite included, holds the fitness measured in its own generation
    np.testing.assert_allclose(h["fitness"][g], _quadratic(jax.tree.map(lambda x: x[g], h["population"]), g) + g,
                               rtol=1e-6)
  # The elite is offspring row 0: a copy of the best of the previous population, its own two parents.
  steps = ev.compiled_steps(ga)
  offspring, _ = steps.ask(jax.random.key(1), state, params)
  best = int(np.argmax(state.fitness))
  for name in SPEC.names:
    np.testing.assert_array_equal(offspring[name][0], state.population[name][best])
  assert [int(i[0]) for i in steps.parents(jax.random.key(1), state, params)] == [best, best]
  with pytest.raises(DlbookError, match="generation 0: every individual's fitness is non-finite"):
    ev.evolve(ga, params, jax.random.key(0), lambda pop, g: jnp.full(4, jnp.nan))


@pytest.mark.slow  # tens of seconds of compilation on 2 shared cores; DLBOOK_SLOW=1
def test_strategy_is_jittable_vmappable_and_resume_is_exact():
  ga = ev.GeneticAlgorithm(SPEC, 8, max_generations=4)
  params = ga.default_params()
  # evosax style: a batch of independent GA runs with one vmap.
  states = jax.vmap(lambda k: ga.init(k, params))(jax.random.split(jax.random.key(0), 3))
  offspring, _ = jax.vmap(lambda k, s: ga.ask(k, s, params))(jax.random.split(jax.random.key(1), 3), states)
  assert offspring["act"].shape == (3, 4, 2)

  full = ev.evolve(ga, params, jax.random.key(5), _quadratic)
  saved = []
  ev.evolve(ev.GeneticAlgorithm(SPEC, 8, max_generations=2), params, jax.random.key(5), _quadratic,
            callback=lambda s: saved.append(ev.state_to_tree(s)))
  template = ga.init(jax.random.key(0), params)
  # A run stopped after generation 2 and restored from its saved tree ends like the uninterrupted one
  # (history arrays are sized by max_generations, so restore into a template of the longer run).
  tree = jax.tree.map(np.asarray, saved[-1])
  short_hist = tree["history"]
  grow = lambda long, short: np.concatenate([short, np.asarray(long)[short.shape[0]:]])
  tree["history"] = jax.tree.map(grow, ev.state_to_tree(template)["history"], short_hist)
  resumed = ev.evolve(ga, params, jax.random.key(5), _quadratic, state=ev.state_from_tree(template, tree))
  for a, b in zip(jax.tree.leaves(ev.state_to_tree(full)), jax.tree.leaves(ev.state_to_tree(resumed))):
    np.testing.assert_array_equal(a, b)
