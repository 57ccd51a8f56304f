"""Classic semi-supervised baselines for IDEAL's comparison table, not part of the method: Mean Teacher and
self-training, each a small trainer over the shared :class:`TeacherStudentTrainer`."""

from .mean_teacher import MeanTeacherTrainer
from .self_training import SelfTrainingTrainer
from .teacher_student import TeacherStudentTrainer

__all__ = ["MeanTeacherTrainer", "SelfTrainingTrainer", "TeacherStudentTrainer"]
