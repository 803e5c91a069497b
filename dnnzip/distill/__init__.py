"""Knowledge distillation (survey Sec. VI): logits transfer, teacher assistants, domain adaptation.

Importing this package registers its techniques: ``distill.kd``, ``distill.self``,
``distill.assistant``, ``distill.feature``, ``distill.few_sample``, ``distill.domain`` and
``distill.private``. ``kd_loss_fn`` is the distillation loss hook for any fine-tuning step.
"""
from dnnzip.distill import (assistant, domain, feature, few_sample, kd, private,  # noqa: F401
                            self_kd)
from dnnzip.distill.domain import shift_domain
from dnnzip.distill.halting import fit_student
from dnnzip.distill.losses import kd_loss, kd_loss_fn
from dnnzip.distill.report import DistillReport, distill_report, ece, match_rate

__all__ = ["kd_loss", "kd_loss_fn", "fit_student", "shift_domain", "DistillReport",
           "distill_report", "ece", "match_rate"]
