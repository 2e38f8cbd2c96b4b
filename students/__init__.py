"""Student models (DS-FlexiNet, SERFR-CNN, SP4SC): plain `nn.Module`s on the `student` log-mel front end."""

from students.presets import STUDENTS, build_student, student_config, student_presets

__all__ = ["STUDENTS", "build_student", "student_config", "student_presets"]
