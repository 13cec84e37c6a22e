"""``nbgrader collect`` without following what students planted in the exchange.

nbgrader's collect copies each submission with ``shutil.copytree``, which follows symbolic links
with the instructor's rights and blocks on a named pipe. This collector (course/nbgrader_config.py
selects it through ``ExchangeFactory.collect``) copies with :mod:`grading.safecopy` instead and
writes what it refused into the submission, in :data:`INTAKE_NOTE`, where `gankit grade` reads it
into the ledger, the class report and the student's feedback.
"""
from __future__ import annotations

from pathlib import Path

from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.utils import ignore_patterns

from grading import safecopy

INTAKE_NOTE = ".gankit-intake.txt"   # hidden: nbgrader's CourseDirectory.ignore keeps it out of autograded/


def write_intake_note(folder: Path, refused: list[tuple[str, str]]) -> None:
    note = folder / INTAKE_NOTE
    note.unlink(missing_ok=True)
    if refused:
        partial = folder / f".{INTAKE_NOTE}.partial"
        partial.write_text("".join(f"{path}\t{reason}\n" for path, reason in refused), encoding="utf-8")
        partial.replace(note)


def read_intake_note(folder: Path) -> list[tuple[str, str]]:
    text = safecopy.read_small(folder / INTAKE_NOTE, limit=1 << 16) or ""
    return [tuple(line.split("\t", 1)) for line in text.splitlines() if "\t" in line]


class SafeExchangeCollect(ExchangeCollect):
    def do_copy(self, src, dest, log=None):
        size = self.get_size(src)
        if size > 1000 * self.coursedir.max_dir_size:
            self.log.error("Directory size is too big")
            raise RuntimeError(f"Directory size is too big. Size is {size}, maximum size is "
                               f"{1000 * self.coursedir.max_dir_size}")
        ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                 max_file_size=self.coursedir.max_file_size, log=self.log)
        refused = safecopy.copy_tree(Path(src), Path(dest), ignore=ignore)
        for path, reason in refused:
            self.log.warning("Not collected from %s: %s: %s", src, path, reason)
        write_intake_note(Path(dest), refused)
