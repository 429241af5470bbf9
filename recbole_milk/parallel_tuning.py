"""Hyper-parameter trials in parallel on Ray (run_hyper.py --tool=Ray; RecBole's name for it).

The search is the Hyperopt path's own: the space RecBole's HyperTuning built from the params file and its search
algorithm (exhaustive, random or bayes), asked for one new trial whenever a worker is free, the trials still running
included, so exhaustive search never repeats a point. Only the evaluation moves: each trial is one ordinary
quick_start.objective_function run in a Ray task of `cpus_per_trial` CPUs (and as many torch threads), on a local Ray
instance or on an existing cluster. Trials are ranked by their best validation score alone, as HyperTuning ranks
them; test results are carried along for the table and never compared. The finished trials fill the tuner's record
(params2result, best_params), so the results table and the best-parameters output are those of the Hyperopt path.

(Ray Tune itself is not used: in ray 2.6.3 its result analysis needs pyarrow, which RecBole does not install.)
"""
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from recbole_milk.checkpoint import plain
from recbole_milk.errors import ConfigError, UserInputError

SCORE = "best_valid_score"


class TrialFailedError(RuntimeError):
    """A trial on Ray failed with an error that is not a user error; the message holds it and its traceback."""


def run_trial(params: Dict[str, Any], fixed: Dict[str, Any]) -> Dict[str, Any]:
    """One trial in a Ray worker: the run the Hyperopt path would make, with `fixed` threads and overrides."""
    import torch

    from recbole_milk.quick_start import objective_function

    torch.set_num_threads(fixed["threads"])
    if fixed["cwd"] and os.path.isdir(fixed["cwd"]):
        os.chdir(fixed["cwd"])  # relative paths in the options mean what they mean to the user
    # The fixed --key=value overrides reach the Config through sys.argv, as on the Hyperopt path.
    sys.argv = ["run_hyper.py", *fixed["overrides"]]
    return plain(objective_function(dict(params, **fixed["config_dict"]), fixed["config_files"], saved=True))


def record_trial(tuner: Any, params: Dict[str, Any], result: Dict[str, Any]) -> None:
    """Add a finished trial to RecBole's HyperTuning record as HyperTuning.trial does: params2result, and the best
    validation score (the first of equal scores stays best)."""
    key = tuner.params2str(params)
    tuner.params_list.append(key)
    tuner.params2result[key] = result
    tuner.model = result["model"]
    score, bigger = result[SCORE], result["valid_score_bigger"]
    tuner.score_list.append(score)
    if tuner.best_params is None or (score > tuner.best_score if bigger else score < tuner.best_score):
        tuner.best_score, tuner.best_params = score, params
        tuner._print_result(result)


def _loss(result: Dict[str, Any]) -> float:
    return -float(result[SCORE]) if result["valid_score_bigger"] else float(result[SCORE])


class _Search:
    """Hyperopt's search driven one trial at a time (ask: `next_params`, tell: `finish`)."""

    def __init__(self, tuner: Any, seed: int):
        import hyperopt

        self.hyperopt = hyperopt
        self.tuner = tuner
        self.domain = hyperopt.Domain(lambda params: 0.0, tuner.space)
        self.trials = hyperopt.Trials()
        self.rng = np.random.RandomState(seed)

    def next_params(self) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
        """(params, hyperopt's trial document) of a new trial, or None when the algorithm has none left."""
        ids = self.trials.new_trial_ids(1)
        docs = self.tuner.algo(ids, self.domain, self.trials, self.rng.randint(2 ** 31 - 1))
        if not docs:
            return None
        self.trials.insert_trial_docs(docs)
        self.trials.refresh()
        doc = next(trial for trial in self.trials._dynamic_trials if trial["tid"] == ids[0])
        point = {name: values[0] for name, values in doc["misc"]["vals"].items() if len(values)}
        return self.hyperopt.space_eval(self.tuner.space, point), doc

    def finish(self, doc: Dict[str, Any], result: Dict[str, Any]) -> None:
        doc["state"] = self.hyperopt.JOB_STATE_DONE
        doc["result"] = {"loss": _loss(result), "status": self.hyperopt.STATUS_OK}
        self.trials.refresh()


def _start_ray(cpus: Optional[int], address: Optional[str]) -> bool:
    """Connect to Ray (an existing cluster, or a new local instance of `cpus` CPUs); True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return True


def _raise_trial_error(error: BaseException) -> None:
    cause = getattr(error, "cause", None)
    if isinstance(cause, UserInputError):
        raise cause from None
    if isinstance(error, UserInputError):
        raise error
    raise TrialFailedError(f"a trial on Ray failed: {error}") from None


def run_on_ray(tuner: Any, config_dict: Dict[str, Any], config_files: Optional[List[str]],
               overrides: Sequence[str], early_stop: int, cpus: Optional[int] = None, cpus_per_trial: int = 1,
               address: Optional[str] = None, seed: int = 2023) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Run `tuner`'s search with its trials in parallel on Ray and record them in `tuner`; return (params, result)
    of the finished trials in the order they finished. A failing trial stops the search and is raised here (a user
    error as itself)."""
    if cpus_per_trial < 1:
        raise ConfigError(f"--cpus_per_trial={cpus_per_trial} is invalid: a trial needs at least one CPU.")
    if cpus is not None and cpus < cpus_per_trial:
        raise ConfigError(f"--cpus={cpus} is below --cpus_per_trial={cpus_per_trial}: no trial could start.")
    import ray

    started = _start_ray(cpus, address)
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_trial)
        fixed = {"config_dict": dict(config_dict), "config_files": config_files, "overrides": list(overrides),
                 "threads": cpus_per_trial, "cwd": None if address else os.getcwd()}
        remote_trial = ray.remote(num_cpus=cpus_per_trial, max_retries=0)(run_trial)
        search = _Search(tuner, seed)
        pending: Dict[Any, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
        finished: List[Tuple[Dict[str, Any], Dict[str, Any]]] = []
        submitted, since_best, best, exhausted = 0, 0, None, False
        while True:
            while not exhausted and len(pending) < slots and submitted < tuner.max_evals and since_best < early_stop:
                proposal = search.next_params()
                if proposal is None:
                    exhausted = True
                    break
                print("running parameters:", proposal[0])
                pending[remote_trial.remote(proposal[0], fixed)] = proposal
                submitted += 1
            if not pending:
                return finished
            ready, _ = ray.wait(list(pending), num_returns=1)
            params, doc = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as error:  # a trial's failure: stop the others, then report it
                for reference in pending:
                    ray.cancel(reference, force=True)
                _raise_trial_error(error)
            search.finish(doc, result)
            record_trial(tuner, params, result)
            finished.append((params, result))
            if best is None or _loss(result) < best:
                best, since_best = _loss(result), 0
            else:
                since_best += 1
    finally:
        if started:
            ray.shutdown()
