"""Stage: one student with KD (`python -m asc_dist.students`), the sweep (`python -m asc_dist.tune`), QAT and int8."""
