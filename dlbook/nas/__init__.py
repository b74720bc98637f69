"""Neural architecture search: the generic GA engine and evolutionary NAS (book ch. 2), DARTS (ch. 3)."""
