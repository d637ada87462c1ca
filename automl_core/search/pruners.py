"""Successive halving whose first rung waits for rivals, with stopped trials promoted later.

Optuna's asynchronous successive halving (ASHA) lets a trial go on at a rung when it is
among the best third of the trials that reached that rung so far, and the first trial to
reach a rung always does. With one or two workers under a wall-clock budget that makes the
first, random configuration train to its last epoch before anything else is tried: on a
slow machine, most of a two-minute budget. Here a trial at the first rung goes on only
once ``min_rivals`` trials have reached it; until then it stops there, and
:meth:`PromotingHalvingPruner.promote` queues its configuration again (trained from scratch,
its first rung costs little) as soon as the rung has enough trials and it is among their
best third. Optuna cannot resume a stopped trial, so a promotion is a re-run, as in
KerasTuner's Hyperband.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_core.storage.trials import PROMOTED_ATTR, PROMOTED_FROM_ATTR, touch_study


class PromotingHalvingPruner(optuna.pruners.BasePruner):
    """ASHA over report steps whose first rung is decided among at least ``min_rivals``.

    Args:
        min_resource: The first rung, in report steps.
        reduction_factor: Only the best ``1 / reduction_factor`` at a rung go on.
            Defaults to 3.
        min_rivals: Trials that must reach the first rung before one goes past it.
            Defaults to 3.
    """

    def __init__(self, min_resource: int, reduction_factor: int = 3, min_rivals: int = 3):
        if min_resource < 1:
            raise ValueError(f"min_resource must be a positive integer, got {min_resource}")
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_rivals = min_rivals
        self._halving = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=reduction_factor
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether the trial stops at its latest report."""
        # asked first in any case: it records the trial's value at the rung for its rivals
        halving = self._halving.prune(study, trial)
        if trial.last_step == self.min_resource and PROMOTED_FROM_ATTR in trial.user_attrs:
            return False  # promoted past this rung already: its re-run is not judged again
        if trial.last_step == self.min_resource:
            if len(self._first_rung(study)) < self.min_rivals:
                return True  # stopped, and promoted later if it proves among the best
        return halving

    def _first_rung(self, study: optuna.Study) -> list[FrozenTrial]:
        """Trials (any state) that reported at the first rung."""
        return [
            t
            for t in study.get_trials(deepcopy=False)
            if t.intermediate_values.get(self.min_resource) is not None
        ]

    def promotable(self, study: optuna.Study) -> list[FrozenTrial]:
        """Stopped trials that are now among the best of the first rung, not yet re-run."""
        reached = self._first_rung(study)
        if len(reached) < self.min_rivals:
            return []
        values = sorted(t.intermediate_values[self.min_resource] for t in reached)
        bar = values[max(1, len(values) // self.reduction_factor) - 1]
        done = set(study.user_attrs.get(PROMOTED_ATTR, []))
        return [
            t
            for t in reached
            if t.state == TrialState.PRUNED
            and t.last_step == self.min_resource
            and t.intermediate_values[self.min_resource] <= bar
            and t.number not in done
            and PROMOTED_FROM_ATTR not in t.user_attrs
        ]

    def promote(self, study: optuna.Study) -> int:
        """Queues the configurations of :meth:`promotable` trials again.

        Returns:
            How many were queued.
        """
        chosen = self.promotable(study)
        if not chosen:
            return 0
        done = list(study.user_attrs.get(PROMOTED_ATTR, []))
        study.set_user_attr(PROMOTED_ATTR, done + [t.number for t in chosen])
        for trial in chosen:
            study.enqueue_trial(trial.params, user_attrs={PROMOTED_FROM_ATTR: trial.number})
        touch_study(study)
        return len(chosen)
