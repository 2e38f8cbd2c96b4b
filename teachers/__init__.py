"""Teacher models for multi-teacher distillation: PaSST, CP-ResNet, MobileNetV2, BC-ResNet, CNN6.

Each is a plain `nn.Module` taking the log-mel of its family's front end (`model.front_end`) and returning
logits; `families` names the families and their sizes.
"""

from teachers.families import (
    TEACHER_FAMILIES,
    TeacherSpec,
    build_teacher,
    front_end_of,
    teacher_class,
    teacher_sizes,
)

__all__ = ["TEACHER_FAMILIES", "TeacherSpec", "build_teacher", "front_end_of", "teacher_class", "teacher_sizes"]
