"""Logit-alignment distillation (report §2.2.1: the 3B base was trained against a 7B teacher's logits).

    loss_kd = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)), averaged over trained tokens

The T² factor keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015). Student and
teacher must share a tokenizer (same vocabulary ids).
"""

from __future__ import annotations

import torch


def distillation_token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token T²·KL(p_teacher^T ‖ p_student^T); logits [..., V] -> [...]."""
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student vocabulary {student_logits.shape[-1]} != teacher vocabulary {teacher_logits.shape[-1]}: "
            "distillation needs a shared tokenizer"
        )
    log_p_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl * temperature**2


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Token-mean of `distillation_token_kl` over `mask` (bool, same leading shape as the logits)."""
    kl = distillation_token_kl(student_logits, teacher_logits, temperature)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def load_teacher(teacher_path: str | None, student_tokenizer):
    """The frozen teacher for logit alignment, or None; refuses a teacher whose vocabulary differs."""
    if not teacher_path:
        return None
    from core.model import load_checkpoint

    teacher, teacher_tokenizer = load_checkpoint(teacher_path)
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError(f"distill.teacher_path {teacher_path}: its tokenizer differs from the student's; "
                         "logit alignment needs the same vocabulary ids")
    teacher.requires_grad_(False)
    return teacher
